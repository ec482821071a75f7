"""Rotated 3D boxes: IoU matrices (bird's-eye view and 3D) and greedy rotated BEV NMS.

A box is a row ``(x, y, z, dx, dy, dz, heading, ...)``: centre at the geometric centre, ``dx`` along
the heading direction, ``heading`` in radians counter-clockwise from +x, in a right-handed frame with
x forward, y left, z up (the OpenPCDet / KITTI-LiDAR convention). Only the first 7 columns are read;
trailing columns (velocity, class, ...) are accepted and ignored, so boxes are ``(N, >= 7)``.

Kernels: csrc/box_ops/. The BEV intersection is convex-polygon clipping (Sutherland-Hodgman) of one
rectangle in the local frame of the other, shared by the CPU and CUDA kernels.

Validation (all raise ValueError naming the argument): boxes must be floating (float32, float64,
float16) with finite first 7 columns and non-negative sizes; NaN/inf boxes are an error, not a silent
NaN. Boxes with zero area (or zero volume for 3D) have IoU 0 with everything, themselves included.

No gradient: the outputs are not differentiable (inputs are detached), as suits evaluation, target
assignment and NMS.
"""
from typing import List, Optional, Union

import torch

from pointmae.ops._batch import to_packed

__all__ = ["box_iou_bev", "box_iou_3d", "nms_bev"]

BOX_DIM = 7


def _pairwise(op, name: str, boxes_a: torch.Tensor, boxes_b: torch.Tensor) -> torch.Tensor:
    if boxes_a.dim() == 3 or boxes_b.dim() == 3:
        if boxes_a.dim() != 3 or boxes_b.dim() != 3 or boxes_a.shape[0] != boxes_b.shape[0]:
            raise ValueError(f"pointmae.{name}: batched input needs `boxes_a` (B, N, C) and `boxes_b` (B, M, C) "
                             f"with the same B, got shapes {tuple(boxes_a.shape)} and {tuple(boxes_b.shape)}")
        rows = [op(a.detach(), b.detach()) for a, b in zip(boxes_a.unbind(0), boxes_b.unbind(0))]
        if not rows:
            return boxes_a.new_empty((0, boxes_a.shape[1], boxes_b.shape[1]))
        return torch.stack(rows)
    return op(boxes_a.detach(), boxes_b.detach())


def box_iou_bev(boxes_a: torch.Tensor, boxes_b: torch.Tensor) -> torch.Tensor:
    """Rotated IoU in the x-y plane (bird's-eye view) of every pair of boxes.

    Args:
        boxes_a: (N, >=7) float32/float64/float16 boxes ``(x, y, z, dx, dy, dz, heading, ...)``, or
            (B, N, >=7) for a batch of B independent sets.
        boxes_b: (M, >=7) boxes, same dtype and device as ``boxes_a``; (B, M, >=7) when batched.

    Returns:
        (N, M) (or (B, N, M)) tensor of ``boxes_a``'s dtype: area(a ∩ b) / area(a ∪ b) of the two
        rotated rectangles, in [0, 1]. z and dz are ignored. Symmetric; 0 for zero-area boxes.
    """
    return _pairwise(torch.ops.pointmae.box_iou_bev.default, "box_iou_bev", boxes_a, boxes_b)


def box_iou_3d(boxes_a: torch.Tensor, boxes_b: torch.Tensor) -> torch.Tensor:
    """Rotated 3D IoU of every pair of upright boxes (rotation about z only).

    Args and shapes as in :func:`box_iou_bev`.

    Returns:
        (N, M) (or (B, N, M)): BEV intersection area times the overlap of the z ranges
        ``[z - dz/2, z + dz/2]``, over the union of the volumes. 0 for zero-volume boxes.
    """
    return _pairwise(torch.ops.pointmae.box_iou_3d.default, "box_iou_3d", boxes_a, boxes_b)


def nms_bev(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float,
            offsets: Optional[torch.Tensor] = None) -> Union[torch.Tensor, List[torch.Tensor]]:
    """Greedy non-maximum suppression with rotated BEV IoU.

    Boxes are visited by descending score (equal scores: lower index first); a box is kept unless its
    BEV IoU with an already kept box is > ``iou_threshold``. Deterministic.

    Args:
        boxes: (N, >=7) boxes, float32/float64/float16. Packed with ``offsets`` (B+1,) int64 to run NMS
            independently per sample, or padded (B, N, >=7) (then ``scores`` is (B, N)).
        scores: (N,) floating scores on the device of ``boxes``, no NaN ((B, N) when padded).
        iou_threshold: in [0, 1]. 1 keeps everything; 0 suppresses any overlapping box.
        offsets: optional (B+1,) int64 cumulative sample sizes of packed ``boxes``.

    Returns:
        (K,) int64 indices into ``boxes``, by descending score. With ``offsets``: packed indices,
        sample by sample, each sample's by descending score. Padded input: a list of B tensors of
        indices local to each sample.
    """
    op = torch.ops.pointmae.nms_bev.default
    boxes, scores = boxes.detach(), scores.detach()
    packed, packed_offsets, padded = to_packed(boxes, offsets, name="boxes")
    if padded is None and offsets is None:
        return op(boxes, scores, float(iou_threshold))
    if padded is not None:
        if scores.dim() != 2 or tuple(scores.shape) != padded:
            raise ValueError(f"pointmae.nms_bev: padded `boxes` {tuple(boxes.shape)} needs `scores` of shape "
                             f"{padded}, got {tuple(scores.shape)}")
        return [op(b, s, float(iou_threshold)) for b, s in zip(boxes.unbind(0), scores.unbind(0))]
    bounds = packed_offsets.tolist()
    if (bounds[0] != 0 or bounds[-1] != packed.shape[0]
            or any(hi < lo for lo, hi in zip(bounds[:-1], bounds[1:]))):
        raise ValueError(f"pointmae.nms_bev: `offsets` must start at 0, be non-decreasing and end at the number "
                         f"of boxes {packed.shape[0]}, got {bounds}")
    if scores.dim() != 1 or scores.shape[0] != packed.shape[0]:
        raise ValueError(f"pointmae.nms_bev: `scores` must be (N,) = ({packed.shape[0]},), got {tuple(scores.shape)}")
    kept = [op(packed[lo:hi], scores[lo:hi], float(iou_threshold)) + lo for lo, hi in zip(bounds[:-1], bounds[1:])]
    if not kept:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    return torch.cat(kept)


# ------------------------------------------------------------------ fake (meta) implementations
# They check what can be checked without the data (ranks, widths), so torch.compile reports the same
# shape errors as the kernels; value checks (finite, sizes >= 0) need the data and stay in C++.

def _fake_check_boxes(op: str, name: str, boxes: torch.Tensor) -> None:
    if boxes.dim() != 2 or boxes.shape[1] < BOX_DIM:
        raise ValueError(f"pointmae.{op}: `{name}` must be a 2-D tensor (N, >=7) of (x, y, z, dx, dy, dz, heading, "
                         f"...), got shape {list(boxes.shape)}")
    if boxes.dtype not in (torch.float32, torch.float64, torch.float16):
        raise ValueError(f"pointmae.{op}: `{name}` must be float32, float64 or float16, got {boxes.dtype}")


def _fake_pairwise(op: str):
    def fake(boxes_a, boxes_b):
        _fake_check_boxes(op, "boxes_a", boxes_a)
        _fake_check_boxes(op, "boxes_b", boxes_b)
        if boxes_b.dtype != boxes_a.dtype:
            raise ValueError(f"pointmae.{op}: `boxes_b` must have the dtype of `boxes_a` ({boxes_a.dtype}), "
                             f"got {boxes_b.dtype}")
        if boxes_b.device != boxes_a.device:
            raise ValueError(f"pointmae.{op}: `boxes_b` must be on the same device as `boxes_a` "
                             f"({boxes_a.device}), got {boxes_b.device}")
        return boxes_a.new_empty((boxes_a.shape[0], boxes_b.shape[0]))
    return fake


torch.library.register_fake("pointmae::box_iou_bev")(_fake_pairwise("box_iou_bev"))
torch.library.register_fake("pointmae::box_iou_3d")(_fake_pairwise("box_iou_3d"))


@torch.library.register_fake("pointmae::nms_bev")
def _nms_bev_fake(boxes, scores, iou_threshold):
    _fake_check_boxes("nms_bev", "boxes", boxes)
    if scores.dim() != 1 or scores.shape[0] != boxes.shape[0]:
        raise ValueError(f"pointmae.nms_bev: `scores` must be a 1-D tensor (N,) with N = boxes.size(0) = "
                         f"{boxes.shape[0]}, got shape {list(scores.shape)}")
    if not 0.0 <= iou_threshold <= 1.0:
        raise ValueError(f"pointmae.nms_bev: `iou_threshold` must be in [0, 1], got {iou_threshold}")
    # The number of kept boxes depends on the data: an unbacked size in [0, N].
    kept = torch.library.get_ctx().new_dynamic_size(min=0)
    return boxes.new_empty((kept,), dtype=torch.int64)
