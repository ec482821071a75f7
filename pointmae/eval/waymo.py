"""Waymo Open Dataset 3D detection metrics (mAP / mAPH at LEVEL_1 and LEVEL_2) without TensorFlow.

The definitions follow the Waymo Open Dataset paper (Sun et al., "Scalability in Perception for
Autonomous Driving: Waymo Open Dataset", CVPR 2020, section 5.1) and the official metrics code of
waymo-research/waymo-open-dataset (metrics/detection_metrics.cc, metrics_utils.cc, matcher.cc, iou.cc
and the default configuration of metrics/tools/compute_detection_metrics_main.cc):

* Boxes: upright 3D boxes in the vehicle frame, IoU of the rotated boxes (``pointmae.ops.box_iou_3d``).
  A box with a length, width or height <= 1 cm, or >= 1e6 m, has IoU 0 with everything (iou.cc).
* Per class (Vehicle 0.7, Pedestrian 0.5, Cyclist 0.5, Sign 0.5 IoU), per frame: predictions and
  ground truths of the class are matched by the **Hungarian algorithm maximising the sum of IoUs**
  (IoUs quantised to integers of 1e-6; a pair can match only if IoU >= the class threshold). Scores do
  not influence the matching; they only select the predictions (next point).
* Score cutoffs 0.00, 0.01, ..., 0.99, 1.00: at each cutoff the predictions with score >= cutoff are
  matched anew. Matched predictions are TPs, unmatched ones FPs; unmatched ground truths are FNs at
  difficulty level L only when their level <= L. So LEVEL_2 includes LEVEL_1, and a prediction matched
  to a LEVEL_2 box counts as a TP at LEVEL_1 too (the matching is done once, over both levels; a
  detection of a hard box is not punished as a false positive at the easy level).
* Ground truths with zero LiDAR points are removed before evaluation (so a detection on one is a
  false positive); those with an unset difficulty
  are LEVEL_2 when they hold <= 5 points, else LEVEL_1 (compute_detection_metrics_main.cc).
  No-label zones are not modelled (the leaderboard computes overlap_with_nlz itself).
* Precision = TP / (TP + FP), recall = TP / (TP + FN) summed over all frames per cutoff; precision is
  set to 1 where recall is 0. Heading-weighted precision (for APH) = sum over TPs of the heading
  accuracy ``1 - min(|dθ|, 2π - |dθ|) / π`` divided by TP + FP; its recall is the plain recall.
* AP (``average_precision``): the PR points are made monotone (precision at recall r becomes the best
  precision at any recall >= r), gaps in recall wider than 0.05 are filled with points every 0.05
  carrying that precision, the recall-0 point takes the precision of its neighbour, and the area is
  integrated with the trapezoid rule. This is not the 11/40-point sampling of KITTI/VOC.

Arithmetic is float32 where the official code uses float (scores, cutoffs, IoUs, precisions, the AP
sum), so results agree with it to ~1e-6 (checked in tests/eval/test_waymo_eval.py where the official
package is installed).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from pointmae.data.waymo import LABEL_TYPES, difficulty_with_default
from pointmae.ops import box_iou_3d

WAYMO_CLASSES = ("Vehicle", "Pedestrian", "Cyclist")
IOU_THRESHOLDS = {"Vehicle": 0.7, "Pedestrian": 0.5, "Sign": 0.5, "Cyclist": 0.5}
LEVELS = (1, 2)
KNOWN_NAMES = set(LABEL_TYPES.values())  # Vehicle, Pedestrian, Sign, Cyclist, Unknown
SCORE_CUTOFFS = np.array([i * 0.01 for i in range(100)] + [1.0], dtype=np.float32)
RECALL_DELTA = np.float32(0.05)          # Config.desired_recall_delta default (metrics.proto)
QUANTIZATION = 1_000_000                 # kMaxIoU in iou.cc: Hungarian weights are round(IoU * 1e6)
MIN_BOX_DIM, MAX_BOX_DIM = 1e-2, 1e6     # iou.cc: degenerate boxes have IoU 0


@dataclass
class ClassLevelMetrics:
    """Metrics of one class at one difficulty level; curves are indexed by ``score_cutoffs``."""
    ap: float
    aph: float
    num_gt: int
    precisions: np.ndarray
    recalls: np.ndarray
    precisions_ha: np.ndarray
    score_cutoffs: np.ndarray = field(repr=False, default_factory=lambda: SCORE_CUTOFFS.copy())


@dataclass
class WaymoMetrics:
    """``per_class[cls][level]``: ClassLevelMetrics. ``mean[level]``: {"mAP", "mAPH"} averaged over the
    classes in ``averaged_classes[level]`` (those with at least one ground truth at that level)."""
    per_class: dict
    mean: dict
    averaged_classes: dict

    def table(self) -> str:
        """A plain-text table: one row per class and level, then the means."""
        rows = [f"{'class':<12}{'level':<9}{'AP':>8}{'APH':>8}{'#gt':>8}"]
        for cls, levels in self.per_class.items():
            for level, m in levels.items():
                rows.append(f"{cls:<12}{'LEVEL_' + str(level):<9}{m.ap:8.4f}{m.aph:8.4f}{m.num_gt:8d}")
        for level, m in self.mean.items():
            rows.append(f"{'mean':<12}{'LEVEL_' + str(level):<9}{m['mAP']:8.4f}{m['mAPH']:8.4f}"
                        f"  over {', '.join(self.averaged_classes[level]) or 'no class'}")
        return "\n".join(rows)


# --------------------------------------------------------------------------------- AP integral
def average_precision(precisions, recalls, recall_delta: float = float(RECALL_DELTA)) -> float:
    """Area under a precision/recall curve the way Waymo's ComputeMeanAveragePrecision does it.

    Args:
        precisions, recalls: (K,) one PR point per score cutoff, any order.
        recall_delta: the widest recall gap left unfilled (0.05 in the official configuration).
    Returns:
        AP in [0, 1] (0 for an empty curve).
    """
    precisions = np.asarray(precisions, np.float32).reshape(-1)
    recalls = np.asarray(recalls, np.float32).reshape(-1)
    if precisions.shape != recalls.shape:
        raise ValueError(f"precisions and recalls must have the same length; got {precisions.shape} and {recalls.shape}")
    if not 0.0 < recall_delta <= 1.0:
        raise ValueError(f"recall_delta must be in (0, 1]; got {recall_delta}")
    if len(precisions) == 0:
        return 0.0
    delta, error = np.float32(recall_delta), np.float32(1e-6)
    best = {np.float32(0.0): np.float32(1.0)}            # the fake (recall 0, precision 1) point
    for p, r in zip(precisions, recalls):
        best[r] = max(best.get(r, np.float32(0.0)), p)
    curve = []                                           # (precision, recall), recall descending
    last_recall = min(best)
    max_precision = np.float32(0.0)
    for r in sorted(best, reverse=True):
        while np.float32(last_recall - r) > np.float32(delta + error):
            last_recall = np.float32(last_recall - delta)
            curve.append((max_precision, last_recall))
        max_precision = max(best[r], max_precision)
        curve.append((max_precision, r))
        last_recall = r
    if len(curve) >= 2:                                  # the recall-0 point borrows its neighbour's precision
        curve[-1] = (curve[-2][0], curve[-1][1])
    area = np.float32(0.0)
    for (p0, r0), (p1, r1) in zip(curve[:-1], curve[1:]):
        area = np.float32(float(area) + 0.5 * float(r0 - r1) * float(p0 + p1))   # double product, float sum
    return float(area)


def heading_accuracy(pred_heading, gt_heading) -> np.ndarray:
    """1 - |heading error| / π with the error wrapped to [0, π]: 1 for the same heading, 0 when
    flipped. Args: broadcastable arrays of radians. Returns float64 in [0, 1]."""
    wrap = lambda a: np.mod(np.asarray(a, np.float64) + np.pi, 2 * np.pi) - np.pi  # noqa: E731  [-π, π)
    diff = np.abs(wrap(pred_heading) - wrap(gt_heading))
    diff = np.where(diff > np.pi, 2 * np.pi - diff, diff)
    return np.clip(1.0 - diff / np.pi, 0.0, 1.0)


def waymo_iou_3d(pred_boxes: np.ndarray, gt_boxes: np.ndarray) -> np.ndarray:
    """(P, G) float32 rotated 3D IoU with iou.cc's rule for degenerate boxes (IoU 0)."""
    if len(pred_boxes) == 0 or len(gt_boxes) == 0:
        return np.zeros((len(pred_boxes), len(gt_boxes)), np.float32)
    iou = box_iou_3d(torch.from_numpy(np.ascontiguousarray(pred_boxes[:, :7], np.float64)),
                     torch.from_numpy(np.ascontiguousarray(gt_boxes[:, :7], np.float64))).numpy()
    ok = lambda b: ((b[:, 3:6] > MIN_BOX_DIM) & (b[:, 3:6] < MAX_BOX_DIM)).all(1)  # noqa: E731
    iou = iou * ok(pred_boxes)[:, None] * ok(gt_boxes)[None, :]
    return np.clip(iou, 0.0, 1.0).astype(np.float32)


def hungarian_match(valid: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Maximum-weight matching restricted to valid pairs.

    Args:
        valid: (P, G) bool, pairs allowed to match.
        weights: (P, G) non-negative weights (quantised IoUs).
    Returns:
        (P,) int64: the matched column of each row, -1 for none.
    """
    match = -np.ones(valid.shape[0], np.int64)
    rows = np.flatnonzero(valid.any(1))
    cols = np.flatnonzero(valid.any(0))
    if len(rows) == 0:
        return match
    sub_valid = valid[np.ix_(rows, cols)]
    r, c = linear_sum_assignment(np.where(sub_valid, weights[np.ix_(rows, cols)], 0.0), maximize=True)
    keep = sub_valid[r, c]          # an optimal assignment may pad with zero-weight (invalid) pairs
    match[rows[r[keep]]] = cols[c[keep]]
    return match


# --------------------------------------------------------------------------------- per frame
def _frame_counts(pred_boxes, pred_scores, gt_boxes, gt_levels, threshold):
    """TP, FP, FN per level and sum of heading accuracies at every score cutoff, for one frame and
    one class. Returns (tp (C,), fp (C,), fn {level: (C,)}, ha (C,) float32) with C = len(SCORE_CUTOFFS)."""
    num_cutoffs = len(SCORE_CUTOFFS)
    tp = np.zeros(num_cutoffs, np.int64)
    fp = np.zeros(num_cutoffs, np.int64)
    fn = {level: np.zeros(num_cutoffs, np.int64) for level in LEVELS}
    ha_sum = np.zeros(num_cutoffs, np.float32)
    iou = waymo_iou_3d(pred_boxes, gt_boxes)
    valid = iou >= np.float32(threshold)
    weights = np.round(iou.astype(np.float64) * QUANTIZATION)
    accuracy = heading_accuracy(pred_boxes[:, 6][:, None], gt_boxes[:, 6][None, :]).astype(np.float32)
    scores = pred_scores.astype(np.float32)
    # Only predictions with a valid pair can change the matching; the others are false positives
    # whenever they pass the cutoff. So the matching is recomputed only when the set of such
    # candidates above the cutoff changes (at most once per candidate, not once per cutoff).
    candidate = valid.any(1)
    included = scores[None, :] >= SCORE_CUTOFFS[:, None]                 # (C, P)
    fp[:] = included.sum(1)                                              # minus the TPs below
    no_match = {level: int((gt_levels <= level).sum()) for level in LEVELS}
    previous_subset, previous = None, (0, no_match, np.float32(0.0))
    for k in range(num_cutoffs):
        subset = np.flatnonzero(included[k] & candidate)
        if previous_subset is None or not np.array_equal(subset, previous_subset):
            result = (0, no_match, np.float32(0.0))
            if len(subset):
                match = hungarian_match(valid[subset], weights[subset])
                matched = match >= 0
                gt_matched = np.zeros(len(gt_boxes), bool)
                gt_matched[match[matched]] = True
                result = (int(matched.sum()), {level: int((~gt_matched & (gt_levels <= level)).sum()) for level in LEVELS},
                          np.float32(accuracy[subset[matched], match[matched]].sum(dtype=np.float32)))
            previous_subset, previous = subset, result
        tp[k], ha_sum[k] = previous[0], previous[2]
        fp[k] -= previous[0]
        for level in LEVELS:
            fn[level][k] = previous[1][level]
    return tp, fp, fn, ha_sum


# --------------------------------------------------------------------------------- validation
def check_predictions(predictions) -> dict:
    """Validates the shared prediction contract (see evaluate_waymo) and indexes it.
    Returns {frame_id: (boxes (M, 7) float64, scores (M,) float64, names (M,) str)}; raises ValueError
    naming the offending entry."""
    by_frame = {}
    for i, pred in enumerate(predictions):
        if not isinstance(pred, dict) or not {"frame_id", "boxes", "scores", "names"} <= set(pred):
            raise ValueError(f"predictions[{i}] must be a dict with frame_id, boxes, scores, names; got "
                             f"{type(pred).__name__}{' with keys ' + str(sorted(pred)) if isinstance(pred, dict) else ''}")
        frame_id = str(pred["frame_id"])
        if frame_id in by_frame:
            raise ValueError(f"predictions[{i}]: frame_id {frame_id!r} appears twice")
        boxes = np.asarray(pred["boxes"], np.float64)
        boxes = boxes.reshape(0, 7) if boxes.size == 0 else boxes
        scores = np.asarray(pred["scores"], np.float64).reshape(-1)
        names = np.asarray(pred["names"], dtype=str).reshape(-1)
        if boxes.ndim != 2 or boxes.shape[1] < 7:
            raise ValueError(f"predictions[{i}] ({frame_id}): boxes must be (M, 7); got {boxes.shape}")
        if not (len(boxes) == len(scores) == len(names)):
            raise ValueError(f"predictions[{i}] ({frame_id}): {len(boxes)} boxes, {len(scores)} scores, "
                             f"{len(names)} names; expected equal counts")
        unknown = sorted(set(names.tolist()) - KNOWN_NAMES)
        if unknown:
            raise ValueError(f"predictions[{i}] ({frame_id}): names {unknown} are not Waymo types; expected some of "
                             f"{sorted(KNOWN_NAMES)}")
        if not (np.isfinite(boxes[:, :7]).all() and np.isfinite(scores).all()):
            raise ValueError(f"predictions[{i}] ({frame_id}): boxes and scores must be finite")
        by_frame[frame_id] = (boxes[:, :7], scores, names)
    return by_frame


def _gt_arrays(frame):
    meta = frame.box_meta
    if "num_points" not in meta:
        raise ValueError(f"ground-truth frame {frame.frame_id!r} has no box_meta['num_points']: Waymo's "
                         "evaluation needs it (zero-point boxes are dropped, <= 5 points is LEVEL_2)")
    num_points = np.asarray(meta["num_points"], np.int64)
    levels = np.asarray(meta.get("difficulty", np.zeros(len(num_points))), np.int64)
    levels = difficulty_with_default(levels, num_points)
    if not np.isin(levels, LEVELS).all():
        raise ValueError(f"ground-truth frame {frame.frame_id!r}: difficulty must be 0 (unset), 1 or 2; "
                         f"got {sorted(set(levels.tolist()))}")
    keep = num_points > 0
    return frame.boxes[keep, :7], np.asarray(frame.names)[keep], levels[keep]


# --------------------------------------------------------------------------------- entry point
def evaluate_waymo(predictions, ground_truth, classes=WAYMO_CLASSES) -> WaymoMetrics:
    """Waymo 3D detection AP / APH per class at LEVEL_1 and LEVEL_2.

    Args:
        predictions: list of {"frame_id": str, "boxes": (M, 7) float (vehicle frame, pointmae box
            convention = Waymo's), "scores": (M,), "names": (M,) str}, at most one per frame. A frame
            without an entry has no detections.
        ground_truth: list of pointmae Frames (pointmae.data.waymo readers) with box_meta
            "num_points" and (optionally) "difficulty"; matched to predictions by ``frame_id``.
        classes: class names to evaluate (each needs an IoU threshold in IOU_THRESHOLDS).
    Returns:
        WaymoMetrics.
    Raises:
        ValueError naming the entry for malformed predictions, prediction frame ids that are not in
        the ground truth, duplicate ground-truth frame ids or unknown classes.
    """
    unknown = [c for c in classes if c not in IOU_THRESHOLDS]
    if unknown:
        raise ValueError(f"classes {unknown} have no Waymo IoU threshold; expected some of {sorted(IOU_THRESHOLDS)}")
    by_frame = check_predictions(predictions)
    gt_ids = [str(f.frame_id) for f in ground_truth]
    if len(set(gt_ids)) != len(gt_ids):
        dup = sorted({i for i in gt_ids if gt_ids.count(i) > 1})[:5]
        raise ValueError(f"ground_truth has duplicate frame ids, e.g. {dup}")
    stray = sorted(set(by_frame) - set(gt_ids))
    if stray:
        raise ValueError(f"{len(stray)} prediction frame ids are not in the ground truth, e.g. {stray[:5]}")

    num_cutoffs = len(SCORE_CUTOFFS)
    totals = {c: {"tp": np.zeros(num_cutoffs, np.int64), "fp": np.zeros(num_cutoffs, np.int64),
                  "ha": np.zeros(num_cutoffs, np.float32), "num_gt": {level: 0 for level in LEVELS},
                  "fn": {level: np.zeros(num_cutoffs, np.int64) for level in LEVELS}} for c in classes}
    empty = (np.zeros((0, 7)), np.zeros(0), np.zeros(0, str))
    for frame in ground_truth:
        gt_boxes, gt_names, gt_levels = _gt_arrays(frame)
        pred_boxes, pred_scores, pred_names = by_frame.get(str(frame.frame_id), empty)
        for cls in classes:
            p, g = pred_names == cls, gt_names == cls
            tp, fp, fn, ha = _frame_counts(pred_boxes[p], pred_scores[p], gt_boxes[g], gt_levels[g], IOU_THRESHOLDS[cls])
            t = totals[cls]
            t["tp"] += tp
            t["fp"] += fp
            t["ha"] += ha
            for level in LEVELS:
                t["fn"][level] += fn[level]
                t["num_gt"][level] += int((gt_levels[g] <= level).sum())

    per_class, mean, averaged = {}, {}, {}
    for cls in classes:
        t = totals[cls]
        per_class[cls] = {}
        for level in LEVELS:
            tp, fp, fn = t["tp"], t["fp"], t["fn"][level]
            f32 = lambda a: a.astype(np.float32)  # noqa: E731  float / int in the official code
            precision = np.where(tp + fp > 0, f32(tp) / f32(np.maximum(tp + fp, 1)), 0).astype(np.float32)
            precision_ha = np.where(tp + fp > 0, t["ha"] / f32(np.maximum(tp + fp, 1)), 0).astype(np.float32)
            recall = np.where(tp + fn > 0, f32(tp) / f32(np.maximum(tp + fn, 1)), 0).astype(np.float32)
            precision[recall == 0] = 1.0
            precision_ha[recall == 0] = 1.0
            per_class[cls][level] = ClassLevelMetrics(
                ap=average_precision(precision, recall), aph=average_precision(precision_ha, recall),
                num_gt=t["num_gt"][level], precisions=precision, recalls=recall, precisions_ha=precision_ha)
    for level in LEVELS:
        present = [c for c in classes if per_class[c][level].num_gt > 0]
        averaged[level] = present
        mean[level] = {"mAP": float(np.mean([per_class[c][level].ap for c in present])) if present else 0.0,
                       "mAPH": float(np.mean([per_class[c][level].aph for c in present])) if present else 0.0}
    return WaymoMetrics(per_class=per_class, mean=mean, averaged_classes=averaged)
