"""Voxel-MAE: masked autoencoding of voxelised LiDAR sweeps.

Hess, Jaxing, Svensson, Hagerman, Petersson, Svensson, "Masked Autoencoders for Self-Supervised
Learning on Automotive Point Clouds", arXiv 2207.00531 (2022); published as "Masked Autoencoder for
Self-Supervised Pre-Training on Lidar Point Clouds", WACV Workshops 2023.

The algorithm (read top to bottom like MAE's models_mae.py):
1. voxelise the sweep (`voxelize_points`: hard voxelization's limits, up to `max_points_per_voxel`
   points kept per voxel: the reconstruction target) and encode each voxel by the mean of its points
   (`vfe`, the shared MeanVFE without the centre offset);
2. mask 70% of the non-empty voxels (random by default; any `pointmae.masking` function by config);
3. `forward_encoder`: the backbone (`backbone_3d`) sees the VISIBLE voxels only -- an SST sparse
   window transformer over pillars as in the paper, or a SECOND-style sparse conv 8x encoder;
4. sample empty "fake" voxels (10% of the number of non-empty voxels, per sample) so that the
   occupancy head sees negatives;
   With `temporal=True` (temporal masking, T-MAE's idea; the batch then carries the previous sweep,
   data.num_previous: 1) the encoder also sees the whole previous sweep, ego-motion aligned and never
   masked, voxelised together with the visible current points: a masked cell can so hold previous-sweep
   points, never current ones. Radial + temporal = `mask_type: radial` + `temporal: true`;
5. `forward_decoder`: a light sparse window transformer over all encoded, masked and fake voxels;
   visible ones carry encoder features, the others a learned mask token; all get a positional
   embedding of their voxel centre;
6. `forward_loss`, on the masked voxels (the paper's three targets, weight 1 each):
   - Chamfer-L2 between K predicted points and the voxel's true points, both in coordinates
     normalised to the voxel ((p - centre) / voxel_size, so in [-0.5, 0.5]^3);
   - the number of points in the voxel (smooth L1; counted up to `max_points_per_voxel`, the paper's
     `max_num_gt_points` = 100);
   - occupied (masked) vs. empty (fake) voxel, binary cross-entropy.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pointmae.models.backbones.sparse_conv import sparse_backbone_factories
from pointmae.models.backbones.sst import SparseWindowBlock, SSTBackbone, run_window_blocks
from pointmae.models.lidar_voxels import (VoxelGrid, VoxelMasker, batch_inputs, bev_picture,
                                          first_sample_points, merge_sweeps, sample_empty_voxels, voxelize_points,
                                          without_stand_ins)
from pointmae.models.targets import voxel_point_targets
from pointmae.models.voxel_features import MeanVFE
from pointmae.ops import chamfer_loss_l2

__all__ = ["VoxelMAE", "sparse_conv_output_depth"]


def sparse_conv_output_depth(nz: int) -> int:
    """Height (z layers) of VoxelBackBone8x's output for a grid of nz layers (the sparse tensor has
    nz + 1): stages 2-3 pad z (d -> floor((d - 1) / 2) + 1), stage 4 and conv_out do not
    (d -> floor((d - 3) / 2) + 1)."""
    d = nz + 1
    for _ in range(2):
        d = (d - 1) // 2 + 1
    for _ in range(2):
        d = (d - 3) // 2 + 1
    return d


class VoxelMAE(nn.Module):
    """Voxel-MAE on packed LiDAR batches (pointmae/data/lidar_pretrain.py).

    in_channels: point channels C (x, y, z first); point_range, voxel_size: the voxel grid
    (paper, nuScenes: pillars 0.5 x 0.5 x 8 m over [-50, 50] x [-50, 50] x [-5, 3]);
    backbone: "sst" (embed_dim, depth, num_heads, window_shape), or "VoxelBackBone8x" /
    "VoxelResBackBone8x" (needs a 3D grid with at least 24 z layers, see sparse_conv_output_depth);
    decoder_*: the decoder's window transformer; num_pred_points: K points predicted per masked voxel;
    mask_type / mask_ratio / block_size / sector_deg / range_edges / range_keep_ratios: the masking
    (VoxelMasker; the range-aware radial variant replaces mask_ratio by per-range keep ratios); fake_voxel_ratio:
    empty voxels sampled per sample, as a fraction of its non-empty voxels; *_weight: loss weights;
    temporal: the previous sweep (batch["prev_points"]) joins the encoder input unmasked.
    """

    def __init__(self, in_channels: int, point_range: Sequence[float], voxel_size: Sequence[float],
                 max_points_per_voxel: int = 100, max_voxels: int = 60000, backbone: str = "sst",
                 embed_dim: int = 128, depth: int = 6, num_heads: int = 8, window_shape: Sequence[int] = (16, 16),
                 decoder_dim: int = 128, decoder_depth: int = 2, decoder_num_heads: int = 8,
                 num_pred_points: int = 16, mask_type: str = "random", mask_ratio: float = 0.7,
                 block_size: Sequence[int] = (4, 4), sector_deg: float = 1.0,
                 range_edges: Optional[Sequence[float]] = None, range_keep_ratios: Optional[Sequence[float]] = None,
                 fake_voxel_ratio: float = 0.1,
                 chamfer_weight: float = 1.0, count_weight: float = 1.0, occupancy_weight: float = 1.0,
                 drop_path_rate: float = 0.0, temporal: bool = False):
        super().__init__()
        if not 0.0 <= mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
        if fake_voxel_ratio < 0:
            raise ValueError(f"fake_voxel_ratio must be >= 0, got {fake_voxel_ratio}")
        self.grid = VoxelGrid(tuple(float(v) for v in point_range), tuple(float(v) for v in voxel_size))
        self.in_channels, self.max_points_per_voxel, self.max_voxels = in_channels, max_points_per_voxel, max_voxels
        self.mask_ratio, self.fake_voxel_ratio, self.num_pred_points = mask_ratio, fake_voxel_ratio, num_pred_points
        self.weights = {"chamfer": chamfer_weight, "count": count_weight, "occupancy": occupancy_weight}
        self.masker = VoxelMasker(mask_type, mask_ratio, tuple(block_size), sector_deg,
                                  list(range_edges) if range_edges else None,
                                  list(range_keep_ratios) if range_keep_ratios else None)
        self.backbone_name, self.temporal = backbone, temporal

        # --- encoder: voxel feature encoder + 3D backbone on visible voxels --------------------------
        self.vfe = MeanVFE(in_channels, self.grid.voxel_size, self.grid.point_range, centre_offset=False)
        nx, ny, nz = self.grid.grid_size
        if backbone == "sst":
            self.backbone_3d = SSTBackbone(in_channels, embed_dim, depth, num_heads, window_shape,
                                           drop_path_rate=drop_path_rate)
            self.decoder_embed = nn.Linear(embed_dim, decoder_dim)
        elif backbone in sparse_backbone_factories:
            out_depth = sparse_conv_output_depth(nz)
            if out_depth < 1:
                raise ValueError(f"backbone {backbone} needs a grid of at least 24 z layers (its output would have "
                                 f"{out_depth}); got nz={nz} from voxel_size {voxel_size} over {point_range}")
            self.backbone_3d = sparse_backbone_factories[backbone](in_channels, (nx, ny, nz))
            fine = self.backbone_3d.backbone_channels["x_conv1"]
            # A visible voxel gets its stride-1 features (x_conv1) plus the stride-8 cell it lies in;
            # a masked or fake voxel only the latter (the encoder never saw it).
            self.decoder_embed = nn.Linear(fine, decoder_dim)
            self.decoder_embed_coarse = nn.Linear(self.backbone_3d.out_channels * out_depth, decoder_dim)
        else:
            raise ValueError(f"backbone must be 'sst' or one of {sorted(sparse_backbone_factories)}, got {backbone!r}")

        # --- decoder ---------------------------------------------------------------------------------
        self.mask_token = nn.Parameter(torch.zeros(1, decoder_dim))
        self.decoder_pos_embed = nn.Sequential(nn.Linear(3, decoder_dim), nn.GELU(), nn.Linear(decoder_dim, decoder_dim))
        window = (int(window_shape[0]), int(window_shape[1]))
        self.decoder_blocks = nn.ModuleList(
            SparseWindowBlock(decoder_dim, decoder_num_heads, window, shifted=i % 2 == 1) for i in range(decoder_depth))
        self.decoder_norm = nn.LayerNorm(decoder_dim)
        self.points_head = nn.Linear(decoder_dim, 3 * num_pred_points)
        self.count_head = nn.Linear(decoder_dim, 1)
        self.occupancy_head = nn.Linear(decoder_dim, 1)
        self.initialize_weights()

    def initialize_weights(self):
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        for name, m in self.named_modules():
            if name.startswith("backbone_3d"):
                continue  # the backbones initialise themselves
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    # ------------------------------------------------------------------------------------------------
    def normalised_position(self, coords: torch.Tensor) -> torch.Tensor:
        """(N, 4) voxel coords -> (N, 3) voxel centre scaled to [0, 1] over the point range."""
        lo = torch.tensor(self.grid.point_range[:3], device=coords.device)
        extent = torch.tensor(self.grid.point_range[3:], device=coords.device) - lo
        return (self.grid.centres(coords) - lo) / extent

    def forward_encoder(self, features: torch.Tensor, coords: torch.Tensor, batch_size: int):
        """Visible voxels only. features (N_vis, C), coords (N_vis, 4) -> for SST (N_vis, embed_dim);
        for sparse conv the SparseBackboneOutput."""
        if self.backbone_name == "sst":
            return self.backbone_3d(features, coords)
        return self.backbone_3d(features, coords, batch_size)

    def decoder_tokens(self, encoded, visible_coords: torch.Tensor, hidden_coords: torch.Tensor) -> torch.Tensor:
        """Decoder input for [visible; hidden (masked + fake)] voxels -> (N_vis + N_hidden, decoder_dim)."""
        hidden = self.mask_token.expand(hidden_coords.shape[0], -1)
        if self.backbone_name == "sst":
            return torch.cat([self.decoder_embed(encoded), hidden])
        x_conv1 = encoded.multi_scale["x_conv1"]
        if not torch.equal(x_conv1.indices.long(), visible_coords.long()):
            raise RuntimeError("x_conv1 indices are not the input voxels in order (a submanifold conv changed them)")
        bev = encoded.dense_bev()                                              # (B, 128 * D8, H8, W8)
        all_coords = torch.cat([visible_coords, hidden_coords]).long()
        y8 = (all_coords[:, 2] // 8).clamp_max(bev.shape[2] - 1)
        x8 = (all_coords[:, 3] // 8).clamp_max(bev.shape[3] - 1)
        coarse = self.decoder_embed_coarse(bev[all_coords[:, 0], :, y8, x8])  # (N_all, decoder_dim)
        fine = torch.cat([self.decoder_embed(x_conv1.features), hidden])
        return fine + coarse

    def forward_decoder(self, tokens: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        """tokens (N, D), coords (N, 4) of every decoded voxel -> (N, D)."""
        x = tokens + self.decoder_pos_embed(self.normalised_position(coords))
        return self.decoder_norm(run_window_blocks(self.decoder_blocks, x, coords))

    def forward_loss(self, decoded_masked: torch.Tensor, decoded_fake: torch.Tensor, target_points: torch.Tensor,
                     target_offsets: torch.Tensor, target_counts: torch.Tensor) -> Dict[str, torch.Tensor]:
        """decoded_masked (M, D) for masked non-empty voxels with their targets; decoded_fake (F, D)."""
        m = decoded_masked.shape[0]
        # Losses in float32 whatever the autocast dtype (the Chamfer kernel takes float32 / float64).
        pred_points = self.points_head(decoded_masked).float().reshape(m * self.num_pred_points, 3)
        pred_counts = self.count_head(decoded_masked).float().squeeze(1)
        logits = self.occupancy_head(torch.cat([decoded_masked, decoded_fake])).float().squeeze(1)
        labels = torch.cat([torch.ones(m), torch.zeros(decoded_fake.shape[0])]).to(logits)
        if m:
            pred_offsets = torch.arange(m + 1, device=pred_points.device) * self.num_pred_points
            chamfer = chamfer_loss_l2(pred_points, pred_offsets, target_points, target_offsets)
            count = F.smooth_l1_loss(pred_counts, target_counts.to(pred_counts.dtype))
        else:  # nothing masked: zero terms that still touch the heads (DDP wants every parameter used)
            chamfer, count = pred_points.sum() * 0, pred_counts.sum() * 0
        occupancy = F.binary_cross_entropy_with_logits(logits, labels) if logits.numel() else logits.sum() * 0
        loss = (self.weights["chamfer"] * chamfer + self.weights["count"] * count
                + self.weights["occupancy"] * occupancy)
        return {"loss": loss, "loss_chamfer": chamfer.detach(), "loss_count": count.detach(),
                "loss_occupancy": occupancy.detach(), "pred_points": pred_points.detach()}

    def encoder_input(self, batch: dict, points: torch.Tensor, offsets: torch.Tensor, point_to_voxel: torch.Tensor,
                      features: torch.Tensor, coords: torch.Tensor, keep: torch.Tensor):
        """(features (N_enc, C), coords (N_enc, 4)) the encoder sees: the visible current voxels, or with
        `temporal` the voxels of the visible current points together with the whole previous sweep."""
        if not self.temporal:
            return features[keep], coords[keep]
        if "prev_points" not in batch:
            raise KeyError("VoxelMAE(temporal=True) needs batch['prev_points'] / ['prev_offsets'] "
                           "(data.num_previous: 1)")
        visible_points = (point_to_voxel >= 0) & keep[point_to_voxel.clamp(min=0)]        # (N,)
        sample_of = torch.repeat_interleave(torch.arange(offsets.numel() - 1, device=offsets.device), offsets.diff())
        counts = torch.bincount(sample_of[visible_points], minlength=offsets.numel() - 1)
        visible_offsets = torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])
        merged, merged_offsets = merge_sweeps(points[visible_points], visible_offsets, *without_stand_ins(batch))
        vox = voxelize_points(merged, merged_offsets, self.grid, self.max_points_per_voxel, self.max_voxels)
        return self.vfe(merged, vox.point_to_voxel, vox.coords), vox.coords

    def forward(self, batch: dict, generator: Optional[torch.Generator] = None) -> Dict[str, torch.Tensor]:
        """batch: the LiDAR batch (points (N, C), offsets (B+1,), optional origins (B, 3); with `temporal`
        also prev_points / prev_offsets)."""
        points, offsets, origins, generator = batch_inputs(batch, self.in_channels, generator)
        batch_size = offsets.numel() - 1

        vox = voxelize_points(points, offsets, self.grid, self.max_points_per_voxel, self.max_voxels)
        coords, point_to_voxel = vox.coords, vox.point_to_voxel                 # (V, 4) int32, (N,)
        features = self.vfe(points, point_to_voxel, coords)                     # (V, C)
        centres = self.grid.centres(coords)                                     # (V, 3)
        keep = self.masker(coords, centres, origins, generator)                 # (V,) True = visible
        counts = torch.bincount(coords[:, 0].long(), minlength=batch_size)
        fake = sample_empty_voxels(coords, batch_size, self.grid.grid_size,
                                   torch.floor(counts.double() * self.fake_voxel_ratio + 0.5).long(), generator,
                                   clamp=True)

        encoder_features, visible_coords = self.encoder_input(batch, points, offsets, point_to_voxel, features,
                                                              coords, keep)
        masked_coords = coords[~keep]
        encoded = self.forward_encoder(encoder_features, visible_coords, batch_size)
        hidden_coords = torch.cat([masked_coords, fake])
        tokens = self.decoder_tokens(encoded, visible_coords, hidden_coords)
        all_coords = torch.cat([visible_coords, hidden_coords])
        decoded = self.forward_decoder(tokens, all_coords)
        n_vis, n_masked = visible_coords.shape[0], masked_coords.shape[0]

        # Targets: the (at most max_points_per_voxel) points of each masked voxel, normalised to it.
        target_points, target_offsets = voxel_point_targets(points[:, :3], point_to_voxel,
                                                            torch.nonzero(~keep).squeeze(1), centres,
                                                            self.grid.voxel_size)
        out = self.forward_loss(decoded[n_vis:n_vis + n_masked], decoded[n_vis + n_masked:], target_points,
                                target_offsets, target_offsets.diff())
        out["vis"] = {"coords": coords, "keep": keep, "point_to_voxel": point_to_voxel, "fake": fake}
        out["mask_ratio_actual"] = (~keep).float().mean().detach() if keep.numel() else torch.tensor(0.0)
        return out

    # ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def visualize(self, batch: dict, outputs: dict) -> Dict[str, np.ndarray]:
        """Bird's-eye views of the first sample: input, visible voxels' points, and the reconstruction
        (visible points in blue, predicted points of masked voxels in red)."""
        vis = outputs["vis"]
        coords, keep = vis["coords"], vis["keep"]
        first = coords[:, 0] == 0
        points, visible_pts = first_sample_points(batch, vis["point_to_voxel"], keep)
        masked_all = ~keep
        k = self.num_pred_points
        pred = outputs["pred_points"].reshape(-1, k, 3)
        masked_first = first[masked_all]                                   # masked voxels of sample 0
        size = torch.tensor(self.grid.voxel_size, device=pred.device)
        centres = self.grid.centres(coords[masked_all][masked_first])
        predicted = (pred[masked_first] * size + centres[:, None]).reshape(-1, 3).float().cpu().numpy()
        blue, red = np.array([70, 140, 255], np.uint8), np.array([255, 70, 50], np.uint8)
        recon = np.concatenate([visible_pts, predicted])
        colours = np.concatenate([np.tile(blue, (len(visible_pts), 1)), np.tile(red, (len(predicted), 1))])
        ratio = float(keep[first].float().mean()) if bool(first.any()) else 0.0
        return {"reconstruction": bev_picture([("input", points, None), (f"visible ({ratio:.0%} voxels)", visible_pts, None),
                                               ("reconstruction (red: predicted)", recon, colours)],
                                              self.grid.point_range)}
