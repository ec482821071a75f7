"""The KITTI object benchmark protocol on the CPU: AP_R40 / AP_R11 for 2D boxes, BEV, 3D and AOS.

Protocol facts (Geiger et al., "Are we ready for autonomous driving? The KITTI vision benchmark
suite", CVPR 2012; the object devkit's evaluate_object.cpp; the 40-recall-position AP of Simonelli
et al., "Disentangling Monocular 3D Object Detection", ICCV 2019, which the server uses since 2019):

* Classes Car, Pedestrian, Cyclist (case-insensitive names). Minimum IoU per class: 0.7 / 0.5 / 0.5
  for every metric ("strict", the benchmark's), and the "loose" set that keeps the 2D thresholds and
  uses 0.5 / 0.25 / 0.25 for BEV and 3D.
* Difficulties (ground truth): easy / moderate / hard = 2D box height >= 40 / 25 / 25 px, occlusion
  <= 0 / 1 / 2, truncation <= 0.15 / 0.3 / 0.5 (pointmae.data.kitti.DIFFICULTY_RULES). A ground truth
  of the class outside the level, or of the neighbouring class (Van for Car, Person_sitting for
  Pedestrian), is "ignored": it is neither a TP nor a FN, and a detection matched to it is not a FP.
  Other classes play no part.
* Detections whose 2D box is lower than the level's min height (the height truncated to an integer,
  as the devkit stores it in an int32) are ignored: never FP, and when matched to a ground truth they
  only consume it. Quirk kept from the devkit: this holds for a too-small detection of any class.
* DontCare regions: an unmatched detection whose 2D box lies more than the class IoU threshold inside
  a DontCare box (intersection / detection area) is not a FP. Only the 2D metric sees them: DontCare
  lines carry no 3D box (location -1000), so in the devkit their BEV / 3D overlap is zero. (A
  DontCare line with a real location, which KITTI never writes, would hide detections in the
  devkit's BEV too, through a polygon built from dimensions -1; not reproduced.)
* Matching, one frame at a time, ground truths in file order. For the recall thresholds, each ground
  truth takes the highest-scoring free detection with IoU > threshold (strictly greater); the scores
  of true positives give 41 thresholds, one per recall step of 1/40 (getThresholds). For each of
  those thresholds t, only detections with score >= t count, and each ground truth takes the free
  valid detection with the largest IoU (an ignored, too-small one only when no valid one overlaps).
  Precision = TP / (TP + FP) at each threshold (0 where nothing was counted), then made monotone:
  p[i] = max(p[i:]). AP_R11 = mean of p at recall 0, 0.1, ..., 1 (every 4th of the 41 positions);
  AP_R40 = mean of p at recall 1/40, ..., 1 (positions 1..40), both x100.
* AOS (2D matching): a TP adds (1 + cos(alpha_gt - alpha_det)) / 2, a FP 0, divided by TP + FP, then
  the same monotone filter and averages. Not computed when some detection has alpha = -10.
* IoU: 2D axis-aligned in pixels; BEV and 3D rotated, in the camera frame (x-z plane, box from y - h
  to y since y points down), computed with pointmae.ops.box_iou_bev / box_iou_3d after a proper
  rotation of the camera axes (x' = z, y' = -x, z' = -y), which preserves every IoU. CPU only, no numba.

A class/difficulty without any valid ground truth has AP = NaN (the devkit prints 0 or skips it).
Small sets: the 41 thresholds are taken one per true positive, so with n <= 40 valid ground truths
at most n positions get a precision: finding all of 3 cars scores AP_R40 = 2/40 = 5. A perfect
detector reaches 100 only from 41 valid ground truths per class and difficulty on. That is the
devkit's arithmetic, kept as is; evaluate on enough frames.

Implementation: each frame's matching is a loop over its ground truths; here that loop runs over
"the k-th ground truth of every frame" at once, for all 41 thresholds at once (arrays frames x
thresholds x detections), restricted to the (ground truth, detection) pairs that overlap above the
threshold. Detections that overlap no ground truth only enter the FP count, which is a count by score.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from pointmae.data.errors import DataError, require_file
from pointmae.data.kitti import DEFAULT_IMAGE_SIZE, DIFFICULTY_RULES, KittiObjects, read_labels
from pointmae.ops import box_iou_3d, box_iou_bev

CLASSES = ("Car", "Pedestrian", "Cyclist")
NEIGHBOUR_CLASSES = {"car": "van", "pedestrian": "person_sitting"}
METRICS = ("bbox", "bev", "3d")            # "aos" is reported next to them, from the 2D matching
DIFFICULTIES = ("easy", "moderate", "hard")
N_SAMPLE_PTS = 41
_STRICT = {"car": 0.7, "pedestrian": 0.5, "cyclist": 0.5}
_LOOSE = {"car": 0.5, "pedestrian": 0.25, "cyclist": 0.25}
MIN_OVERLAP = {"strict": {"bbox": _STRICT, "bev": _STRICT, "3d": _STRICT},
               "loose": {"bbox": _STRICT, "bev": _LOOSE, "3d": _LOOSE}}
INVALID_ALPHA = -10.0


# ---------------------------------------------------------------------------------------- results
@dataclass
class KittiEvalResult:
    """ap[(overlap_set, class, metric, difficulty)] = {"R40": AP, "R11": AP} in percent (NaN: no
    ground truth); metric is one of "bbox", "bev", "3d", "aos". precision holds the 41-point curves
    (after the monotone filter) under the same keys; num_gt[(class, difficulty)] the valid ground
    truths; min_overlap[(overlap_set, class, metric)] the IoU threshold used."""
    ap: dict = field(default_factory=dict)
    precision: dict = field(default_factory=dict)
    num_gt: dict = field(default_factory=dict)
    min_overlap: dict = field(default_factory=dict)
    num_frames: int = 0

    def get(self, cls: str, metric: str, difficulty: str = "moderate", recall: str = "R40",
            overlap: str = "strict") -> float:
        key = (overlap, cls, metric, difficulty)
        if key not in self.ap:
            raise KeyError(f"no result for {key} (overlap set, class, metric, difficulty); have "
                           f"{sorted(set(k[1] for k in self.ap))} x {sorted(set(k[2] for k in self.ap))}")
        return self.ap[key][recall]

    def mean_ap(self, metric: str = "3d", difficulty: str = "moderate", recall: str = "R40",
                overlap: str = "strict", classes: Sequence[str] | None = None) -> float:
        """Mean over classes of one AP (e.g. moderate 3D AP_R40), classes without ground truth (NaN)
        left out; NaN when no class has any."""
        classes = sorted({k[1] for k in self.ap if k[0] == overlap}) if classes is None else classes
        values = [self.get(c, metric, difficulty, recall, overlap) for c in classes]
        values = [v for v in values if not np.isnan(v)]
        return float(np.mean(values)) if values else float("nan")

    def to_flat_dict(self) -> dict[str, float]:
        """{"Car/3d_R40/moderate@strict": AP, ...}: for loggers and JSON."""
        return {f"{c}/{m}_{r}/{d}@{o}": v for (o, c, m, d), aps in sorted(self.ap.items()) for r, v in aps.items()}

    def summary(self, recalls: Sequence[str] = ("R40", "R11")) -> str:
        """The devkit-style table: per class and overlap set, easy / moderate / hard per metric."""
        lines = [f"KITTI evaluation of {self.num_frames} frames"]
        keys = sorted({(o, c) for o, c, _, _ in self.ap}, key=lambda k: (CLASSES.index(k[1]) if k[1] in CLASSES
                                                                          else 99, k[1], k[0] != "strict"))
        for overlap, cls in keys:
            thresholds = ", ".join(f"{self.min_overlap[(overlap, cls, m)]:.2f}" for m in METRICS
                                   if (overlap, cls, m) in self.min_overlap)
            gts = ", ".join(str(self.num_gt.get((cls, d), 0)) for d in DIFFICULTIES)
            for recall in recalls:
                lines.append(f"{cls} AP_{recall}@{thresholds} ({overlap}; ground truths {gts}):")
                for metric in METRICS + ("aos",):
                    values = [self.ap.get((overlap, cls, metric, d), {}).get(recall) for d in DIFFICULTIES]
                    if all(v is None for v in values):
                        continue
                    lines.append(f"  {metric:<4}: " + ", ".join("  n/a " if v is None or np.isnan(v)
                                                               else f"{v:6.2f}" for v in values))
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------- overlaps
def image_box_overlap(a: np.ndarray, b: np.ndarray, criterion: int = -1) -> np.ndarray:
    """(N, M) overlap of 2D boxes (left, top, right, bottom): criterion -1 = IoU, 0 = intersection
    over the area of a (the devkit's test of a detection against a DontCare region)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)[:, None]
    b = np.asarray(b, np.float64).reshape(-1, 4)[None]
    iw = np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0])
    ih = np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1])
    inter = np.where((iw > 0) & (ih > 0), iw * ih, 0.0)
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    denominator = area_a + area_b - inter if criterion == -1 else np.broadcast_to(area_a, inter.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(inter > 0, inter / denominator, 0.0)


def camera_boxes_for_iou(location: np.ndarray, dims_hwl: np.ndarray, rotation_y: np.ndarray) -> torch.Tensor:
    """(M, 7) float64 boxes for pointmae.ops from KITTI camera boxes (bottom-centre location, h w l, ry).

    The camera axes are rotated to x' = z, y' = -x, z' = -y (a proper rotation, so areas, volumes and
    IoUs are those of the devkit's x-z polygons and y extents): centre (z, -x, -(y - h/2)), sizes
    (l, w, h), heading -(ry + pi/2) (the forward axis (cos ry, 0, -sin ry) in the new axes)."""
    location = np.asarray(location, np.float64).reshape(-1, 3)
    h, w, l = np.asarray(dims_hwl, np.float64).reshape(-1, 3).T
    boxes = np.stack([location[:, 2], -location[:, 0], -(location[:, 1] - h / 2), l, w, h,
                      -(np.asarray(rotation_y, np.float64).reshape(-1) + np.pi / 2)], axis=1)
    return torch.from_numpy(boxes)


# ---------------------------------------------------------------------------------------- protocol
def recall_thresholds(scores: np.ndarray, num_gt: int, num_sample_pts: int = N_SAMPLE_PTS) -> np.ndarray:
    """The devkit's getThresholds: from the scores of the true positives (highest-scoring matches),
    one score per recall step 1/(num_sample_pts-1): a score is taken when its recall (i+1)/num_gt is
    at least as close to the next step as the following score's recall would be."""
    scores = np.sort(np.asarray(scores, np.float64))[::-1]
    thresholds, current_recall = [], 0.0
    for i, score in enumerate(scores):
        left = (i + 1) / num_gt
        right = (i + 2) / num_gt if i < len(scores) - 1 else left
        if (right - current_recall) < (current_recall - left) and i < len(scores) - 1:
            continue
        thresholds.append(score)
        current_recall += 1.0 / (num_sample_pts - 1.0)
    return np.array(thresholds, np.float64)


def average_precision(precision: np.ndarray) -> dict[str, float]:
    """{"R40": mean of positions 1..40, "R11": mean of positions 0, 4, ..., 40} x100 of a 41-point curve."""
    return {"R40": float(precision[1:].sum() / (N_SAMPLE_PTS - 1) * 100),
            "R11": float(precision[::4].sum() / 11 * 100)}


@dataclass
class _Prepared:
    """All frames' objects concatenated; overlaps as sparse (gt, det, iou) pairs per metric."""
    gt_frame: np.ndarray
    gt_name: np.ndarray
    gt_height: np.ndarray
    gt_occluded: np.ndarray
    gt_truncated: np.ndarray
    gt_alpha: np.ndarray
    dt_frame: np.ndarray
    dt_name: np.ndarray
    dt_height: np.ndarray          # int, as the devkit's int32
    dt_score: np.ndarray
    dt_alpha: np.ndarray
    dt_dontcare: np.ndarray        # largest intersection / detection area over the frame's DontCare boxes
    pairs: dict                    # metric -> (gt index, det index, iou) with iou > 0
    num_frames: int
    compute_aos: bool


def _check_objects(objects: KittiObjects, what: str, index: int) -> None:
    if not isinstance(objects, KittiObjects):
        raise TypeError(f"{what}[{index}] must be pointmae.data.kitti.KittiObjects, got {type(objects).__name__}")
    arrays = (objects.bbox_2d, objects.dims_hwl, objects.location, objects.rotation_y, objects.score, objects.alpha)
    if not all(np.isfinite(a).all() for a in arrays):
        raise ValueError(f"{what}[{index}]: non-finite box, alpha or score values")
    if (objects.dims_hwl < 0).any():        # DontCare lines carry -1 -1 -1; any other line must not
        care = np.char.lower(objects.names.astype(str)) != "dontcare"
        bad = objects.dims_hwl[care][(objects.dims_hwl[care] < 0).any(1)]
        if len(bad):
            raise ValueError(f"{what}[{index}]: negative box dimensions (h, w, l) outside DontCare lines: "
                             f"{bad.tolist()}")


def _prepare(gt_annos: Sequence[KittiObjects], dt_annos: Sequence[KittiObjects]) -> _Prepared:
    if len(gt_annos) != len(dt_annos):
        raise ValueError(f"gt_annos and dt_annos must have one entry per frame each, got {len(gt_annos)} and "
                         f"{len(dt_annos)}")
    gt_parts, dt_parts, pairs = [], [], {m: [] for m in METRICS}
    gt_offset = dt_offset = 0
    compute_aos = True
    for index, (gt, dt) in enumerate(zip(gt_annos, dt_annos)):
        _check_objects(gt, "gt_annos", index)
        _check_objects(dt, "dt_annos", index)
        gt_names = np.char.lower(gt.names.astype(str))
        care = gt_names != "dontcare"
        dontcare = gt.bbox_2d[~care]
        g_bbox, d_bbox = gt.bbox_2d[care], dt.bbox_2d
        if len(dt) and (dt.alpha == INVALID_ALPHA).any():
            compute_aos = False
        dc_overlap = (image_box_overlap(d_bbox, dontcare, 0).max(1) if len(dontcare) and len(dt)
                      else np.zeros(len(dt)))
        gt_parts.append((np.full(int(care.sum()), index), gt_names[care], g_bbox[:, 3] - g_bbox[:, 1],
                         gt.occluded[care], gt.truncated[care], gt.alpha[care]))
        # int32_t height = fabs(y1 - y2) in the devkit: truncation towards zero.
        dt_parts.append((np.full(len(dt), index), np.char.lower(dt.names.astype(str)),
                         np.trunc(np.abs(d_bbox[:, 1] - d_bbox[:, 3])), dt.score, dt.alpha, dc_overlap))
        if care.any() and len(dt):
            g_boxes = camera_boxes_for_iou(gt.location[care], gt.dims_hwl[care], gt.rotation_y[care])
            d_boxes = camera_boxes_for_iou(dt.location, dt.dims_hwl, dt.rotation_y)
            overlaps = {"bbox": image_box_overlap(g_bbox, d_bbox),
                        "bev": box_iou_bev(g_boxes, d_boxes).numpy(),
                        "3d": box_iou_3d(g_boxes, d_boxes).numpy()}
            for metric, matrix in overlaps.items():
                g, d = np.nonzero(matrix > 0)
                pairs[metric].append((g + gt_offset, d + dt_offset, matrix[g, d]))
        gt_offset += int(care.sum())
        dt_offset += len(dt)

    def cat(parts, i, dtype):
        return np.concatenate([p[i] for p in parts]).astype(dtype) if parts else np.zeros(0, dtype)

    def cat_pairs(metric):
        items = pairs[metric]
        if not items:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
        return tuple(np.concatenate([p[i] for p in items]) for i in range(3))

    return _Prepared(gt_frame=cat(gt_parts, 0, np.int64), gt_name=cat(gt_parts, 1, str),
                     gt_height=cat(gt_parts, 2, np.float64), gt_occluded=cat(gt_parts, 3, np.int64),
                     gt_truncated=cat(gt_parts, 4, np.float64), gt_alpha=cat(gt_parts, 5, np.float64),
                     dt_frame=cat(dt_parts, 0, np.int64), dt_name=cat(dt_parts, 1, str),
                     dt_height=cat(dt_parts, 2, np.float64), dt_score=cat(dt_parts, 3, np.float64),
                     dt_alpha=cat(dt_parts, 4, np.float64), dt_dontcare=cat(dt_parts, 5, np.float64),
                     pairs={m: cat_pairs(m) for m in METRICS}, num_frames=len(gt_annos), compute_aos=compute_aos)


def _ignored(data: _Prepared, cls: str, difficulty: int) -> tuple[np.ndarray, np.ndarray]:
    """The devkit's cleanData: (ignored_gt, ignored_det), each 0 = evaluated, 1 = ignored, -1 = other class."""
    min_height, max_occlusion, max_truncation = DIFFICULTY_RULES[difficulty]
    neighbour = NEIGHBOUR_CLASSES.get(cls)
    valid_class = np.where(data.gt_name == cls, 1, np.where(data.gt_name == neighbour, 0, -1))
    ignore = ((data.gt_occluded > max_occlusion) | (data.gt_truncated > max_truncation)
              | (data.gt_height < min_height))
    ignored_gt = np.where((valid_class == 1) & ~ignore, 0,
                          np.where((valid_class == 0) | ((valid_class == 1) & ignore), 1, -1))
    ignored_det = np.where(data.dt_height < min_height, 1, np.where(data.dt_name == cls, 0, -1))
    return ignored_gt, ignored_det


def _evaluate_one(data: _Prepared, cls: str, metric: str, difficulty: int, min_overlap: float,
                  compute_aos: bool):
    """41-point precision (and AOS) curves of one class / metric / difficulty; None without valid gt."""
    ignored_gt, ignored_det = _ignored(data, cls, difficulty)
    num_gt = int((ignored_gt == 0).sum())
    if num_gt == 0:
        return None, None, 0
    g, d, iou = data.pairs[metric]
    keep = (iou > min_overlap) & (ignored_gt[g] != -1) & (ignored_det[d] != -1)
    g, d, iou = g[keep], d[keep], iou[keep]

    # Dense per-frame arrays over the frames that have candidate pairs: ground truths and detections
    # ranked within their frame in file order (global indices are frame-major).
    frames = np.unique(data.gt_frame[g])
    g_unique, g_inverse = np.unique(g, return_inverse=True)
    d_unique, d_inverse = np.unique(d, return_inverse=True)
    g_row = np.searchsorted(frames, data.gt_frame[g_unique])
    d_row = np.searchsorted(frames, data.dt_frame[d_unique])
    g_rank = np.arange(len(g_unique)) - np.searchsorted(g_row, g_row, side="left")
    d_rank = np.arange(len(d_unique)) - np.searchsorted(d_row, d_row, side="left")
    F, K, M = len(frames), int(g_rank.max(initial=-1)) + 1, int(d_rank.max(initial=-1)) + 1
    overlap = np.zeros((F, K, M))
    is_pair = np.zeros((F, K, M), bool)
    overlap[g_row[g_inverse], g_rank[g_inverse], d_rank[d_inverse]] = iou
    is_pair[g_row[g_inverse], g_rank[g_inverse], d_rank[d_inverse]] = True
    gt_ignored = np.full((F, K), -1)
    gt_alpha = np.zeros((F, K))
    gt_ignored[g_row, g_rank] = ignored_gt[g_unique]
    gt_alpha[g_row, g_rank] = data.gt_alpha[g_unique]
    dt_exists = np.zeros((F, M), bool)
    dt_ignored = np.full((F, M), -1)
    dt_score = np.full((F, M), -np.inf)
    dt_alpha = np.zeros((F, M))
    dt_in_dontcare = np.zeros((F, M), bool)
    dt_exists[d_row, d_rank] = True
    dt_ignored[d_row, d_rank] = ignored_det[d_unique]
    dt_score[d_row, d_rank] = data.dt_score[d_unique]
    dt_alpha[d_row, d_rank] = data.dt_alpha[d_unique]
    in_dontcare = (data.dt_dontcare > min_overlap) if metric == "bbox" else np.zeros(len(data.dt_score), bool)
    dt_in_dontcare[d_row, d_rank] = in_dontcare[d_unique]
    rows = np.arange(F)

    # Pass 1 (compute_fp = false): each ground truth takes the highest-scoring free candidate.
    assigned = np.zeros((F, M), bool)
    tp_scores = []
    for k in range(K):
        candidate = is_pair[:, k] & ~assigned
        found = candidate.any(1)
        chosen = np.argmax(np.where(candidate, dt_score, -np.inf), axis=1)
        true_positive = found & (gt_ignored[:, k] == 0) & (dt_ignored[rows, chosen] == 0)
        tp_scores.append(dt_score[rows[true_positive], chosen[true_positive]])
        assigned[rows[found], chosen[found]] = True
    thresholds = recall_thresholds(np.concatenate(tp_scores) if tp_scores else np.zeros(0), num_gt)
    precision = np.zeros(N_SAMPLE_PTS)
    aos = np.zeros(N_SAMPLE_PTS) if compute_aos else None
    T = len(thresholds)
    if T == 0:
        return precision, aos, num_gt

    # Pass 2 (compute_fp = true) at every threshold at once: (F, T, M) states.
    active = dt_exists[:, None, :] & (dt_score[:, None, :] >= thresholds[None, :, None])
    assigned = np.zeros((F, T, M), bool)
    tp, fn, similarity = np.zeros(T), np.zeros(T), np.zeros(T)
    valid_det, small_det = (dt_ignored == 0)[:, None, :], (dt_ignored == 1)[:, None, :]
    for k in range(K):
        candidate = is_pair[:, None, k, :] & active & ~assigned
        valid, small = candidate & valid_det, candidate & small_det
        any_valid, any_small = valid.any(-1), small.any(-1)
        # Largest IoU among valid detections (first on ties); else the first too-small one.
        chosen = np.where(any_valid, np.argmax(np.where(valid, overlap[:, None, k, :], -1.0), axis=-1),
                          np.argmax(small, axis=-1))
        found = any_valid | any_small
        counted = (gt_ignored[:, k] == 0)[:, None]
        fn += (~found & counted).sum(0)
        true_positive = any_valid & counted
        tp += true_positive.sum(0)
        if compute_aos:
            delta = gt_alpha[:, k, None] - np.take_along_axis(dt_alpha, chosen, axis=1)
            similarity += np.where(true_positive, (1.0 + np.cos(delta)) / 2.0, 0.0).sum(0)
        f_index, t_index = np.nonzero(found)
        assigned[f_index, t_index, chosen[f_index, t_index]] = True
    # Valid ground truths without any candidate detection are false negatives at every threshold.
    fn += num_gt - int((gt_ignored == 0).sum())
    # FP: active valid detections outside DontCare minus those assigned to a ground truth.
    countable = (ignored_det == 0) & ~in_dontcare
    sorted_scores = np.sort(data.dt_score[countable])
    num_active = len(sorted_scores) - np.searchsorted(sorted_scores, thresholds, side="left")
    fp = num_active - (assigned & valid_det & ~dt_in_dontcare[:, None, :]).sum(axis=(0, 2))
    counted_dets = tp + fp
    with np.errstate(divide="ignore", invalid="ignore"):
        precision[:T] = np.where(counted_dets > 0, tp / counted_dets, 0.0)
        if compute_aos:
            aos[:T] = np.where(counted_dets > 0, similarity / counted_dets, 0.0)
    precision = np.maximum.accumulate(precision[::-1])[::-1].copy()
    if compute_aos:
        aos = np.maximum.accumulate(aos[::-1])[::-1].copy()
    return precision, aos, num_gt


def evaluate_kitti(gt_annos: Sequence[KittiObjects], dt_annos: Sequence[KittiObjects],
                   classes: Sequence[str] = CLASSES, overlap_sets: Sequence[str] = ("strict", "loose"),
                   metrics: Sequence[str] = METRICS) -> KittiEvalResult:
    """The KITTI object benchmark on label objects in the camera frame (what the devkit reads).

    Args:
        gt_annos: per frame, the label file's objects (DontCare lines included), e.g. from read_labels.
        dt_annos: per frame (same order), detections with scores (16-field result lines).
        classes: evaluated classes among Car, Pedestrian, Cyclist.
        overlap_sets: "strict" (the benchmark's 0.7 / 0.5 / 0.5) and/or "loose".
        metrics: among "bbox", "bev", "3d"; AOS comes with "bbox".

    Returns:
        KittiEvalResult (AP_R40 and AP_R11 per overlap set, class, metric, difficulty).
    """
    unknown = [c for c in classes if c.lower() not in _STRICT]
    if unknown:
        raise ValueError(f"classes must be among {CLASSES}, got {unknown}")
    unknown = [o for o in overlap_sets if o not in MIN_OVERLAP]
    if unknown:
        raise ValueError(f"overlap_sets must be among {tuple(MIN_OVERLAP)}, got {unknown}")
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"metrics must be among {METRICS}, got {unknown}")
    data = _prepare(list(gt_annos), list(dt_annos))
    result = KittiEvalResult(num_frames=data.num_frames)
    cache = {}
    for overlap_set in overlap_sets:
        for cls in classes:
            key_cls = cls.lower()
            for metric in metrics:
                threshold = MIN_OVERLAP[overlap_set][metric][key_cls]
                result.min_overlap[(overlap_set, cls, metric)] = threshold
                for level, difficulty in enumerate(DIFFICULTIES):
                    cache_key = (key_cls, metric, level, threshold)
                    if cache_key not in cache:
                        cache[cache_key] = _evaluate_one(data, key_cls, metric, level, threshold,
                                                         data.compute_aos and metric == "bbox")
                    precision, aos, num_gt = cache[cache_key]
                    result.num_gt[(cls, difficulty)] = num_gt
                    curves = [(metric, precision)] + ([("aos", aos)] if metric == "bbox" and data.compute_aos else [])
                    for name, curve in curves:
                        key = (overlap_set, cls, name, difficulty)
                        if curve is None:
                            result.ap[key] = {"R40": float("nan"), "R11": float("nan")}
                            result.precision[key] = np.full(N_SAMPLE_PTS, np.nan)
                        else:
                            result.ap[key] = average_precision(curve)
                            result.precision[key] = curve
    return result


# ------------------------------------------------------------------------------- pointmae adapters
def _predictions_by_id(predictions: Sequence[dict], frame_ids: Sequence[str]) -> dict:
    from pointmae.submission.predictions import check_predictions
    by_id = {p["frame_id"]: p for p in check_predictions(predictions)}
    missing = [i for i in frame_ids if i not in by_id]
    if missing:
        raise ValueError(f"predictions: no entry for {len(missing)} ground-truth frame(s), e.g. {missing[:5]} "
                         f"(give an entry with zero boxes for frames without detections)")
    return by_id


def _detections(prediction: dict, calib, image_size, frame_id: str) -> KittiObjects:
    from pointmae.data.kitti_detections import detections_to_kitti_objects
    size = image_size.get(frame_id, DEFAULT_IMAGE_SIZE) if isinstance(image_size, dict) else image_size
    objects, _ = detections_to_kitti_objects(prediction["boxes"], prediction["names"], prediction["scores"],
                                             calib, size)
    return objects


def evaluate_kitti_predictions(predictions: Sequence[dict], frames: Sequence, image_size=DEFAULT_IMAGE_SIZE,
                               **kwargs) -> KittiEvalResult:
    """KITTI protocol for predictions in pointmae's contract against Frames read by KittiObjectDataset.

    Args:
        predictions: one dict per frame: {"frame_id": str, "boxes": (M, 7|9) sensor frame,
            "scores": (M,), "names": (M,)} (see pointmae.submission). Every frame needs an entry;
            entries for frames not in `frames` are not used.
        frames: ground-truth Frames with meta["calib"] and the label box_meta (KittiObjectDataset).
        image_size: (width, height) of image 2, or a dict frame_id -> (width, height); the 2D boxes of
            the predictions are their projections clipped to it, and boxes outside it are dropped,
            exactly as the submission writer does.
        **kwargs: passed to evaluate_kitti (classes, overlap_sets, metrics).
    """
    from pointmae.data.kitti_detections import frame_to_kitti_objects
    by_id = _predictions_by_id(predictions, [f.frame_id for f in frames])
    gt_annos = [frame_to_kitti_objects(frame) for frame in frames]
    dt_annos = [_detections(by_id[f.frame_id], f.meta["calib"], image_size, f.frame_id) for f in frames]
    return evaluate_kitti(gt_annos, dt_annos, **kwargs)


def evaluate_synthetic_predictions(predictions: Sequence[dict], frames: Sequence, image_size=DEFAULT_IMAGE_SIZE,
                                   **kwargs) -> KittiEvalResult:
    """KITTI protocol on frames of the synthetic world (pointmae.data.lidar_datasets.SyntheticFrames),
    without writing them to disk: the ground truth is what tools/make_synthetic.py would write to
    label_2 (pointmae.data.synthetic.kitti_writer.camera_labels: objects seen by the front camera of
    the fixed synthetic rig, 2D boxes, truncation and occlusion), the detections go through that rig's
    calibration exactly like evaluate_kitti_predictions. image_size: one (width, height) for every frame;
    other arguments as there. Known bias: the label writer keeps an object only when all 8 corners are
    in front of the camera, the detection side (project_boxes_to_image) when some part is, so a correct
    detection of an object cut by the image plane at the side is a false positive: the ground truth
    scored as predictions gives about 98 moderate Car AP_R40 on 12 frames, not 100."""
    from pointmae.data.synthetic.kitti_writer import camera_labels, synthetic_calibration
    calib = synthetic_calibration()
    by_id = _predictions_by_id(predictions, [f.frame_id for f in frames])
    gt_annos = [camera_labels(frame, calib, "camera", image_size)[0] for frame in frames]
    dt_annos = [_detections(by_id[f.frame_id], calib, image_size, f.frame_id) for f in frames]
    return evaluate_kitti(gt_annos, dt_annos, **kwargs)


def evaluate_kitti_root(predictions: Sequence[dict], root, split: str | None = "val", subset: str = "training",
                        image_size=DEFAULT_IMAGE_SIZE, **kwargs) -> KittiEvalResult:
    """Like evaluate_kitti_predictions, reading only label_2 and calib of a KITTI-layout root (no
    point clouds: fast on the 3,769 val frames). Frame ids: root/ImageSets/{split}.txt, or every
    label file with split=None. The ground truth is the label files as written (annotated 2D boxes)."""
    from pointmae.data.kitti import read_calibration
    folder = Path(root) / subset
    if split is None:
        frame_ids = sorted(p.stem for p in (folder / "label_2").glob("*.txt"))
    else:
        split_file = require_file(Path(root) / "ImageSets" / f"{split}.txt")
        frame_ids = [line.strip() for line in split_file.read_text().splitlines() if line.strip()]
    if not frame_ids:
        raise ValueError(f"no frames under {folder} (split={split!r})")
    by_id = _predictions_by_id(predictions, frame_ids)
    gt_annos, dt_annos = [], []
    for frame_id in frame_ids:
        gt_annos.append(read_labels(folder / "label_2" / f"{frame_id}.txt"))
        calib = read_calibration(folder / "calib" / f"{frame_id}.txt")
        dt_annos.append(_detections(by_id[frame_id], calib, image_size, frame_id))
    return evaluate_kitti(gt_annos, dt_annos, **kwargs)


def read_result_file(path) -> KittiObjects:
    """A KITTI result file: label lines with 16 fields (the score last); an empty file is no detections."""
    path = require_file(path)
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.split() and len(line.split()) != 16:
            raise DataError(path, f"result line has {len(line.split())} fields, expected 16 (15 label fields "
                                  f"and the score)", number)
    return read_labels(path)


def evaluate_kitti_folders(result_dir, label_dir, frame_ids: Sequence[str] | None = None,
                           **kwargs) -> KittiEvalResult:
    """Evaluate a folder of result txts (16 fields, with score) against a label_2 folder.

    frame_ids: the frames to evaluate (each needs a result and a label file); default: every result
    file in result_dir, as the devkit does."""
    result_dir, label_dir = Path(result_dir), Path(label_dir)
    for name, folder in (("result_dir", result_dir), ("label_dir", label_dir)):
        if not folder.is_dir():
            raise FileNotFoundError(f"{name}: folder {folder} not found")
    if frame_ids is None:
        frame_ids = sorted(p.stem for p in result_dir.glob("*.txt"))
        if not frame_ids:
            raise FileNotFoundError(f"result_dir: no .txt result files in {result_dir}")
    gt_annos = [read_labels(label_dir / f"{i}.txt") for i in frame_ids]
    dt_annos = [read_result_file(result_dir / f"{i}.txt") for i in frame_ids]
    return evaluate_kitti(gt_annos, dt_annos, **kwargs)
