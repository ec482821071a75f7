"""Voxelization of LiDAR sweeps: hard (fixed-capacity voxels) and dynamic (every point keeps its voxel
index), and the reduction of point features into voxels.

Voxel rule, identical in the CPU and CUDA kernels and in `pointmae.ops.reference`:

- `point_range` is [x0, y0, z0, x1, y1, z1]; a point is inside when x0 <= x < x1, y0 <= y < y1 and
  z0 <= z < z1.
- The grid has round((x1 - x0) / vx) cells along x (round half away from zero), same for y and z.
- A point's voxel index is ix = floor((x - x0) / vx), computed in float64 whatever the point dtype;
  a point whose index falls outside [0, gx) (possible when (x1 - x0) / vx is not an integer) is
  dropped as outside the range, like spconv / OpenPCDet do.
- A point with a NaN or infinite x, y or z is dropped and counted as non-finite.

Order: voxels are numbered in order of first appearance (by point index inside the cloud), clouds one
after the other; inside a voxel points keep their input order. Outputs are deterministic and identical
on CPU and CUDA.

Coordinates are int32 (batch, z, y, x): the order and dtype that spconv and OpenPCDet use for sparse
tensors' indices, so they can be fed to a sparse backbone without a copy.
"""
from typing import NamedTuple, Optional, Sequence

import torch

from pointmae.ops._batch import to_packed

__all__ = ["Voxels", "DynamicVoxels", "voxelize", "voxelize_dynamic", "scatter_to_voxels"]

# Columns of the per-cloud statistics.
STATS_COLUMNS = ("kept", "outside_range", "non_finite", "over_capacity")


class Voxels(NamedTuple):
    """Result of `voxelize` (hard voxelization). V voxels over all clouds, P = max_points_per_voxel.

    voxels:        (V, P, C) point features (the input rows, x y z first), zero padded.
    coords:        (V, 4) int32 (batch, z, y, x).
    num_points:    (V,) int32 points stored in each voxel (<= P).
    voxel_offsets: (B+1,) int64: the voxels of cloud b are voxel_offsets[b]:voxel_offsets[b+1].
    stats:         (B, 4) int64 per cloud [kept, outside range, non-finite, over capacity]; the four add
                   up to the cloud's size. Over capacity: inside the range but beyond max_voxels voxels
                   or beyond max_points_per_voxel points in its voxel.
    """
    voxels: torch.Tensor
    coords: torch.Tensor
    num_points: torch.Tensor
    voxel_offsets: torch.Tensor
    stats: torch.Tensor


class DynamicVoxels(NamedTuple):
    """Result of `voxelize_dynamic`. V voxels over all clouds.

    point_to_voxel: (N,) int64 voxel of every point (index into coords), -1 when dropped; (B, N) for
                    padded input.
    coords:         (V, 4) int32 (batch, z, y, x), in order of first appearance.
    voxel_offsets:  (B+1,) int64.
    stats:          (B, 3) int64 per cloud [kept, outside range, non-finite].
    """
    point_to_voxel: torch.Tensor
    coords: torch.Tensor
    voxel_offsets: torch.Tensor
    stats: torch.Tensor


def _floats(values, name, length):
    try:
        out = [float(v) for v in values]
    except TypeError:
        raise ValueError(f"`{name}` must be a sequence of {length} numbers, got {values!r}") from None
    if len(out) != length:
        raise ValueError(f"`{name}` must have {length} values, got {len(out)}: {out}")
    return out


def voxelize(points: torch.Tensor, offsets: Optional[torch.Tensor], voxel_size: Sequence[float],
             point_range: Sequence[float], max_points_per_voxel: int, max_voxels: int) -> Voxels:
    """Hard voxelization (VoxelNet / SECOND style) of a batch of point clouds.

    Args:
        points: (N, C) packed points with C >= 3, x y z first; extra channels (intensity, time, ...)
            are carried into `voxels`. float32, float64 or float16. Or padded (B, N, C) with
            offsets=None: B clouds of N points each.
        offsets: (B+1,) int64 cumulative cloud sizes, or None for one cloud / padded input.
        voxel_size: [vx, vy, vz] in the units of the points, finite and > 0.
        point_range: [x0, y0, z0, x1, y1, z1] with x0 < x1 etc. (half-open box).
        max_points_per_voxel: P >= 1; a voxel stores its first P points in input order.
        max_voxels: >= 1, per cloud; the first max_voxels voxels by first appearance are kept.

    Returns a `Voxels` tuple; see the module docstring for the voxel rule and the order.
    """
    packed, offsets, _ = to_packed(points, offsets)
    out = torch.ops.pointmae.voxelize(packed, offsets, _floats(voxel_size, "voxel_size", 3),
                                      _floats(point_range, "point_range", 6), int(max_points_per_voxel),
                                      int(max_voxels))
    return Voxels(*out)


def voxelize_dynamic(points: torch.Tensor, offsets: Optional[torch.Tensor], voxel_size: Sequence[float],
                     point_range: Sequence[float]) -> DynamicVoxels:
    """Dynamic voxelization (Zhou et al., "End-to-End Multi-View Fusion", 2019): no capacity limits;
    every point learns its voxel, to be reduced with `scatter_to_voxels`.

    Args as in `voxelize` (points (N, C >= 3) or padded (B, N, C); offsets (B+1,) int64 or None).
    Returns a `DynamicVoxels` tuple; point_to_voxel is (B, N) for padded input.
    """
    packed, offsets, padded = to_packed(points, offsets)
    p2v, coords, voxel_offsets, stats = torch.ops.pointmae.voxelize_dynamic(
        packed, offsets, _floats(voxel_size, "voxel_size", 3), _floats(point_range, "point_range", 6))
    if padded is not None:
        p2v = p2v.reshape(padded)
    return DynamicVoxels(p2v, coords, voxel_offsets, stats)


def scatter_to_voxels(features: torch.Tensor, point_to_voxel: torch.Tensor, num_voxels: int,
                      reduce: str = "mean", return_argmax: bool = False):
    """Reduces point features into their voxels, with autograd.

    Args:
        features: (N, C) float32 / float64 / float16 per-point features (or (B, N, C) with a (B, N)
            point_to_voxel).
        point_to_voxel: (N,) int64 voxel index of every point in [0, num_voxels), -1 to ignore a point
            (as returned by `voxelize_dynamic`).
        num_voxels: V, the number of output rows (e.g. coords.shape[0]).
        reduce: "mean" or "max". Empty voxels give 0. "max" takes the per-channel maximum; its
            gradient goes to the point holding it, ties to the lowest point index (the first NaN wins).
            Sums run in point order, so results and gradients are deterministic.
        return_argmax: also return the (V, C) int64 argmax point (-1 for empty voxels; "max" only).

    Returns (V, C) features, or (features, argmax) when return_argmax.
    """
    if features.dim() == 3:
        features = features.reshape(-1, features.shape[-1])
        point_to_voxel = point_to_voxel.reshape(-1)
    if reduce not in ("mean", "max"):
        raise ValueError(f"`reduce` must be 'mean' or 'max', got {reduce!r}")
    if return_argmax and reduce != "max":
        raise ValueError("`return_argmax` needs reduce='max'")
    out, arg = torch.ops.pointmae.scatter_to_voxels(features, point_to_voxel, num_voxels, reduce)
    return (out, arg) if return_argmax else out


# ------------------------------------------------------------------ torch.compile / autograd support
@torch.library.register_fake("pointmae::voxelize")
def _voxelize_fake(points, offsets, voxel_size, point_range, max_points_per_voxel, max_voxels):
    num_voxels = torch.library.get_ctx().new_dynamic_size()
    num_clouds = offsets.shape[0] - 1
    return (points.new_empty((num_voxels, max_points_per_voxel, points.shape[1])),
            points.new_empty((num_voxels, 4), dtype=torch.int32),
            points.new_empty((num_voxels,), dtype=torch.int32),
            offsets.new_empty((num_clouds + 1,)),
            offsets.new_empty((num_clouds, 4)))


@torch.library.register_fake("pointmae::voxelize_dynamic")
def _voxelize_dynamic_fake(points, offsets, voxel_size, point_range):
    num_voxels = torch.library.get_ctx().new_dynamic_size()
    num_clouds = offsets.shape[0] - 1
    return (points.new_empty((points.shape[0],), dtype=torch.int64),
            points.new_empty((num_voxels, 4), dtype=torch.int32),
            offsets.new_empty((num_clouds + 1,)),
            offsets.new_empty((num_clouds, 3)))


@torch.library.register_fake("pointmae::scatter_to_voxels")
def _scatter_fake(features, point_to_voxel, num_voxels, reduce):
    out = features.new_empty((num_voxels, features.shape[1]))
    arg_shape = (num_voxels, features.shape[1]) if reduce == "max" else (0,)
    return out, features.new_empty(arg_shape, dtype=torch.int64)


@torch.library.register_fake("pointmae::scatter_to_voxels_backward")
def _scatter_backward_fake(grad_out, point_to_voxel, arg, num_points, reduce):
    return grad_out.new_empty((num_points, grad_out.shape[1]))


def _scatter_setup_context(ctx, inputs, output):
    features, point_to_voxel, _num_voxels, reduce = inputs
    _out, arg = output
    ctx.save_for_backward(point_to_voxel, arg)
    ctx.num_points = features.shape[0]
    ctx.reduce = reduce


def _scatter_backward(ctx, grad_out, _grad_arg):
    point_to_voxel, arg = ctx.saved_tensors
    grad_features = torch.ops.pointmae.scatter_to_voxels_backward(grad_out.contiguous(), point_to_voxel, arg,
                                                                  ctx.num_points, ctx.reduce)
    return grad_features, None, None, None


torch.library.register_autograd("pointmae::scatter_to_voxels", _scatter_backward,
                                setup_context=_scatter_setup_context)
