"""SECOND-style sparse 3D convolution backbones with 8x down-sampling.

The encoder of SECOND (Yan et al., "SECOND: Sparsely Embedded Convolutional Detection", Sensors 2018)
as used by PV-RCNN, CenterPoint and most LiDAR detectors: submanifold convs keep the set of active
voxels fixed (no dilation of the sparse set), and three strided regular sparse convs halve the grid
each, so the output has stride 8 in x and y. A last conv along z alone squeezes the height further so
the result can be flattened into a bird's-eye-view map. R-MAE (Tayebati et al., arXiv 2406.07833)
pre-trains exactly this encoder.

Two variants, with the module and parameter NAMES and SHAPES of OpenPCDet's VoxelBackBone8x and
VoxelResBackBone8x, so that a checkpoint (under the prefix ``backbone_3d.``) loads into either
codebase:

- ``VoxelBackBone8x``: every stage is a stack of conv -> BatchNorm -> ReLU blocks; channels
  16 / 32 / 64 / 64, output 128 channels. With 4 input channels: 711,872 parameters, 72 state-dict
  entries.
- ``VoxelResBackBone8x``: the subm stacks are replaced by residual blocks (He et al., "Deep Residual
  Learning", CVPR 2016) whose convs carry a bias; channels 16 / 32 / 64 / 128, output 128. With 5
  input channels: 2,695,312 parameters, 142 state-dict entries.

State-dict layout (k = 3x3x3 unless noted, BN = BatchNorm1d(eps=1e-3, momentum=0.01) on the (N, C)
features):
    conv_input.0 (SubMConv3d in->16, no bias), conv_input.1 (BN)
    conv1..conv4: a list of blocks; a plain block is Sequential(conv, BN, ReLU) -> convK.i.0 / convK.i.1,
                  a residual block has conv1, bn1, conv2, bn2 (convs with bias) -> convK.i.conv1 ...
                  convK.0 of stages 2-4 is a strided SparseConv3d (stride 2, padding 1; (0, 1, 1) in
                  stage 4) that halves the grid.
    conv_out.0 (SparseConv3d C->128, kernel (3, 1, 1), stride (2, 1, 1), no bias), conv_out.1 (BN)

Input: voxel features (N, C_in) and integer coordinates (N, 4) = (batch, z, y, x) on a grid of
``grid_size`` = (nx, ny, nz) cells; the sparse tensor has spatial shape (nz + 1, ny, nx), the extra z
layer (as in OpenPCDet) making e.g. 40 z cells -> 41 -> 21 -> 11 -> 5 -> 2 after conv_out.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import spconv.pytorch as spconv
import torch
from torch import nn

from pointmae.models.backbones.spconv_compat import SparseConv3d, SubMConv3d
from pointmae.models.backbones.voxel_inputs import check_voxel_inputs

__all__ = ["SparseBackboneOutput", "VoxelBackBone8x", "VoxelResBackBone8x", "sparse_backbone_factories"]

BN_EPS, BN_MOMENTUM = 1e-3, 0.01


def _batch_norm(channels: int) -> nn.BatchNorm1d:
    return nn.BatchNorm1d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class SparseBNReLU(spconv.SparseSequential):
    """conv -> BatchNorm -> ReLU on the active voxels; children named 0 (conv), 1 (BN), 2 (ReLU)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int, int] = 3,
                 stride: int | tuple[int, int, int] = 1, padding: int | tuple[int, int, int] = 1,
                 submanifold: bool = True, indice_key: str | None = None):
        conv_class = SubMConv3d if submanifold else SparseConv3d
        # No bias: the BatchNorm that follows has its own shift.
        super().__init__(conv_class(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                                    bias=False, indice_key=indice_key),
                         _batch_norm(out_channels), nn.ReLU())


class SparseResidualBlock(spconv.SparseModule):
    """Two submanifold 3x3x3 convs (with bias) + BN, an identity shortcut, ReLU after the sum.

    Children conv1, bn1, conv2, bn2: OpenPCDet's SparseBasicBlock names. Same channels in and out and
    submanifold convs, so the active set and the shortcut's shape never change.
    """

    def __init__(self, channels: int, indice_key: str):
        super().__init__()
        self.conv1 = SubMConv3d(channels, channels, 3, padding=1, bias=True, indice_key=indice_key)
        self.bn1 = _batch_norm(channels)
        self.conv2 = SubMConv3d(channels, channels, 3, padding=1, bias=True, indice_key=indice_key)
        self.bn2 = _batch_norm(channels)
        self.relu = nn.ReLU()

    def forward(self, x: spconv.SparseConvTensor) -> spconv.SparseConvTensor:
        out = self.conv1(x)
        out = out.replace_feature(self.relu(self.bn1(out.features)))
        out = self.conv2(out)
        return out.replace_feature(self.relu(self.bn2(out.features) + x.features))


@dataclass
class SparseBackboneOutput:
    """encoded: stride-8 sparse tensor (N_out, 128); multi_scale: stage outputs x_conv1..x_conv4
    (strides 1, 2, 4, 8); stride: the x/y down-sampling of ``encoded`` (8)."""
    encoded: spconv.SparseConvTensor
    multi_scale: dict[str, spconv.SparseConvTensor]
    stride: int = 8

    def dense_bev(self) -> torch.Tensor:
        """(B, 128 * D_out, H / 8, W / 8): the z layers stacked into channels, for a 2D BEV head."""
        dense = self.encoded.dense()  # (B, C, D, H, W)
        b, c, d, h, w = dense.shape
        return dense.reshape(b, c * d, h, w)


class _SparseBackbone8x(nn.Module):
    """Shared skeleton: conv_input, four stages conv1..conv4 (strides 1, 2, 4, 8) and conv_out."""

    def __init__(self, in_channels: int, grid_size: Sequence[int], stage_channels: Sequence[int],
                 out_channels: int, residual: bool):
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        if len(grid_size) != 3 or any(int(g) < 1 for g in grid_size):
            raise ValueError(f"grid_size must be 3 positive ints (nx, ny, nz), got {grid_size!r}")
        nx, ny, nz = (int(g) for g in grid_size)
        self.sparse_shape = [nz + 1, ny, nx]  # (D, H, W)
        self.in_channels = in_channels
        self.out_channels = out_channels
        c1, c2, c3, c4 = stage_channels
        # The attribute names OpenPCDet's heads read (not part of the state dict).
        self.num_point_features = out_channels
        self.backbone_channels = {"x_conv1": c1, "x_conv2": c2, "x_conv3": c3, "x_conv4": c4}

        self.conv_input = SparseBNReLU(in_channels, c1, indice_key="subm1")

        def stage(c_in: int, c_out: int, index: int, down_padding) -> spconv.SparseSequential:
            """Stage ``index``: a strided down-sampling block (except stage 1), then subm blocks."""
            subm_key = f"{'res' if residual else 'subm'}{index}"
            blocks = []
            if index > 1:
                blocks.append(SparseBNReLU(c_in, c_out, 3, stride=2, padding=down_padding, submanifold=False,
                                           indice_key=f"spconv{index}"))
            n_subm = 2 if (residual or index > 1) else 1
            for i in range(n_subm):
                if residual:
                    blocks.append(SparseResidualBlock(c_out, indice_key=subm_key))
                else:
                    blocks.append(SparseBNReLU(c_out, c_out, indice_key=subm_key))
            return spconv.SparseSequential(*blocks)

        self.conv1 = stage(c1, c1, 1, None)
        self.conv2 = stage(c1, c2, 2, 1)
        self.conv3 = stage(c2, c3, 3, 1)
        # Stage 4 does not pad z, so the height shrinks faster than x/y: 11 -> 5 for KITTI's 41 layers.
        self.conv4 = stage(c3, c4, 4, (0, 1, 1))
        self.conv_out = SparseBNReLU(c4, out_channels, (3, 1, 1), stride=(2, 1, 1), padding=0, submanifold=False,
                                     indice_key="spconv_down2")

    def forward(self, voxel_features: torch.Tensor, voxel_coords: torch.Tensor,
                batch_size: int) -> SparseBackboneOutput:
        """voxel_features: (N, C_in) float; voxel_coords: (N, 4) int (batch, z, y, x), unique rows."""
        check_voxel_inputs(voxel_features, voxel_coords, self.in_channels)
        x = spconv.SparseConvTensor(voxel_features, voxel_coords.int(), self.sparse_shape, batch_size)
        x = self.conv_input(x)
        x_conv1 = self.conv1(x)        # stride 1, c1
        x_conv2 = self.conv2(x_conv1)  # stride 2, c2
        x_conv3 = self.conv3(x_conv2)  # stride 4, c3
        x_conv4 = self.conv4(x_conv3)  # stride 8, c4
        encoded = self.conv_out(x_conv4)  # stride 8 in x/y, z halved again, 128 channels
        return SparseBackboneOutput(encoded=encoded, multi_scale={"x_conv1": x_conv1, "x_conv2": x_conv2,
                                                                   "x_conv3": x_conv3, "x_conv4": x_conv4})


class VoxelBackBone8x(_SparseBackbone8x):
    """Plain SECOND encoder: stages 16/32/64/64, output 128 channels at stride 8."""

    def __init__(self, in_channels: int, grid_size: Sequence[int]):
        super().__init__(in_channels, grid_size, stage_channels=(16, 32, 64, 64), out_channels=128, residual=False)


class VoxelResBackBone8x(_SparseBackbone8x):
    """Residual SECOND encoder: stages 16/32/64/128, output 128 channels at stride 8."""

    def __init__(self, in_channels: int, grid_size: Sequence[int]):
        super().__init__(in_channels, grid_size, stage_channels=(16, 32, 64, 128), out_channels=128, residual=True)


# A plain {name: factory} table for build_model(cfg); importing it registers nothing anywhere.
sparse_backbone_factories = {
    "VoxelBackBone8x": VoxelBackBone8x,
    "VoxelResBackBone8x": VoxelResBackBone8x,
}
