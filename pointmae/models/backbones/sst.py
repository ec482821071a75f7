"""Sparse window transformer, single stride (SST-style).

Fan et al., "Embracing Single Stride 3D Object Detector with Sparse Transformer", CVPR 2022: a LiDAR
sweep is voxelised into pillars on a bird's-eye-view grid, and a transformer works at that one
resolution (no down-sampling, so small objects keep their pixels). Attention is restricted to the
non-empty voxels of fixed BEV windows, and every other block shifts the windows by half a window
(Liu et al., "Swin Transformer", ICCV 2021) so that information crosses window borders. Voxel-MAE
(Hess et al., WACV-W 2023) pre-trains this backbone; in a masked autoencoder the encoder is given
the visible voxels only, which is just a smaller input here -- nothing is ever laid out densely.

How a block runs without a dense grid:
1. ``window_partition``: window id of every voxel = (sample, BEV window row, window column), with the
   grid shifted by half a window in shifted blocks; window-local coordinates feed a positional MLP.
2. ``group_by_window``: voxels are sorted by window; each window is padded to a bucketed length (the
   next power of two, at least ``min_bucket``), and windows of equal length are stacked into one
   (W_b, L_b, C) batch with a (W_b, L_b) validity mask. Buckets keep the padding below 2x while the
   number of kernel launches stays logarithmic in the largest window's size; no voxel is ever dropped
   (SST caps windows; we do not, so the output never depends on which voxels were cut).
3. attention with torch's ``scaled_dot_product_attention`` per bucket (padding masked as keys), then
   the valid rows are scattered back to the packed (N, C) layout.
The result is equivariant to the order of the input voxels and, for an unshifted block, a voxel's
output depends on the voxels of its own window only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import nn

from pointmae.layers.block import Block
from pointmae.models.backbones.voxel_inputs import check_voxel_inputs

__all__ = ["WindowGroups", "window_partition", "group_by_window", "SparseWindowBlock", "SSTBackbone",
           "run_window_blocks"]


def window_partition(coords: torch.Tensor, window_shape: tuple[int, int], shifted: bool
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Window of every voxel in the BEV plane.

    coords: (N, 4) int (batch, z, y, x); window_shape: (wy, wx) cells; shifted: move the window grid
    by half a window (cells (wy // 2, wx // 2) of the unshifted grid start a window).
    Returns window_id (N,) int64, dense ids in [0, n_windows), and local (N, 2) float: the voxel's
    (y, x) position inside its window scaled to [-1, 1).
    """
    wy, wx = window_shape
    shift = torch.tensor([wy // 2, wx // 2] if shifted else [0, 0], device=coords.device)
    size = torch.tensor([wy, wx], device=coords.device)
    yx = coords[:, 2:4].long() + shift  # (N, 2)
    window_yx = torch.div(yx, size, rounding_mode="floor")
    local = (yx - window_yx * size).float() / size.float() * 2 - 1
    # One int64 per (batch, window row, window col), increasing in that lexicographic order, so the
    # dense ids are those torch.unique(dim=0) of the (N, 3) rows would give; a 1-D unique is several
    # times faster than the row-wise one (which was ~9% of a T-MAE step on the CPU).
    rows = int(window_yx[:, 0].max()) + 1 if len(yx) else 1
    cols = int(window_yx[:, 1].max()) + 1 if len(yx) else 1
    key = (coords[:, 0].long() * rows + window_yx[:, 0]) * cols + window_yx[:, 1]
    _, window_id = torch.unique(key, return_inverse=True)
    return window_id, local


@dataclass
class WindowGroups:
    """Voxels of equally bucketed windows stacked together.

    index[i]: (W_i, L_i) int64 rows of the packed (N, C) input, -1 where padded; valid[i] = index >= 0.
    """
    index: list[torch.Tensor]
    valid: list[torch.Tensor]


def group_by_window(window_id: torch.Tensor, min_bucket: int = 16) -> WindowGroups:
    """Group voxel rows by window, padding each window to the next power of two >= its size."""
    n = window_id.numel()
    if n == 0:
        return WindowGroups([], [])
    counts = torch.bincount(window_id)  # (n_windows,)
    order = torch.argsort(window_id, stable=True)  # voxel rows sorted by window, input order inside
    sorted_window = window_id[order]
    start = torch.cumsum(counts, 0) - counts
    rank = torch.arange(n, device=window_id.device) - start[sorted_window]  # position inside window
    bucket = torch.clamp(counts, min=min_bucket)
    bucket = 2 ** torch.ceil(torch.log2(bucket.double())).long()  # (n_windows,) padded length
    groups = WindowGroups([], [])
    for length in torch.unique(bucket).tolist():
        windows = torch.nonzero(bucket == length).squeeze(1)  # (W_b,) window ids in this bucket
        slot = torch.full_like(counts, -1)
        slot[windows] = torch.arange(len(windows), device=window_id.device)
        in_bucket = slot[sorted_window] >= 0
        index = torch.full((len(windows), length), -1, dtype=torch.long, device=window_id.device)
        index[slot[sorted_window[in_bucket]], rank[in_bucket]] = order[in_bucket]
        groups.index.append(index)
        groups.valid.append(index >= 0)
    return groups


class SparseWindowBlock(nn.Module):
    """A pre-norm transformer block (pointmae.layers.Block) applied inside BEV windows.

    A window-local positional embedding (an MLP of the (y, x) position inside the window, SST's
    choice of relative-in-window coordinates) is added to the tokens before attention, as Point-MAE
    adds its positional embedding before every block.
    """

    def __init__(self, dim: int, num_heads: int, window_shape: tuple[int, int], shifted: bool,
                 mlp_ratio: float = 4.0, drop_path: float = 0.0, min_bucket: int = 16):
        super().__init__()
        self.window_shape = (int(window_shape[0]), int(window_shape[1]))
        self.shifted = shifted
        self.min_bucket = min_bucket
        self.pos_embed = nn.Sequential(nn.Linear(2, dim), nn.GELU(), nn.Linear(dim, dim))
        self.block = Block(dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=True, drop_path=drop_path)

    def layout(self, coords: torch.Tensor) -> tuple[torch.Tensor, WindowGroups]:
        """(local (N, 2), WindowGroups) of this block's window grid: the same for every block with the
        same grid over the same voxels, so a stack computes it once (run_window_blocks)."""
        window_id, local = window_partition(coords, self.window_shape, self.shifted)
        return local, group_by_window(window_id, self.min_bucket)

    def forward(self, x: torch.Tensor, coords: torch.Tensor,
                layout: Optional[tuple[torch.Tensor, WindowGroups]] = None) -> torch.Tensor:
        """x: (N, C) voxel features; coords: (N, 4) int (batch, z, y, x); layout: self.layout(coords)
        when the caller has it. Returns (N, C)."""
        local, groups = layout if layout is not None else self.layout(coords)
        tokens = x + self.pos_embed(local.to(x.dtype))  # (N, C)
        out = torch.empty_like(x)
        for index, valid in zip(groups.index, groups.valid):
            padded = tokens[index.clamp(min=0)]  # (W_b, L_b, C); padded rows repeat row 0, masked below
            attended = self.block(padded, attn_mask=valid)  # keys that are padding get no weight
            out[index[valid]] = attended[valid]
        return out


def run_window_blocks(blocks: Sequence[SparseWindowBlock], x: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """x through `blocks` in order over the same voxels; each distinct window grid (shape, shift,
    bucket) is partitioned and grouped once, not once per block."""
    layouts = {}
    for block in blocks:
        key = (block.window_shape, block.shifted, block.min_bucket)
        if key not in layouts:
            layouts[key] = block.layout(coords)
        x = block(x, coords, layouts[key])
    return x


class SSTBackbone(nn.Module):
    """Single-stride sparse window transformer over pillars: input projection, then ``depth`` blocks
    alternating unshifted / shifted windows. Output (N, dim) at the input resolution.

    in_channels: voxel feature channels; dim, depth, num_heads: transformer size; window_shape: (wy, wx)
    BEV cells per window (SST uses 12 x 12 on Waymo with 0.32 m pillars).
    """

    def __init__(self, in_channels: int, dim: int = 128, depth: int = 6, num_heads: int = 8,
                 window_shape: Sequence[int] = (12, 12), mlp_ratio: float = 4.0, drop_path_rate: float = 0.0):
        super().__init__()
        if len(window_shape) != 2 or any(int(w) < 1 for w in window_shape):
            raise ValueError(f"window_shape must be 2 positive ints (wy, wx), got {window_shape!r}")
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.in_channels = in_channels
        self.input_proj = nn.Sequential(nn.Linear(in_channels, dim), nn.LayerNorm(dim))
        rates = torch.linspace(0, drop_path_rate, depth).tolist()  # stochastic depth grows with depth
        self.blocks = nn.ModuleList(
            SparseWindowBlock(dim, num_heads, (int(window_shape[0]), int(window_shape[1])), shifted=i % 2 == 1,
                              mlp_ratio=mlp_ratio, drop_path=rates[i]) for i in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, voxel_features: torch.Tensor, voxel_coords: torch.Tensor) -> torch.Tensor:
        """voxel_features: (N, C_in); voxel_coords: (N, 4) int (batch, z, y, x). Returns (N, dim)."""
        check_voxel_inputs(voxel_features, voxel_coords, self.in_channels)
        x = run_window_blocks(self.blocks, self.input_proj(voxel_features), voxel_coords)
        return self.norm(x)
