"""The voxel feature encoder (the `vfe` of every LiDAR model in pointmae).

`MeanVFE` is parameter-free, like OpenPCDet's MeanVFE: the mean of each voxel's point channels
(C values, so a backbone pre-trained on it takes the detector's C-channel voxels), optionally with the
offset of that mean from the voxel centre (in voxel units) appended (C + 3), so that a backbone
without a per-point network still knows where inside the voxel the points sit (T-MAE's choice here).
It reduces over `point_to_voxel` as `pointmae.models.lidar_voxels.voxelize_points` gives it, so with
that function's capacity limits it averages exactly the points hard voxelization would keep.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from pointmae.ops import scatter_to_voxels
from pointmae.models.targets import voxel_centres

__all__ = ["MeanVFE"]


class MeanVFE(nn.Module):
    """points (N, >= C) packed, point_to_voxel (N,) (-1: dropped), coords (V, 4) -> features (V, out_channels):
    [mean of the C point channels] (+ [(mean xyz - voxel centre) / voxel size] with centre_offset)."""

    def __init__(self, num_point_features: int, voxel_size: Sequence[float], point_range: Sequence[float],
                 centre_offset: bool = True):
        super().__init__()
        if num_point_features < 3:
            raise ValueError(f"num_point_features must be >= 3 (x, y, z first), got {num_point_features}")
        self.num_point_features = num_point_features
        self.voxel_size = [float(v) for v in voxel_size]
        self.point_range = [float(v) for v in point_range]
        self.centre_offset = centre_offset
        self.out_channels = num_point_features + (3 if centre_offset else 0)

    def forward(self, points: torch.Tensor, point_to_voxel: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        if points.dim() != 2 or points.shape[1] < self.num_point_features:
            raise ValueError(f"points must have shape (N, >= {self.num_point_features}), got {tuple(points.shape)}")
        mean = scatter_to_voxels(points[:, :self.num_point_features].float().contiguous(), point_to_voxel,
                                 coords.shape[0], "mean")  # (V, C)
        if not self.centre_offset:
            return mean
        size = torch.tensor(self.voxel_size, dtype=mean.dtype, device=mean.device)
        offset = (mean[:, :3] - voxel_centres(coords, self.voxel_size, self.point_range)) / size
        return torch.cat([mean, offset], dim=1)
