"""Reconstruction targets shared by the LiDAR masked autoencoders: the points of selected voxels
(the one point-target helper of Voxel-MAE and T-MAE).

Voxel-MAE (Hess et al., WACV-W 2023) and T-MAE (Wei et al., ECCV 2024) both reconstruct, for every
masked voxel, the points that fell into it, compared with a fixed number of predicted points by the
Chamfer distance. Points are expressed relative to their voxel's centre and divided by the voxel
size, so every voxel's target lies in [-0.5, 0.5)^3 whatever the voxel's size or position: the
prediction head learns one local shape vocabulary instead of absolute coordinates.
"""
from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["voxel_centres", "voxel_point_targets"]


def voxel_centres(coords: torch.Tensor, voxel_size: Sequence[float], point_range: Sequence[float]) -> torch.Tensor:
    """Metric centres of voxels. coords: (V, 4) int (batch, z, y, x) as pointmae.ops.voxelize gives them;
    voxel_size [vx, vy, vz]; point_range [x0, y0, z0, x1, y1, z1]. Returns (V, 3) float32 (x, y, z)."""
    size = torch.tensor([float(v) for v in voxel_size], dtype=torch.float64, device=coords.device)
    lower = torch.tensor([float(v) for v in point_range[:3]], dtype=torch.float64, device=coords.device)
    xyz_index = coords[:, [3, 2, 1]].double()  # (V, 3) (ix, iy, iz); float64 so large grids stay exact
    return (lower + (xyz_index + 0.5) * size).float()


def voxel_point_targets(points_xyz: torch.Tensor, point_to_voxel: torch.Tensor, voxel_rows: torch.Tensor,
                        centres: torch.Tensor, voxel_size: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """The points of the voxels ``voxel_rows``, normalised to their voxel, packed one cloud per voxel.

    points_xyz: (N, 3) float metric points; point_to_voxel: (N,) int64 voxel of every point (-1: dropped),
    as pointmae.ops.voxelize_dynamic returns it; voxel_rows: (M,) int64 distinct voxel indices to take
    (e.g. the masked voxels); centres: (V, 3) metric voxel centres (``voxel_centres``); voxel_size
    [vx, vy, vz].
    Returns (targets (T, 3) float32, offsets (M + 1,) int64): cloud m = targets[offsets[m]:offsets[m+1]]
    holds the points of voxel voxel_rows[m] as (p - centre) / voxel_size, in input point order --
    the packed layout pointmae.ops.chamfer_distance takes. A voxel without points gives an empty cloud.
    """
    if points_xyz.dim() != 2 or points_xyz.shape[1] != 3:
        raise ValueError(f"points_xyz must have shape (N, 3), got {tuple(points_xyz.shape)}")
    if point_to_voxel.shape != points_xyz.shape[:1]:
        raise ValueError(f"point_to_voxel must have shape ({points_xyz.shape[0]},) (one voxel per point), "
                         f"got {tuple(point_to_voxel.shape)}")
    num_voxels, m = centres.shape[0], voxel_rows.numel()
    slot = torch.full((num_voxels + 1,), -1, dtype=torch.long, device=points_xyz.device)  # last: dropped points
    slot[voxel_rows] = torch.arange(m, device=points_xyz.device)
    point_slot = slot[torch.where(point_to_voxel >= 0, point_to_voxel, num_voxels)]  # (N,) target cloud or -1
    selected = torch.nonzero(point_slot >= 0).squeeze(1)
    order = selected[torch.argsort(point_slot[selected], stable=True)]  # grouped by cloud, input order inside
    cloud = point_slot[order]
    size = torch.tensor([float(v) for v in voxel_size], dtype=torch.float32, device=points_xyz.device)
    targets = (points_xyz[order].float() - centres[voxel_rows[cloud]]) / size
    counts = torch.bincount(cloud, minlength=m)
    offsets = torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])
    return targets, offsets
