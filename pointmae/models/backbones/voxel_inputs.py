"""The input check every 3D backbone shares: (N, C_in) voxel features with their (N, 4) integer
(batch, z, y, x) coordinates. No third-party imports, so each backbone keeps only its own dependencies."""
from __future__ import annotations

import torch


def check_voxel_inputs(voxel_features: torch.Tensor, voxel_coords: torch.Tensor, in_channels: int) -> None:
    """Raise ValueError naming the argument, the expected and the received shape / dtype."""
    if voxel_features.dim() != 2 or voxel_features.shape[1] != in_channels:
        raise ValueError(f"voxel_features must have shape (N, {in_channels}), got {tuple(voxel_features.shape)}")
    if voxel_coords.shape != (voxel_features.shape[0], 4) or voxel_coords.dtype.is_floating_point:
        raise ValueError(f"voxel_coords must be an integer tensor of shape ({voxel_features.shape[0]}, 4) "
                         f"(batch, z, y, x), got {voxel_coords.dtype} {tuple(voxel_coords.shape)}")
