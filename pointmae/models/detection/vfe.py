"""Voxel feature encoders: the mean of the points of each voxel (parameter-free).

`MeanVFE` averages the stored points of a hard voxel (SECOND's "simple" VFE, OpenPCDet's MeanVFE);
`DynamicMeanVFE` averages every point of a dynamic voxel through pointmae.ops.scatter_to_voxels. Both
give (V, C) features for the (V, 4) coords of the VoxelBatch. Named `vfe` in every pointmae LiDAR
model, so pre-training and fine-tuning state dicts line up (there is nothing to load here today, but
a learned VFE would load under the same prefix).
"""
from __future__ import annotations

import torch
from torch import nn

from pointmae import ops
from pointmae.models.detection.voxelization import VoxelBatch


class MeanVFE(nn.Module):
    def __init__(self, num_point_features: int):
        super().__init__()
        self.num_point_features = num_point_features

    def forward(self, voxels: VoxelBatch) -> torch.Tensor:
        """Returns (V, C): sum of the stored points / their count (padding rows are zeros)."""
        if voxels.voxels is None:
            raise ValueError("MeanVFE needs hard voxelization (vfe='mean'); use DynamicMeanVFE for dynamic voxels")
        total = voxels.voxels.sum(dim=1)                                  # (V, C)
        count = voxels.num_points.clamp(min=1).to(total.dtype)[:, None]   # (V, 1)
        return total / count


class DynamicMeanVFE(nn.Module):
    def __init__(self, num_point_features: int):
        super().__init__()
        self.num_point_features = num_point_features

    def forward(self, voxels: VoxelBatch) -> torch.Tensor:
        """Returns (V, C): the mean of every point of each voxel (no capacity limit)."""
        if voxels.point_to_voxel is None:
            raise ValueError("DynamicMeanVFE needs dynamic voxelization (vfe='dynamic_mean')")
        return ops.scatter_to_voxels(voxels.points, voxels.point_to_voxel, voxels.coords.shape[0], "mean")
