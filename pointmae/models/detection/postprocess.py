"""From head maps to boxes: top-k peaks, decoding, score threshold, NMS.

CenterNet / CenterPoint decoding: the K highest heatmap scores over all classes and cells (after
keeping only local maxima of a 3x3 window, CenterNet's "NMS by max pooling") give K candidate objects;
each is decoded from the regression codes at its cell (targets.decode_boxes). Then candidates below
`score_threshold` are dropped and NMS runs per class, or per group of classes (class-agnostic within
the group, as OpenPCDet's CenterHead does per task group): rotated BEV NMS (pointmae.ops.nms_bev,
greedy by score, IoU > threshold suppressed) or CenterPoint's circle NMS (a box suppresses
lower-scored boxes whose centres lie within the kept box's class radius, metres in BEV).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from pointmae import ops
from pointmae.models.detection.targets import FeatureGrid, decode_boxes


def local_maxima(heat: torch.Tensor, kernel: int = 3) -> torch.Tensor:
    """(B, C, H, W) scores with every value that is not the maximum of its kernel x kernel window set to 0."""
    pooled = F.max_pool2d(heat, kernel, stride=1, padding=kernel // 2)
    return heat * (pooled == heat).to(heat.dtype)


def topk_candidates(heat: torch.Tensor, codes: torch.Tensor, grid: FeatureGrid, k: int, heading: str = "direction"):
    """heat: (B, C, H, W) probabilities; codes (B, D, H, W). Returns per sample (boxes (K, 7|9),
    scores (K,), labels (K,) int64), K = min(k, C * H * W), scores descending."""
    b, c, h, w = heat.shape
    k = min(k, c * h * w)
    scores, flat = torch.topk(heat.reshape(b, -1), k, dim=1, sorted=True)
    labels = torch.div(flat, h * w, rounding_mode="floor")
    cell = flat % (h * w)
    rows, cols = torch.div(cell, w, rounding_mode="floor"), cell % w
    out = []
    for i in range(b):
        cand = codes[i].reshape(codes.shape[1], -1)[:, cell[i]].t()       # (K, D)
        boxes = decode_boxes(cand, torch.stack([cols[i], rows[i]], 1), grid, heading)
        out.append((boxes, scores[i], labels[i]))
    return out


def circle_nms(centers: torch.Tensor, scores: torch.Tensor, radius) -> torch.Tensor:
    """Greedy by descending score (ties: lower index): keep a box unless a kept box's centre is within
    that kept box's radius (metres, BEV). centers (N, 2); radius: one float, or (N,) per box. Returns
    kept indices, by descending score."""
    order = torch.argsort(-scores, stable=True)
    c = centers[order].double()
    d2 = ((c[:, None, :] - c[None, :, :]) ** 2).sum(-1)
    r = torch.as_tensor(radius, dtype=torch.float64, device=c.device).expand(len(scores))[order]
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    keep = []
    close = (d2 <= (r * r)[:, None]).cpu()          # row i: the boxes that kept box i suppresses
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= close[i]
    return order[torch.tensor(keep, dtype=torch.int64, device=order.device)] if keep else order[:0]


def postprocess(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, num_classes: int,
                score_threshold: float, nms: str, nms_iou_threshold: float, circle_radius: Sequence[float],
                max_detections: int, point_range: Sequence[float] | None = None,
                nms_groups: Sequence[Sequence[int]] | None = None):
    """One sample's candidates -> (boxes, scores, labels) after threshold, range filter and NMS, at
    most max_detections, by descending score. NMS runs within each of `nms_groups` (lists of class
    indices; boxes of different classes in one group suppress each other), by default each class alone."""
    keep = scores >= score_threshold
    if point_range is not None:
        lo = torch.tensor(point_range[:2], dtype=boxes.dtype, device=boxes.device)
        hi = torch.tensor(point_range[3:5], dtype=boxes.dtype, device=boxes.device)
        keep &= ((boxes[:, :2] >= lo) & (boxes[:, :2] < hi)).all(1)
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    if nms != "none":
        kept = []
        groups = [[c] for c in range(num_classes)] if nms_groups is None else nms_groups
        radius = torch.tensor([float(r) for r in circle_radius], dtype=torch.float64) if nms == "circle" else None
        for group in groups:
            idx = torch.nonzero(torch.isin(labels, torch.tensor(list(group), device=labels.device))).squeeze(1)
            if idx.numel() == 0:
                continue
            if nms == "rotated":
                local = ops.nms_bev(boxes[idx, :7].contiguous(), scores[idx].contiguous(), nms_iou_threshold)
            elif nms == "circle":
                local = circle_nms(boxes[idx, :2], scores[idx], radius[labels[idx].cpu()])
            else:
                raise ValueError(f"nms must be 'rotated', 'circle' or 'none', got {nms!r}")
            kept.append(idx[local])
        if kept:
            idx = torch.cat(kept)
        else:
            idx = torch.zeros(0, dtype=torch.int64, device=boxes.device)
        boxes, scores, labels = boxes[idx], scores[idx], labels[idx]
    order = torch.argsort(-scores, stable=True)[:max_detections]
    return boxes[order], scores[order], labels[order]
