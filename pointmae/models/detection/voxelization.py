"""Point clouds -> voxels, the first step of the detector (hard or dynamic voxelization).

Hard voxelization (VoxelNet / SECOND) keeps at most `max_points_per_voxel` points in each of at most
`max_voxels` voxels per cloud; dynamic voxelization (Zhou et al., "End-to-End Multi-View Fusion for 3D
Object Detection in LiDAR Point Clouds", CoRL 2019) keeps every point and remembers its voxel. Both
are the kernels of pointmae.ops; this module only picks the channels and holds the grid.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
from torch import nn

from pointmae import ops


def grid_size(point_range: Sequence[float], voxel_size: Sequence[float]) -> tuple[int, int, int]:
    """(nx, ny, nz) cells, with the kernels' rule: round((x1 - x0) / vx), half away from zero."""
    sizes = []
    for axis in range(3):
        extent = float(point_range[axis + 3]) - float(point_range[axis])
        if extent <= 0 or float(voxel_size[axis]) <= 0:
            raise ValueError(f"point_range must have x0 < x1, y0 < y1, z0 < z1 and voxel_size > 0; got "
                             f"point_range={list(point_range)}, voxel_size={list(voxel_size)}")
        sizes.append(int(extent / float(voxel_size[axis]) + 0.5))
    return tuple(sizes)


class VoxelBatch(NamedTuple):
    """What the voxel feature encoder gets.

    points:      (N, C) the selected channels of the packed points.
    coords:      (V, 4) int32 (batch, z, y, x).
    voxels:      (V, P, C) hard voxelization only (else None), zero padded.
    num_points:  (V,) int32 hard voxelization only (else None).
    point_to_voxel: (N,) int64 dynamic voxelization only (else None), -1 for dropped points.
    batch_size:  B.
    """
    points: torch.Tensor
    coords: torch.Tensor
    voxels: torch.Tensor | None
    num_points: torch.Tensor | None
    point_to_voxel: torch.Tensor | None
    batch_size: int


class Voxelizer(nn.Module):
    """Selects `point_channels` from the batch and voxelizes. No parameters.

    point_channels: names of the channels to use, x y z first; point_range [x0, y0, z0, x1, y1, z1];
    voxel_size [vx, vy, vz]; mode "hard" or "dynamic".
    """

    def __init__(self, point_channels: Sequence[str], point_range: Sequence[float], voxel_size: Sequence[float],
                 mode: str = "hard", max_points_per_voxel: int = 5, max_voxels: int = 40000):
        super().__init__()
        if tuple(point_channels[:3]) != ("x", "y", "z"):
            raise ValueError(f"point_channels must start with x, y, z; got {list(point_channels)}")
        if mode not in ("hard", "dynamic"):
            raise ValueError(f"mode must be 'hard' or 'dynamic', got {mode!r}")
        self.point_channels = tuple(point_channels)
        self.point_range = [float(v) for v in point_range]
        self.voxel_size = [float(v) for v in voxel_size]
        self.grid_size = grid_size(point_range, voxel_size)
        self.mode = mode
        self.max_points_per_voxel = int(max_points_per_voxel)
        self.max_voxels = int(max_voxels)

    def select_channels(self, points: torch.Tensor, channels: Sequence[str]) -> torch.Tensor:
        channels = tuple(channels)
        missing = [c for c in self.point_channels if c not in channels]
        if missing:
            raise ValueError(f"the batch has channels {channels} but the detector needs {self.point_channels} "
                             f"(missing: {missing})")
        index = [channels.index(c) for c in self.point_channels]
        if index == list(range(len(index))) and points.shape[1] == len(index):
            return points
        return points[:, index].contiguous()

    def forward(self, points: torch.Tensor, offsets: torch.Tensor, channels: Sequence[str]) -> VoxelBatch:
        """points: (N, C_batch) packed float32; offsets: (B+1,) int64; channels: the C_batch names."""
        points = self.select_channels(points, channels)
        batch_size = int(offsets.numel()) - 1
        if self.mode == "hard":
            v = ops.voxelize(points, offsets, self.voxel_size, self.point_range, self.max_points_per_voxel,
                             self.max_voxels)
            return VoxelBatch(points, v.coords, v.voxels, v.num_points, None, batch_size)
        d = ops.voxelize_dynamic(points, offsets, self.voxel_size, self.point_range)
        return VoxelBatch(points, d.coords, None, None, d.point_to_voxel, batch_size)
