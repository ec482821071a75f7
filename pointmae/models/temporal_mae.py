"""T-MAE (Wei, Karimi Nejadasl, Gevers, Oswald, "T-MAE: Temporal Masked Autoencoders for Point Cloud
Representation Learning", ECCV 2024, arXiv 2312.10217).

Two sweeps of one sequence are the input: a previous sweep, ego-motion aligned into the current
sweep's sensor frame, and the current sweep. The previous sweep is seen whole, the current one with
75% of its non-empty voxels masked. Both go through ONE encoder (a Siamese encoder: shared weights,
here the single-stride sparse window transformer of SST, `backbone_3d`); a windowed cross-attention
(WCA) module then lets every voxel of the current sweep -- the encoded visible ones and one shared
mask token per masked voxel -- (queries) attend to the voxels of the previous sweep (keys / values)
that lie in the same BEV window. A light decoder predicts a fixed number of points per masked voxel;
the loss is the Chamfer distance to the points that really fell into it. The pretext task the paper states: reconstruct
the current sweep from a full view of the previous sweep and a partial view of the current one -- the
ego-vehicle's motion shows the same objects from another angle, which single-sweep MAEs never see.

Laid out like the image MAE's models_mae.py (He et al., CVPR 2022): `forward_encoder`,
`forward_cross_attention`, `forward_decoder`, `forward_loss`. Mask tokens entering the WCA follow
SiamMAE's cross decoder (Gupta, Wu, Deng, Fei-Fei, "Siamese Masked Autoencoders", NeurIPS 2023), the
image-video design T-MAE builds on. Choices that are ours (the paper's code was not available to read):
pillars with a parameter-free mean VFE (`pointmae.models.voxel_features.MeanVFE`); a learned "null"
key in every window so that a query whose window holds no previous-sweep voxel attends to it instead
of to nothing (nn.MultiheadAttention's add_bias_kv, per window); a decoder of sparse window blocks
with a BEV position embedding; Chamfer-L2 in voxel-normalised coordinates (pointmae.models.targets).

Batch layout (DESIGN.md / the LiDAR contract): "points" (N, C) packed in the current sensor frame,
"offsets" (B+1,), "prev_points" (N', C) the previous sweep already transformed into the current
sensor frame, "prev_offsets" (B+1,), optional "origins" (B, 3) sensor positions (default 0).
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np
import torch
from torch import nn

from pointmae.layers.cross_attention import CrossBlock
from pointmae.layers.weight_init import init_linear_and_layernorm
from pointmae.models.backbones.sst import SparseWindowBlock, SSTBackbone, run_window_blocks, window_partition
from pointmae.models.lidar_voxels import (VoxelGrid, VoxelMasker, bev_picture, first_sample_points,
                                          generator_from_global_rng, voxelize_points, without_stand_ins)
from pointmae.models.targets import voxel_point_targets
from pointmae.models.voxel_features import MeanVFE
from pointmae.ops import chamfer_loss_l2

__all__ = ["window_pairs", "WindowCrossAttention", "TemporalMAE"]


# --------------------------------------------------------------------------------------------------
# windowed cross-attention
# --------------------------------------------------------------------------------------------------
def _bucket(counts: torch.Tensor, min_bucket: int) -> torch.Tensor:
    """Padded length of each window: the next power of two >= max(count, min_bucket)."""
    return 2 ** torch.ceil(torch.log2(counts.clamp(min=min_bucket).double())).long()


def _rows_of_windows(window_id: torch.Tensor, n_windows: int):
    """Rows sorted by window, plus each window's start in that order and its count."""
    order = torch.argsort(window_id, stable=True)
    counts = torch.bincount(window_id, minlength=n_windows)
    return order, torch.cumsum(counts, 0) - counts, counts


def _window_slots(order, start, counts, windows, length):
    """(W, length) rows of the windows ``windows``, -1 where padded."""
    j = torch.arange(length, device=order.device)
    valid = j < counts[windows, None]
    position = (start[windows, None] + j).clamp(max=max(order.numel() - 1, 0))
    return torch.where(valid, order[position] if order.numel() else position, torch.full_like(position, -1))


def window_pairs(query_coords: torch.Tensor, key_coords: torch.Tensor, window_shape: tuple[int, int],
                 shifted: bool, min_bucket: int = 16, extra_keys: int = 0):
    """Pair the query voxels and key voxels of every BEV window, without a dense grid.

    query_coords: (Nq, 4), key_coords: (Nk, 4) int (batch, z, y, x) on the same grid; a window is
    (sample, window row, window column) as in pointmae.models.backbones.sst.window_partition.
    Windows that hold queries are grouped by (padded query count, padded key count), both padded to
    powers of two (>= min_bucket) so that padding stays below 2x on both sides; ``extra_keys`` slots
    are reserved at the end of every key row (for the learned null key).
    Returns (query_local (Nq, 2), key_local (Nk, 2), groups): the window-local (y, x) positions in
    [-1, 1), and a list of (query_index (W, Lq), key_index (W, Lk)) int64 row tensors, -1 = padding.
    Every query row appears exactly once; keys of windows without queries are never used.
    """
    nq = query_coords.shape[0]
    window_id, local = window_partition(torch.cat([query_coords, key_coords]), window_shape, shifted)
    q_window, k_window = window_id[:nq], window_id[nq:]
    n_windows = int(window_id.max()) + 1 if window_id.numel() else 0
    q_order, q_start, q_count = _rows_of_windows(q_window, n_windows)
    k_order, k_start, k_count = _rows_of_windows(k_window, n_windows)
    has_query = torch.nonzero(q_count > 0).squeeze(1)
    q_len = _bucket(q_count[has_query], min_bucket)
    k_len = _bucket(k_count[has_query] + extra_keys, min_bucket)
    # One integer per (query length, key length) pair: 1-D unique is much faster than unique(dim=0).
    stride = int(k_len.max()) + 1 if k_len.numel() else 1
    pair, pair_of_window = torch.unique(q_len * stride + k_len, return_inverse=True)
    groups = []
    for p, code in enumerate(pair.tolist()):
        lq, lk = divmod(code, stride)
        windows = has_query[pair_of_window == p]
        groups.append((_window_slots(q_order, q_start, q_count, windows, lq),
                       _window_slots(k_order, k_start, k_count, windows, lk - extra_keys)))
    return local[:nq], local[nq:], groups


class WindowCrossAttention(nn.Module):
    """The WCA module of T-MAE: queries are current-sweep voxels, keys / values the previous-sweep voxels
    of the same BEV window (optionally with the window grid shifted by half a window).

    A window-local positional embedding (the same MLP for both sweeps, so a query and a key at the same
    place get the same embedding) is added to both before attention, as SST's blocks do. Every window
    also gets one learned null key/value, so queries with no previous-sweep voxel in their window have
    something to attend to (and get no information from the previous sweep). A query's output depends
    on its own features and on the keys of its own window only.
    """

    def __init__(self, dim: int, num_heads: int, window_shape: Sequence[int], shifted: bool = False,
                 mlp_ratio: float = 4.0, drop_path: float = 0.0, min_bucket: int = 16):
        super().__init__()
        self.window_shape = (int(window_shape[0]), int(window_shape[1]))
        self.shifted, self.min_bucket = shifted, min_bucket
        self.pos_embed = nn.Sequential(nn.Linear(2, dim), nn.GELU(), nn.Linear(dim, dim))
        self.null_key = nn.Parameter(torch.zeros(1, 1, dim))
        self.block = CrossBlock(dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=True, drop_path=drop_path)

    def forward(self, x: torch.Tensor, coords: torch.Tensor, context: torch.Tensor,
                context_coords: torch.Tensor) -> torch.Tensor:
        """x: (Nq, C) current-sweep voxel features, coords (Nq, 4); context: (Nk, C) previous-sweep voxel
        features, context_coords (Nk, 4); both int (batch, z, y, x) on one grid. Returns (Nq, C)."""
        q_local, k_local, groups = window_pairs(coords, context_coords, self.window_shape, self.shifted,
                                                self.min_bucket, extra_keys=1)
        queries = x + self.pos_embed(q_local.to(x.dtype))              # (Nq, C)
        keys = context + self.pos_embed(k_local.to(context.dtype))     # (Nk, C)
        keys = torch.cat([keys, keys.new_zeros(1, keys.shape[1])])     # row Nk: a zero row for padding
        out = torch.empty_like(x)
        for q_index, k_index in groups:
            w = q_index.shape[0]
            q_valid = q_index >= 0
            window_keys = keys[torch.where(k_index >= 0, k_index, keys.shape[0] - 1)]      # (W, Lk - 1, C)
            window_keys = torch.cat([window_keys, self.null_key.expand(w, 1, -1).to(keys.dtype)], 1)
            key_mask = torch.cat([k_index >= 0, k_index.new_ones(w, 1, dtype=torch.bool)], 1)  # (W, Lk)
            attended = self.block(queries[q_index.clamp(min=0)], window_keys, key_mask)       # (W, Lq, C)
            out[q_index[q_valid]] = attended[q_valid]
        return out


# --------------------------------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------------------------------
class TemporalMAE(nn.Module):
    """T-MAE pre-training model. forward(batch) -> {"loss", ...}; see the module docstring.

    point_range [x0, y0, z0, x1, y1, z1] and voxel_size [vx, vy, vz] define the grid (pillars when vz
    spans the whole height, as in SST); num_point_features: leading point channels used (x, y, z, ...);
    embed_dim / depth / num_heads / window_shape: the shared SST encoder; cross_depth: WCA layers
    (alternately unshifted / shifted windows); decoder_*: the sparse window decoder; points_per_voxel:
    K points predicted per masked voxel; mask_ratio: fraction of the current sweep's non-empty voxels
    masked; mask_type: "random" (the paper's), "radial" (R-MAE sectors of sector_deg around the sensor;
    range_edges + range_keep_ratios for the range-aware variant) or "block" (BEV blocks of block_size
    cells) -- the same VoxelMasker as Voxel-MAE and R-MAE, applied to the current sweep only (temporal
    masking: the previous sweep is never masked), so radial + temporal is `mask_type: radial`.
    """

    def __init__(self, point_range: Sequence[float], voxel_size: Sequence[float], num_point_features: int = 4,
                 embed_dim: int = 128, depth: int = 6, num_heads: int = 8, window_shape: Sequence[int] = (12, 12),
                 cross_depth: int = 1, decoder_dim: int = 128, decoder_depth: int = 2, decoder_num_heads: int = 8,
                 points_per_voxel: int = 16, mlp_ratio: float = 4.0, drop_path_rate: float = 0.0,
                 mask_ratio: float = 0.75, mask_type: str = "random", sector_deg: float = 1.0,
                 block_size: Sequence[int] = (4, 4), range_edges: Optional[Sequence[float]] = None,
                 range_keep_ratios: Optional[Sequence[float]] = None):
        super().__init__()
        self.grid = VoxelGrid(tuple(float(v) for v in point_range), tuple(float(v) for v in voxel_size))
        if not 0.0 < mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in (0, 1), got {mask_ratio}")
        if cross_depth < 1 or points_per_voxel < 1:
            raise ValueError(f"cross_depth and points_per_voxel must be >= 1, got {cross_depth}, {points_per_voxel}")
        self.point_range, self.voxel_size = list(self.grid.point_range), list(self.grid.voxel_size)
        self.mask_ratio = float(mask_ratio)
        self.masker = VoxelMasker(mask_type, mask_ratio, tuple(block_size), sector_deg,
                                  list(range_edges) if range_edges else None,
                                  list(range_keep_ratios) if range_keep_ratios else None)
        self.points_per_voxel = int(points_per_voxel)
        window_shape = (int(window_shape[0]), int(window_shape[1]))

        # Siamese encoder: one voxel feature encoder and one backbone, applied to both sweeps.
        self.vfe = MeanVFE(num_point_features, self.voxel_size, self.point_range)
        self.backbone_3d = SSTBackbone(self.vfe.out_channels, embed_dim, depth, num_heads, window_shape,
                                       mlp_ratio, drop_path_rate)
        # WCA: current-sweep queries, previous-sweep keys / values, inside windows.
        self.cross_attention = nn.ModuleList(
            WindowCrossAttention(embed_dim, num_heads, window_shape, shifted=i % 2 == 1, mlp_ratio=mlp_ratio)
            for i in range(cross_depth))
        self.cross_norm = nn.LayerNorm(embed_dim)

        # One shared mask token per masked voxel; it enters the WCA with the visible tokens.
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))
        # Decoder: sparse window blocks over all current voxels.
        self.decoder_embed = nn.Linear(embed_dim, decoder_dim)
        # BEV position of the voxel (normalised to the range): the window blocks only know positions
        # inside their window, and the point layout of a pillar depends on its distance to the sensor.
        self.decoder_pos_embed = nn.Sequential(nn.Linear(2, decoder_dim), nn.GELU(), nn.Linear(decoder_dim, decoder_dim))
        self.decoder_blocks = nn.ModuleList(
            SparseWindowBlock(decoder_dim, decoder_num_heads, window_shape, shifted=i % 2 == 1, mlp_ratio=mlp_ratio)
            for i in range(decoder_depth))
        self.decoder_norm = nn.LayerNorm(decoder_dim)
        self.decoder_pred = nn.Linear(decoder_dim, 3 * self.points_per_voxel)  # token -> K points (voxel units)
        self.initialize_weights()

    def initialize_weights(self):
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        for module in self.cross_attention:
            nn.init.trunc_normal_(module.null_key, std=0.02)
        init_linear_and_layernorm(self)

    # ---------------------------------------------------------------------------------------------
    # data -> voxels -> mask
    # ---------------------------------------------------------------------------------------------
    def voxelize(self, points: torch.Tensor, offsets: torch.Tensor):
        """points (N, C) packed, offsets (B+1,) -> (features (V, C_vfe), coords (V, 4) int32, point_to_voxel (N,))."""
        if points.dim() != 2 or points.shape[1] < self.vfe.num_point_features:
            raise ValueError(f"points must have shape (N, >= {self.vfe.num_point_features}), got {tuple(points.shape)}")
        vox = voxelize_points(points, offsets, self.grid)
        return self.vfe(points, vox.point_to_voxel, vox.coords), vox.coords, vox.point_to_voxel

    def make_mask(self, coords: torch.Tensor, origins: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Temporal masking: the previous sweep is never masked, the current sweep's voxels coords (V, 4)
        by the configured masker (origins (B, 3) sensor positions). Returns keep (V,) bool."""
        return self.masker(coords, self.grid.centres(coords), origins, generator)

    # ---------------------------------------------------------------------------------------------
    # encoder / decoder / loss
    # ---------------------------------------------------------------------------------------------
    def forward_encoder(self, feats_vis, coords_vis, prev_feats, prev_coords, batch_size: int):
        """Siamese encoder. feats_vis (V_vis, C_vfe), coords_vis (V_vis, 4): visible current voxels;
        prev_feats (V', C_vfe), prev_coords (V', 4): the whole previous sweep.
        Returns (latent (V_vis, D) visible current tokens, prev_latent (V', D) previous-sweep tokens)."""
        # One backbone pass over both sweeps: previous-sweep samples get batch ids B..2B-1, so windows
        # never mix the two sweeps -- the same result as two passes with shared weights.
        prev_coords_shifted = prev_coords.clone()
        prev_coords_shifted[:, 0] += batch_size
        tokens = self.backbone_3d(torch.cat([feats_vis, prev_feats]), torch.cat([coords_vis, prev_coords_shifted]))
        return tokens[:len(feats_vis)], tokens[len(feats_vis):]              # (V_vis, D), (V', D)

    def forward_cross_attention(self, latent, coords_vis, coords_masked, prev_latent, prev_coords):
        """WCA. Every voxel of the current sweep -- the encoded visible ones and, as in SiamMAE's cross
        decoder (Gupta et al., NeurIPS 2023), one shared mask token per masked voxel -- queries the
        previous sweep's voxels of its window. A masked voxel can so read the previous sweep at its own
        place, which is where the temporal information is. latent (V_vis, D); coords_vis (V_vis, 4);
        coords_masked (M, 4); prev_latent (V', D); prev_coords (V', 4).
        Returns (V_vis + M, D): visible rows first, then masked rows."""
        x = torch.cat([latent, self.mask_token.expand(len(coords_masked), -1)])  # (V_vis + M, D)
        coords = torch.cat([coords_vis, coords_masked])
        for wca in self.cross_attention:
            x = wca(x, coords, prev_latent, prev_coords)                      # queries: current; keys: previous
        return self.cross_norm(x)

    def forward_decoder(self, fused, coords_vis, coords_masked):
        """fused (V_vis + M, D) from forward_cross_attention, coords_vis (V_vis, 4), coords_masked (M, 4)
        -> pred (M, K, 3) points of the masked voxels, relative to their voxel centre in voxel units."""
        x = self.decoder_embed(fused)                                          # (V, D_dec)
        coords = torch.cat([coords_vis, coords_masked])
        centres = self.grid.centres(coords)[:, :2]
        lower = centres.new_tensor(self.point_range[:2])
        extent = centres.new_tensor([self.point_range[3] - self.point_range[0], self.point_range[4] - self.point_range[1]])
        x = x + self.decoder_pos_embed((centres - lower) / extent * 2 - 1)
        x = run_window_blocks(self.decoder_blocks, x, coords)
        x = self.decoder_norm(x[len(coords_vis):])                           # (M, D_dec)
        return self.decoder_pred(x).reshape(-1, self.points_per_voxel, 3)    # (M, K, 3)

    def forward_loss(self, pred, targets, target_offsets):
        """Chamfer-L2 between the K predicted points and the true points of every masked voxel, averaged
        over masked voxels. pred (M, K, 3); targets (T, 3) packed with target_offsets (M + 1,)."""
        m, k, _ = pred.shape
        pred_offsets = torch.arange(m + 1, device=pred.device) * k
        return chamfer_loss_l2(pred.reshape(-1, 3).contiguous(), pred_offsets, targets.contiguous(), target_offsets)

    def forward(self, batch: dict, generator: Optional[torch.Generator] = None) -> Dict[str, torch.Tensor]:
        for key in ("points", "offsets", "prev_points", "prev_offsets"):
            if key not in batch:
                raise KeyError(f"TemporalMAE needs batch[{key!r}] (the LiDAR batch with the previous sweep; "
                               f"got keys {sorted(batch)})")
        points, offsets = batch["points"], batch["offsets"]
        batch_size = offsets.numel() - 1
        if batch["prev_offsets"].numel() - 1 != batch_size:
            raise ValueError(f"prev_offsets describes {batch['prev_offsets'].numel() - 1} samples, offsets {batch_size}")
        origins = batch.get("origins")
        if origins is None:
            origins = points.new_zeros(batch_size, 3)
        if generator is None:  # draw the masking seed from the global RNG, so seed_everything fixes it
            generator = generator_from_global_rng(torch.device("cpu"))

        prev_points, prev_offsets = without_stand_ins(batch)
        feats, coords, point_to_voxel = self.voxelize(points, offsets)                    # (V, C_vfe), (V, 4)
        prev_feats, prev_coords, _ = self.voxelize(prev_points, prev_offsets)             # (V', ...)
        keep = self.make_mask(coords, origins, generator)                                  # (V,) True = visible
        visible, masked = torch.nonzero(keep).squeeze(1), torch.nonzero(~keep).squeeze(1)
        if masked.numel() == 0:
            raise ValueError("TemporalMAE: no voxel of the current sweep was masked (is every sample a single voxel?)")
        targets, target_offsets = voxel_point_targets(points[:, :3], point_to_voxel, masked, self.grid.centres(coords),
                                                      self.voxel_size)

        latent, prev_latent = self.forward_encoder(feats[visible], coords[visible], prev_feats, prev_coords, batch_size)
        fused = self.forward_cross_attention(latent, coords[visible], coords[masked], prev_latent, prev_coords)
        pred = self.forward_decoder(fused, coords[visible], coords[masked])
        loss = self.forward_loss(pred, targets, target_offsets)
        return {"loss": loss, "pred": pred, "keep": keep, "coords": coords, "masked": masked,
                "point_to_voxel": point_to_voxel,
                "num_visible": torch.tensor(float(visible.numel())), "num_masked": torch.tensor(float(masked.numel()))}

    # ---------------------------------------------------------------------------------------------
    # pictures
    # ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def visualize(self, batch, outputs) -> Dict[str, np.ndarray]:
        """Bird's-eye views of the first sample: previous sweep (aligned), current sweep, its visible
        voxels' points, and visible points (blue) + predicted points of the masked voxels (red)."""
        current, visible_points = first_sample_points(batch, outputs["point_to_voxel"], outputs["keep"])
        previous = batch["prev_points"][:int(batch["prev_offsets"][1]), :3].float().cpu().numpy()
        coords, masked = outputs["coords"], outputs["masked"]
        first = (coords[masked, 0] == 0).cpu()
        centres = self.grid.centres(coords[masked][first])
        size = centres.new_tensor(self.voxel_size)
        predicted = (outputs["pred"][first.to(outputs["pred"].device)].float() * size + centres[:, None])
        predicted = predicted.reshape(-1, 3).cpu().numpy()
        blue, red = np.array([70, 140, 255], np.uint8), np.array([255, 70, 50], np.uint8)
        colours = np.concatenate([np.tile(blue, (len(visible_points), 1)), np.tile(red, (len(predicted), 1))])
        return {"t_mae_bev": bev_picture([("previous (aligned)", previous, None), ("current", current, None),
                                          (f"visible ({1 - self.mask_ratio:.0%} of voxels)", visible_points, None),
                                          ("visible + predicted (red)", np.concatenate([visible_points, predicted]),
                                           colours)], self.point_range)}

