"""R-MAE: radially masked autoencoding of LiDAR sweeps, reconstructing voxel occupancy.

Tayebati, Tulabandhula, Trivedi, "Sense Less, Generate More: Pre-training LiDAR Perception with
Masked Autoencoders for Ultra-Efficient 3D Sensing", arXiv 2406.07833 (2024).

The algorithm:
1. voxelise the sweep; each voxel's feature is the mean of its points (`vfe`);
2. radial masking: the full circle around each sample's SENSOR is cut into 1-degree sectors and 20%
   of the non-empty sectors are kept (10% on nuScenes) -- a LiDAR that fires in few directions;
   (optionally range-aware keep ratios; any other `pointmae.masking` function by config);
3. `forward_encoder`: the SECOND-style sparse conv 8x encoder (`backbone_3d`) on the visible voxels;
4. `forward_decoder`: a stack of 3D transposed convolutions (kernel 2, stride 2: each x2 in z, y, x)
   + BatchNorm + ReLU on the stride-8 output and a 1x1x1 head predict an occupancy logit per cell of a
   coarse 3D grid (stride 8 / 2^L in x and y, for L = len(decoder_channels)) -- evaluated exactly,
   but only at the cells the loss reads (see `SparseOccupancyDecoder` below: the dense decoder's
   result without laying the grid out densely);
5. `forward_loss`: binary cross-entropy on every occupied cell (from ALL voxels, visible and masked)
   and on an equal number (times `empty_ratio`) of uniformly sampled empty cells per sample.

Done differently from the published code, on purpose (see docs/lidar_mae.md): angles are measured
in metres around each sample's own sensor origin (batch["origins"], which follows the data
augmentation) over 360 degrees, and every sample draws its own sectors; the published code measures
angles on integer grid indices from the grid's corner and draws one set of sectors for the batch.
"""
from __future__ import annotations

from typing import Dict, NamedTuple, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pointmae.models.backbones.sparse_conv import sparse_backbone_factories
from pointmae.models.lidar_voxels import (VoxelGrid, VoxelMasker, batch_inputs, bev_picture,
                                          first_sample_points, sample_empty_voxels, voxelize_points)
from pointmae.models.voxel_features import MeanVFE
from pointmae.models.voxel_mae import sparse_conv_output_depth

__all__ = ["RMAE"]


class DecodedOccupancy(NamedTuple):
    """The occupancy decoder's output, sparse: active_logits (M * 8^L,) for the descendants of the M
    active stride-8 cells (8^L rows each, in child-path order), background_logits (8^L,) for the
    descendants of any empty stride-8 cell, row_of (B, D8, H8, W8) int64: a stride-8 cell's active row
    or -1."""
    active_logits: torch.Tensor
    background_logits: torch.Tensor
    row_of: torch.Tensor


def batch_norm_with_background(bn: nn.BatchNorm3d, active: torch.Tensor, background: torch.Tensor,
                               n_empty: int) -> tuple[torch.Tensor, torch.Tensor]:
    """BatchNorm over a tensor given as active rows (N_a, C) plus background rows (P, C), each of which
    stands for `n_empty` identical cells: in training mode the batch statistics of all
    N_a + P * n_empty cells (and BatchNorm3d's running-statistics update), else the running ones."""
    if bn.training or not bn.track_running_stats:
        count = active.shape[0] + background.shape[0] * n_empty
        mean = (active.sum(0) + background.sum(0) * n_empty) / count
        var = (((active - mean) ** 2).sum(0) + ((background - mean) ** 2).sum(0) * n_empty) / count
        if bn.training and bn.track_running_stats:
            with torch.no_grad():
                bn.num_batches_tracked += 1
                momentum = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
                bn.running_mean.mul_(1 - momentum).add_(momentum * mean.detach())
                bn.running_var.mul_(1 - momentum).add_(momentum * var.detach() * count / max(count - 1, 1))
    else:
        mean, var = bn.running_mean, bn.running_var
    scale = torch.rsqrt(var + bn.eps)
    if bn.affine:
        return (active - mean) * scale * bn.weight + bn.bias, (background - mean) * scale * bn.weight + bn.bias
    return (active - mean) * scale, (background - mean) * scale


class RMAE(nn.Module):
    """R-MAE on packed LiDAR batches.

    in_channels: point channels; point_range, voxel_size: the grid (paper, KITTI: 0.05 x 0.05 x 0.1 m
    over OpenPCDet's [0, -40, -3, 70.4, 40, 1]); backbone: VoxelBackBone8x / VoxelResBackBone8x;
    mask_type "radial" with sector_deg, mask_ratio (0.8: 20% of the sectors kept), range_edges /
    range_keep_ratios (range-aware);
    decoder_channels: channels of the transposed-conv layers (each doubles the resolution);
    empty_ratio: sampled empty cells per occupied cell in the loss.
    """

    def __init__(self, in_channels: int, point_range: Sequence[float], voxel_size: Sequence[float],
                 max_points_per_voxel: int = 5, max_voxels: int = 40000, backbone: str = "VoxelBackBone8x",
                 mask_type: str = "radial", mask_ratio: float = 0.8, sector_deg: float = 1.0,
                 block_size: Sequence[int] = (8, 8), range_edges: Optional[Sequence[float]] = None,
                 range_keep_ratios: Optional[Sequence[float]] = None, decoder_channels: Sequence[int] = (64,),
                 empty_ratio: float = 1.0):
        super().__init__()
        self.grid = VoxelGrid(tuple(float(v) for v in point_range), tuple(float(v) for v in voxel_size))
        self.in_channels, self.max_points_per_voxel, self.max_voxels = in_channels, max_points_per_voxel, max_voxels
        self.masker = VoxelMasker(mask_type, mask_ratio, tuple(block_size), sector_deg,
                                  list(range_edges) if range_edges else None,
                                  list(range_keep_ratios) if range_keep_ratios else None)
        if backbone not in sparse_backbone_factories:
            raise ValueError(f"backbone must be one of {sorted(sparse_backbone_factories)}, got {backbone!r}")
        if not 0 <= len(decoder_channels) <= 3:
            raise ValueError(f"decoder_channels: 0 to 3 layers (stride 8 -> 1), got {list(decoder_channels)}")
        if empty_ratio < 0:
            raise ValueError(f"empty_ratio must be >= 0, got {empty_ratio}")
        self.empty_ratio = empty_ratio
        nx, ny, nz = self.grid.grid_size
        depth = sparse_conv_output_depth(nz)
        if depth < 1:
            raise ValueError(f"{backbone} needs a grid of at least 24 z layers; got nz={nz} from voxel_size "
                             f"{voxel_size} over {point_range}")

        self.vfe = MeanVFE(in_channels, self.grid.voxel_size, self.grid.point_range, centre_offset=False)
        self.backbone_3d = sparse_backbone_factories[backbone](in_channels, (nx, ny, nz))

        layers, c_in = [], self.backbone_3d.out_channels
        for c_out in decoder_channels:
            layers += [nn.ConvTranspose3d(c_in, c_out, kernel_size=2, stride=2, bias=False),
                       nn.BatchNorm3d(c_out, eps=1e-3, momentum=0.01), nn.ReLU(inplace=True)]
            c_in = c_out
        # The dense decoder's modules (parameter names as before); evaluated sparsely in forward_decoder.
        self.decoder = nn.Sequential(*layers)
        self.occupancy_head = nn.Conv3d(c_in, 1, kernel_size=1)
        self.decoder_channels = tuple(int(c) for c in decoder_channels)
        self.upsample = 2 ** len(decoder_channels)
        self.cell_stride_xy = 8 // self.upsample            # occupancy cell size in voxels (x, y)
        # Occupancy grid (W, H, D) = the encoder's output grid times the decoder's up-sampling.
        self.occupancy_grid = ((nx + 7) // 8 * self.upsample, (ny + 7) // 8 * self.upsample, depth * self.upsample)
        self.nz = nz

    # ------------------------------------------------------------------------------------------------
    def forward_encoder(self, features: torch.Tensor, coords: torch.Tensor, batch_size: int):
        """Visible voxels (N_vis, C), (N_vis, 4) -> SparseBackboneOutput at stride 8."""
        return self.backbone_3d(features, coords, batch_size)

    def forward_decoder(self, encoded) -> "DecodedOccupancy":
        """The occupancy decoder on the stride-8 sparse output; `occupancy_logits(decoded, cells)` reads
        logits at any cells of the occupancy grid: exactly what the dense decoder (transposed convs +
        BatchNorm in batch-statistics mode + ReLU + head over the whole grid) gives there, computed from
        the active stride-8 cells only.

        Why that is exact: a transposed conv with kernel 2 and stride 2 (no bias) maps every input cell
        to its own 2x2x2 children, child k = (dz, dy, dx) getting W[:, :, dz, dy, dx]^T x; so every
        output cell depends on one stride-8 cell and on its path of child offsets. A stride-8 cell the
        sparse encoder left empty is zero, and so are its children after the first conv; after
        BatchNorm + ReLU they are a constant per channel, and from then on every empty cell's
        descendants with the same offset path share one value. So each layer is carried as the
        active rows (M * 8^l, C) plus 8^l "background" rows, each standing for all B*D8*H8*W8 - M empty
        cells; BatchNorm's batch mean and variance are sums over both, weighted by those counts -- the
        statistics of the full dense tensor -- and the running statistics are updated as BatchNorm3d
        would update them."""
        sparse = encoded.encoded
        active = sparse.features                                                   # (M, C8)
        batch_size, (d8, h8, w8) = sparse.batch_size, sparse.spatial_shape
        n_empty = batch_size * d8 * h8 * w8 - active.shape[0]                      # empty stride-8 cells
        background = active.new_zeros(1, active.shape[1])
        for module in self.decoder:
            if isinstance(module, nn.ConvTranspose3d):
                # (C_in, C_out, 2, 2, 2) -> (C_in, 8 * C_out): row r of the input -> rows 8r..8r+7, child
                # k = dz * 4 + dy * 2 + dx.
                weight = module.weight.permute(0, 2, 3, 4, 1).reshape(module.in_channels, -1)
                active = (active @ weight).reshape(-1, module.out_channels)
                background = (background @ weight).reshape(-1, module.out_channels)
            elif isinstance(module, nn.BatchNorm3d):
                active, background = batch_norm_with_background(module, active, background, n_empty)
            else:
                active, background = module(active), module(background)
        head_w, head_b = self.occupancy_head.weight.flatten(1), self.occupancy_head.bias   # (1, C), (1,)
        active_logits = (active @ head_w.T + head_b).squeeze(1)                    # (M * 8^L,)
        background_logits = (background @ head_w.T + head_b).squeeze(1)           # (8^L,)
        row_of = torch.full((batch_size, d8, h8, w8), -1, dtype=torch.long, device=active.device)
        idx = sparse.indices.long()
        row_of[idx[:, 0], idx[:, 1], idx[:, 2], idx[:, 3]] = torch.arange(len(idx), device=active.device)
        return DecodedOccupancy(active_logits, background_logits, row_of)

    def occupancy_logits(self, decoded: "DecodedOccupancy", cells: torch.Tensor) -> torch.Tensor:
        """Logits (K,) at cells (K, 4) (batch, z, y, x) of the occupancy grid."""
        # Which row holds each cell: its stride-8 parent's active row (or the background) + its path.
        levels = len(self.decoder_channels)
        parent = cells.long().clone()
        parent[:, 1:] = parent[:, 1:] // self.upsample
        path = torch.zeros(len(cells), dtype=torch.long, device=cells.device)
        for level in range(levels):                                   # coarse to fine
            bit = levels - 1 - level
            child = (((cells[:, 1] >> bit) & 1) * 4 + ((cells[:, 2] >> bit) & 1) * 2 + ((cells[:, 3] >> bit) & 1))
            path = path * 8 + child.long()
        row = decoded.row_of[parent[:, 0], parent[:, 1], parent[:, 2], parent[:, 3]]
        per_row = 8 ** levels
        return torch.where(row >= 0, decoded.active_logits[row.clamp(min=0) * per_row + path],
                           decoded.background_logits[path])

    def occupancy_cells(self, coords: torch.Tensor) -> torch.Tensor:
        """Voxel coords (N, 4) (batch, z, y, x) -> unique occupied cells (M, 4) of the occupancy grid."""
        w, h, d = self.occupancy_grid
        z = (coords[:, 1].long() * d) // self.nz
        y = (coords[:, 2].long() // self.cell_stride_xy).clamp_max(h - 1)
        x = (coords[:, 3].long() // self.cell_stride_xy).clamp_max(w - 1)
        return torch.unique(torch.stack([coords[:, 0].long(), z, y, x], dim=1), dim=0)

    def forward_loss(self, occupied_logits: torch.Tensor, empty_logits: torch.Tensor) -> Dict[str, torch.Tensor]:
        """occupied_logits (M,) at the occupied cells, empty_logits (E,) at the sampled empty cells."""
        occupied = occupied_logits
        picked = torch.cat([occupied_logits, empty_logits]).float()
        labels = torch.cat([torch.ones(len(occupied_logits)), torch.zeros(len(empty_logits))]).to(picked)
        loss = F.binary_cross_entropy_with_logits(picked, labels)
        with torch.no_grad():
            predicted = picked > 0
            recall = (predicted[: len(occupied)].float().mean() if len(occupied) else picked.new_zeros(()))
            accuracy = (predicted == labels.bool()).float().mean()
        return {"loss": loss, "occupied_recall": recall, "occupancy_accuracy": accuracy}

    def forward(self, batch: dict, generator: Optional[torch.Generator] = None) -> Dict[str, torch.Tensor]:
        points, offsets, origins, generator = batch_inputs(batch, self.in_channels, generator)
        batch_size = offsets.numel() - 1

        vox = voxelize_points(points, offsets, self.grid, self.max_points_per_voxel, self.max_voxels)
        coords = vox.coords
        features = self.vfe(points, vox.point_to_voxel, coords)
        keep = self.masker(coords, self.grid.centres(coords), origins, generator)
        encoded = self.forward_encoder(features[keep], coords[keep], batch_size)
        decoded = self.forward_decoder(encoded)

        occupied = self.occupancy_cells(coords)
        n_occupied = torch.bincount(occupied[:, 0], minlength=batch_size)
        n_empty = torch.floor(n_occupied.double() * self.empty_ratio + 0.5).long()
        empty = sample_empty_voxels(occupied, batch_size, self.occupancy_grid, n_empty, generator, clamp=True).long()
        out = self.forward_loss(self.occupancy_logits(decoded, occupied), self.occupancy_logits(decoded, empty))
        out["mask_ratio_actual"] = (~keep).float().mean().detach() if keep.numel() else torch.tensor(0.0)
        out["vis"] = {"coords": coords, "keep": keep, "point_to_voxel": vox.point_to_voxel,
                      "decoded": DecodedOccupancy(*(t.detach() for t in decoded))}
        return out

    # ------------------------------------------------------------------------------------------------
    def cell_centres(self, cells: torch.Tensor) -> torch.Tensor:
        """(M, 3) (z, y, x) occupancy cells -> (M, 3) metric (x, y, z) centres."""
        w, h, d = self.occupancy_grid
        lo = torch.tensor(self.grid.point_range[:3])
        size_xy = torch.tensor(self.grid.voxel_size[:2]) * self.cell_stride_xy
        size_z = (self.grid.point_range[5] - self.grid.point_range[2]) / d
        c = cells.double().cpu()
        return torch.stack([lo[0] + (c[:, 2] + 0.5) * size_xy[0], lo[1] + (c[:, 1] + 0.5) * size_xy[1],
                            lo[2] + (c[:, 0] + 0.5) * size_z], dim=1).float()

    @torch.no_grad()
    def visualize(self, batch: dict, outputs: dict) -> Dict[str, np.ndarray]:
        """Bird's-eye views of the first sample: input, points of the visible (radially kept) voxels,
        and the predicted occupancy (cells with p > 0.5; red where no visible voxel was)."""
        vis = outputs["vis"]
        coords, keep = vis["coords"], vis["keep"]
        first = coords[:, 0] == 0
        points, visible_pts = first_sample_points(batch, vis["point_to_voxel"], keep)
        w, h, d = self.occupancy_grid
        grid = torch.stack(torch.meshgrid(torch.arange(d), torch.arange(h), torch.arange(w), indexing="ij"), -1)
        grid = grid.reshape(-1, 3).to(coords.device)                           # every cell of sample 0
        logits0 = self.occupancy_logits(vis["decoded"], torch.cat([torch.zeros_like(grid[:, :1]), grid], 1))
        cells = grid[logits0 > 0]                                              # (M, 3) (z, y, x)
        centres = self.cell_centres(cells).numpy()
        seen = self.occupancy_cells(coords[first & keep])[:, 1:].cpu()
        seen_key = set(map(tuple, seen.tolist()))
        is_seen = np.array([tuple(c) in seen_key for c in cells.cpu().tolist()], dtype=bool)
        colours = np.where(is_seen[:, None], np.array([[70, 140, 255]], np.uint8), np.array([[255, 70, 50]], np.uint8))
        ratio = float(keep[first].float().mean()) if bool(first.any()) else 0.0
        return {"occupancy": bev_picture([("input", points, None), (f"visible ({ratio:.0%} voxels)", visible_pts, None),
                                          ("occupancy p>0.5 (red: in masked area)", centres, colours.astype(np.uint8))],
                                         self.grid.point_range)}
