"""Point clouds -> voxels, the first step of the detector (hard or dynamic voxelization).

Hard voxelization (VoxelNet / SECOND) keeps at most `max_points_per_voxel` points in each of at most
`max_voxels` voxels per cloud; dynamic voxelization (Zhou et al., "End-to-End Multi-View Fusion for 3D
Object Detection in LiDAR Point Clouds", CoRL 2019) keeps every point and remembers its voxel. Both are
`pointmae.models.lidar_voxels.voxelize_points`, the voxelization of every LiDAR MAE (with or without its
capacity limits), so the detector sees voxels exactly as pre-training did; this module only picks the
channels the detector was configured with.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
from torch import nn

from pointmae.models.lidar_voxels import VoxelGrid, voxelize_points


class VoxelBatch(NamedTuple):
    """What the voxel feature encoder gets.

    points:      (N, C) the selected channels of the packed points.
    coords:      (V, 4) int32 (batch, z, y, x).
    point_to_voxel: (N,) int64, -1 for points dropped (outside the range or beyond a capacity limit).
    batch_size:  B.
    """
    points: torch.Tensor
    coords: torch.Tensor
    point_to_voxel: torch.Tensor
    batch_size: int


class Voxelizer(nn.Module):
    """Selects `point_channels` from the batch and voxelizes. No parameters.

    point_channels: names of the channels to use, x y z first; point_range [x0, y0, z0, x1, y1, z1];
    voxel_size [vx, vy, vz]; mode "hard" (capacity limits) or "dynamic" (every point).
    """

    def __init__(self, point_channels: Sequence[str], point_range: Sequence[float], voxel_size: Sequence[float],
                 mode: str = "hard", max_points_per_voxel: int = 5, max_voxels: int = 40000):
        super().__init__()
        if tuple(point_channels[:3]) != ("x", "y", "z"):
            raise ValueError(f"point_channels must start with x, y, z; got {list(point_channels)}")
        if mode not in ("hard", "dynamic"):
            raise ValueError(f"mode must be 'hard' or 'dynamic', got {mode!r}")
        self.point_channels = tuple(point_channels)
        self.grid = VoxelGrid(tuple(float(v) for v in point_range), tuple(float(v) for v in voxel_size))
        self.point_range = list(self.grid.point_range)
        self.voxel_size = list(self.grid.voxel_size)
        self.grid_size = self.grid.grid_size
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
        hard = self.mode == "hard"
        vox = voxelize_points(points, offsets, self.grid, self.max_points_per_voxel if hard else None,
                              self.max_voxels if hard else None)
        return VoxelBatch(points, vox.coords, vox.point_to_voxel, int(offsets.numel()) - 1)
