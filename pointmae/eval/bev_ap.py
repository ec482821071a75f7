"""A quick bird's-eye-view average precision for development runs (not a benchmark protocol).

Per class: detections of all frames sorted by score, each matched greedily to the unmatched ground
truth box of its frame with the highest BEV IoU (pointmae.ops.box_iou_bev) >= `iou_threshold`;
precision interpolated (monotone envelope) and averaged at 40 recall points 1/40 .. 1 (the "R40"
sampling of Simonelli et al., "Disentangling Monocular 3D Object Detection", ICCV 2019). No difficulty
levels, no DontCare, no truncation rules: for the KITTI / nuScenes / Waymo numbers use their
evaluators in pointmae.eval.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from pointmae import ops


def bev_average_precision(pred_boxes: Sequence[np.ndarray], pred_scores: Sequence[np.ndarray],
                          gt_boxes: Sequence[np.ndarray], iou_threshold: float) -> Optional[float]:
    """Lists over frames: predicted boxes (M_i, >=7), their scores (M_i,), ground truth (G_i, >=7).
    Returns AP in [0, 1], or None when there is no ground truth at all."""
    if not (len(pred_boxes) == len(pred_scores) == len(gt_boxes)):
        raise ValueError(f"need one entry per frame: {len(pred_boxes)} box sets, {len(pred_scores)} score sets, "
                         f"{len(gt_boxes)} ground-truth sets")
    num_gt = sum(len(g) for g in gt_boxes)
    if num_gt == 0:
        return None
    records = []   # (score, frame, index)
    for f, scores in enumerate(pred_scores):
        records += [(float(s), f, k) for k, s in enumerate(np.asarray(scores).reshape(-1))]
    records.sort(key=lambda r: (-r[0], r[1], r[2]))
    ious = []
    for p, g in zip(pred_boxes, gt_boxes):
        p, g = _as_boxes(p), _as_boxes(g)
        if len(p) and len(g):
            ious.append(ops.box_iou_bev(torch.from_numpy(np.ascontiguousarray(p[:, :7])),
                                        torch.from_numpy(np.ascontiguousarray(g[:, :7]))).numpy())
        else:
            ious.append(np.zeros((len(p), len(g))))
    matched = [np.zeros(len(g), dtype=bool) for g in gt_boxes]
    tp = np.zeros(len(records))
    for r, (_, f, k) in enumerate(records):
        row = np.where(matched[f], -1.0, ious[f][k]) if ious[f].shape[1] else np.zeros(0)
        if row.size and row.max() >= iou_threshold:
            matched[f][int(row.argmax())] = True
            tp[r] = 1
    if len(records) == 0:
        return 0.0
    cum_tp = np.cumsum(tp)
    recall = cum_tp / num_gt
    precision = cum_tp / np.arange(1, len(records) + 1)
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    ap = 0.0
    for level in np.arange(1, 41) / 40.0:
        reached = recall >= level - 1e-12
        ap += envelope[reached][0] if reached.any() else 0.0
    return ap / 40.0


def _as_boxes(boxes) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64)
    return boxes.reshape(0, 7) if boxes.size == 0 else boxes.reshape(-1, boxes.shape[-1])
