"""From 3D voxel features to a bird's-eye-view (BEV) map.

* `HeightCompression` (SECOND, Yan et al. 2018): the stride-8 sparse output of a VoxelBackBone8x is
  made dense, (B, C, D, H, W), and its D height layers are stacked into channels: (B, C * D, H, W).
* `PillarScatter` (PointPillars, Lang et al., CVPR 2019): the per-pillar features of the single-stride
  SST backbone (N, C) are written into their (y, x) cells of a zero (B, C, H, W) map.

H runs along y and W along x: cell (row i, column j) covers y0 + i * cell_y, x0 + j * cell_x.
"""
from __future__ import annotations

import torch
from torch import nn

from pointmae.models.backbones.sparse_conv import SparseBackboneOutput


def sparse_backbone_bev_depth(nz: int) -> int:
    """Height layers D left by VoxelBackBone8x / VoxelResBackBone8x for a grid of nz z cells.

    The sparse tensor has nz + 1 layers; stages 2 and 3 (k=3, stride 2, pad 1) give (D - 1) // 2 + 1,
    stage 4 and conv_out (k=3, stride 2, no z padding) give (D - 3) // 2 + 1. KITTI's 40 -> 2.
    """
    d = nz + 1
    for padded in (True, True, False, False):
        d = (d - 1) // 2 + 1 if padded else (d - 3) // 2 + 1
        if d < 1:
            break
    if d < 1:
        raise ValueError(f"a sparse-conv backbone needs at least 24 z cells (grid nz={nz} leaves no height layer "
                         "after its four z down-samplings); make voxel_size z smaller or point_range taller")
    return d


class HeightCompression(nn.Module):
    """(sparse stride-8 output) -> (B, C * D, H / 8, W / 8). No parameters."""

    def __init__(self, num_bev_features: int):
        super().__init__()
        self.num_bev_features = num_bev_features

    def forward(self, encoded: SparseBackboneOutput) -> torch.Tensor:
        bev = encoded.dense_bev()
        if bev.shape[1] != self.num_bev_features:
            raise ValueError(f"height compression expected {self.num_bev_features} channels, got {bev.shape[1]}")
        return bev


class PillarScatter(nn.Module):
    """(N, C) pillar features + (N, 4) coords (batch, z, y, x) -> (B, C, ny, nx). No parameters."""

    def __init__(self, num_bev_features: int, nx: int, ny: int):
        super().__init__()
        self.num_bev_features, self.nx, self.ny = num_bev_features, nx, ny

    def forward(self, features: torch.Tensor, coords: torch.Tensor, batch_size: int) -> torch.Tensor:
        c = features.shape[1]
        bev = features.new_zeros(batch_size, self.ny * self.nx, c)
        coords = coords.long()
        # One pillar per (batch, y, x) (z is a single layer), so the write has no collisions.
        bev[coords[:, 0], coords[:, 2] * self.nx + coords[:, 3]] = features
        return bev.transpose(1, 2).reshape(batch_size, c, self.ny, self.nx)


class BEVBackbone(nn.Module):
    """SECOND's 2D region-proposal backbone with multi-scale fusion (OpenPCDet's BaseBEVBackbone).

    Level i: a 3x3 conv with stride layer_strides[i], then layer_nums[i] 3x3 convs (each conv ->
    BatchNorm -> ReLU); its output is brought back to a common resolution by a transposed conv of
    stride upsample_strides[i] (a strided conv when that is fractional, given as 1 / s < 1) and the
    levels are concatenated along channels.

    Input (B, in_channels, H, W); output (B, sum(num_upsample_filters), H / s, W / s) with
    s = prod(layer_strides[:i+1]) / upsample_strides[i], the same s for every level (`output_stride`).
    """

    def __init__(self, in_channels: int, layer_nums, layer_strides, num_filters, upsample_strides,
                 num_upsample_filters):
        super().__init__()
        n = len(layer_nums)
        if not (len(layer_strides) == len(num_filters) == len(upsample_strides) == len(num_upsample_filters) == n) \
                or n == 0:
            raise ValueError("bev_layer_nums, bev_layer_strides, bev_num_filters, bev_upsample_strides and "
                             "bev_num_upsample_filters must be non-empty lists of one length; got "
                             f"{layer_nums}, {layer_strides}, {num_filters}, {upsample_strides}, {num_upsample_filters}")
        self.blocks = nn.ModuleList()
        self.deblocks = nn.ModuleList()
        stride = 1.0
        strides_out = []
        c_in = in_channels
        for i in range(n):
            layers = [nn.ZeroPad2d(1), nn.Conv2d(c_in, num_filters[i], 3, stride=layer_strides[i], bias=False),
                      _bn(num_filters[i]), nn.ReLU()]
            for _ in range(layer_nums[i]):
                layers += [nn.Conv2d(num_filters[i], num_filters[i], 3, padding=1, bias=False), _bn(num_filters[i]),
                           nn.ReLU()]
            self.blocks.append(nn.Sequential(*layers))
            stride *= layer_strides[i]
            up = float(upsample_strides[i])
            if up >= 1:
                up_int = int(round(up))
                deblock = nn.ConvTranspose2d(num_filters[i], num_upsample_filters[i], up_int, stride=up_int, bias=False)
            else:
                down = int(round(1 / up))
                deblock = nn.Conv2d(num_filters[i], num_upsample_filters[i], down, stride=down, bias=False)
            self.deblocks.append(nn.Sequential(deblock, _bn(num_upsample_filters[i]), nn.ReLU()))
            strides_out.append(stride / up)
            c_in = num_filters[i]
        if len(set(strides_out)) != 1:
            raise ValueError(f"the BEV levels end at different strides {strides_out}: choose bev_upsample_strides "
                             "so that prod(layer_strides[:i+1]) / upsample_strides[i] is the same for every level")
        self.output_stride = strides_out[0]
        self.num_bev_features = int(sum(num_upsample_filters))

    def forward(self, bev: torch.Tensor) -> torch.Tensor:
        x = bev
        ups = []
        for block, deblock in zip(self.blocks, self.deblocks):
            x = block(x)
            ups.append(deblock(x))
        return torch.cat(ups, dim=1) if len(ups) > 1 else ups[0]


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)
