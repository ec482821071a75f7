"""Parts shared by the LiDAR masked autoencoders (Voxel-MAE, R-MAE, T-MAE): the voxel grid, voxelization
with optional capacity limits, masking by config, empty ("fake") voxel sampling, and bird's-eye-view
pictures. The voxel feature encoder is `pointmae.models.voxel_features.MeanVFE`, the point targets
`pointmae.models.targets.voxel_point_targets`.

Voxel coordinates are int (batch, z, y, x) rows, as `pointmae.ops.voxelize` returns them and spconv
and the SST backbone take them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch

from pointmae import masking
from pointmae.models.targets import voxel_centres
from pointmae.ops import voxelize_dynamic
from pointmae.ops.voxelize import DynamicVoxels

__all__ = ["VoxelGrid", "VoxelMasker", "sample_empty_voxels", "voxelize_points", "bev_picture", "batch_inputs",
           "first_sample_points", "generator_from_global_rng", "merge_sweeps", "rank_in_group", "without_stand_ins"]


@dataclass(frozen=True)
class VoxelGrid:
    """A regular grid over `point_range` [x0, y0, z0, x1, y1, z1] with cells `voxel_size` [vx, vy, vz]."""
    point_range: tuple[float, float, float, float, float, float]
    voxel_size: tuple[float, float, float]

    def __post_init__(self):
        if len(self.point_range) != 6 or any(self.point_range[i] >= self.point_range[i + 3] for i in range(3)):
            raise ValueError(f"point_range must be [x0, y0, z0, x1, y1, z1] with x0 < x1 etc., got {self.point_range}")
        if len(self.voxel_size) != 3 or any(not v > 0 for v in self.voxel_size):
            raise ValueError(f"voxel_size must be 3 positive numbers, got {self.voxel_size}")

    @property
    def grid_size(self) -> tuple[int, int, int]:
        """(nx, ny, nz), rounded like pointmae.ops.voxelize does: half away from zero (Python's round()
        would round a .5 extent to even and disagree with the kernels)."""
        return tuple(int((self.point_range[i + 3] - self.point_range[i]) / self.voxel_size[i] + 0.5)
                     for i in range(3))

    def centres(self, coords: torch.Tensor) -> torch.Tensor:
        """coords (N, 4) int (batch, z, y, x) -> (N, 3) float32 metric (x, y, z) voxel centres."""
        return voxel_centres(coords, self.voxel_size, self.point_range)


def rank_in_group(group: torch.Tensor) -> torch.Tensor:
    """group (N,) int64 >= 0 -> (N,) int64: how many earlier rows (lower index) share each row's group."""
    order = torch.argsort(group, stable=True)
    counts = torch.bincount(group)
    start = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(group)
    rank[order] = torch.arange(group.numel(), device=group.device) - start[group[order]]
    return rank


def voxelize_points(points: torch.Tensor, offsets: torch.Tensor, grid: VoxelGrid,
                    max_points_per_voxel: Optional[int] = None, max_voxels: Optional[int] = None) -> DynamicVoxels:
    """Dynamic voxelization (pointmae.ops.voxelize_dynamic) of packed points (N, C) with offsets (B+1,),
    optionally with hard voxelization's capacity limits applied afterwards: a voxel keeps its first
    `max_points_per_voxel` points (input order), a sample its first `max_voxels` voxels (order of first
    appearance) -- the point sets and voxels that `pointmae.ops.voxelize` (VoxelNet / SECOND) keeps.
    Points beyond a limit get point_to_voxel -1. One voxelization for every LiDAR MAE: the features
    (MeanVFE) and the point targets are scatters over point_to_voxel."""
    vox = voxelize_dynamic(points[:, :3].contiguous(), offsets, grid.voxel_size, grid.point_range)
    p2v, coords, voxel_offsets = vox.point_to_voxel, vox.coords, vox.voxel_offsets
    if max_voxels is not None:
        sample = coords[:, 0].long()
        kept = torch.arange(coords.shape[0], device=coords.device) - voxel_offsets[sample] < max_voxels
        if not bool(kept.all()):
            new_index = torch.cumsum(kept.long(), 0) - 1
            p2v = torch.where(p2v >= 0, torch.where(kept[p2v.clamp(min=0)], new_index[p2v.clamp(min=0)], -1), -1)
            coords = coords[kept]
            counts = torch.bincount(coords[:, 0].long(), minlength=voxel_offsets.numel() - 1)
            voxel_offsets = torch.cat([voxel_offsets.new_zeros(1), torch.cumsum(counts, 0)])
    if max_points_per_voxel is not None:
        valid = p2v >= 0
        rank = torch.zeros_like(p2v)
        rank[valid] = rank_in_group(p2v[valid])
        p2v = torch.where(rank < max_points_per_voxel, p2v, -1)
    return DynamicVoxels(p2v, coords, voxel_offsets, vox.stats)


def generator_from_global_rng(device: torch.device) -> torch.Generator:
    """A generator seeded from torch's global RNG: the engine seeds that per rank and restores it on
    resume, so masks are reproducible without the models holding RNG state of their own."""
    generator = torch.Generator(device=device)
    generator.manual_seed(int(torch.randint(0, 2 ** 62, ()).item()))
    return generator


def batch_inputs(batch: dict, in_channels: int, generator: Optional[torch.Generator]):
    """What every LiDAR MAE's forward starts from: (points (N, C), offsets (B+1,), origins (B, 3): the
    sensor positions, (0, 0, 0) when the batch has no "origins", generator: the given one, or one seeded
    from torch's global RNG). points must have exactly `in_channels` columns (model.in_channels)."""
    points, offsets = batch["points"], batch["offsets"]
    if points.dim() != 2 or points.shape[1] != in_channels:
        raise ValueError(f"batch['points'] must be (N, {in_channels}) (model.in_channels), got {tuple(points.shape)}")
    origins = batch.get("origins")
    if origins is None:
        origins = torch.zeros(offsets.numel() - 1, 3, device=points.device)
    generator = generator if generator is not None else generator_from_global_rng(torch.device("cpu"))
    return points, offsets, origins, generator


def without_stand_ins(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch's previous sweeps (prev_points, prev_offsets), emptied for samples whose batch["has_prev"]
    is False: the data pipeline's stand-in there may be a copy of the current sweep (missing_previous:
    current), which would show the model the very points it must reconstruct."""
    prev_points, prev_offsets = batch["prev_points"], batch["prev_offsets"]
    has_prev = batch.get("has_prev")
    if has_prev is None or bool(has_prev.all()):
        return prev_points, prev_offsets
    counts = prev_offsets.diff()
    sample = torch.repeat_interleave(torch.arange(counts.numel(), device=counts.device), counts)
    keep = has_prev.to(prev_points.device)[sample]
    counts = counts * has_prev.to(counts.device)
    return prev_points[keep], torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])


def merge_sweeps(points_a: torch.Tensor, offsets_a: torch.Tensor, points_b: torch.Tensor,
                 offsets_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two packed batches of the same B samples -> one: sample b = [a's points of b; b's points of b].
    points_* (N_*, C), offsets_* (B+1,). Returns (points (N_a + N_b, C), offsets (B+1,))."""
    counts_a, counts_b = offsets_a.diff(), offsets_b.diff()
    samples = torch.arange(counts_a.numel(), device=points_a.device)
    sample_of = torch.cat([torch.repeat_interleave(samples, counts_a), torch.repeat_interleave(samples, counts_b)])
    order = torch.argsort(sample_of, stable=True)
    counts = counts_a + counts_b
    return torch.cat([points_a, points_b])[order], torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])


@dataclass
class VoxelMasker:
    """Masking chosen by config, over any `pointmae.masking` function.

    kind: "random" (MAE / Voxel-MAE), "block" (cubes / squares of `block_size` cells), "radial"
    (R-MAE: sectors of `sector_deg` around each sample's sensor; `range_edges` + `range_keep_ratios`
    for the range-aware variant); mask_ratio: fraction masked (the field name of every LiDAR MAE config;
    the masking functions take the kept fraction, 1 - mask_ratio).
    """
    kind: str = "random"
    mask_ratio: float = 0.7
    block_size: Sequence[int] = (4, 4)
    sector_deg: float = 1.0
    range_edges: Optional[Sequence[float]] = None
    range_keep_ratios: Optional[Sequence[float]] = None

    def __post_init__(self):
        if self.kind not in ("random", "block", "radial"):
            raise ValueError(f"mask_type must be 'random', 'block' or 'radial', got {self.kind!r}")
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {self.mask_ratio}")

    @property
    def keep_ratio(self) -> float:
        # Rounded so that e.g. mask_ratio 0.9 keeps exactly 0.1 (not 0.09999999999999998): kept counts
        # round half up, and a float hair below .5 would round down.
        return round(1.0 - self.mask_ratio, 12)

    def __call__(self, coords: torch.Tensor, centres: torch.Tensor, origins: torch.Tensor,
                 generator: torch.Generator) -> torch.Tensor:
        """coords (N, 4) int (batch, z, y, x); centres (N, 3) metric; origins (B, 3) sensor positions.
        Returns keep (N,) bool, True = visible."""
        batch_idx = coords[:, 0].long()
        if self.kind == "random":
            return masking.random_mask(batch_idx, self.keep_ratio, generator)
        if self.kind == "block":
            block = list(self.block_size)
            grid_coords = coords[:, 2:4] if len(block) == 2 else coords[:, 1:4]   # (y, x) or (z, y, x)
            return masking.block_mask(grid_coords.long(), batch_idx, block, self.keep_ratio, generator)
        return masking.radial_mask(centres, batch_idx, origins.to(centres.dtype), self.sector_deg,
                                   self.keep_ratio, generator, self.range_edges, self.range_keep_ratios)


def sample_empty_voxels(coords: torch.Tensor, batch_size: int, grid_size: Sequence[int], counts: torch.Tensor,
                        generator: torch.Generator, clamp: bool = False, max_rounds: int = 64) -> torch.Tensor:
    """Exactly counts[b] distinct EMPTY cells of sample b's grid, uniformly at random ("fake" voxels).

    coords: (N, 4) int (batch, z, y, x) of the non-empty voxels; grid_size (nx, ny, nz); counts (B,)
    int64. Cells are drawn uniformly with a generator on the CPU (the result depends on the seed only),
    occupied and repeated cells are rejected in draw order, and rounds continue until every sample has
    its count -- so the chosen set is a uniform random subset of the empty cells. Returns (sum(counts), 4)
    int32 (batch, z, y, x), samples in order. Asking for more than a sample's empty cells is a ValueError,
    or with clamp=True gives all of them (a tiny grid full of points).
    """
    nx, ny, nz = (int(g) for g in grid_size)
    cells = nx * ny * nz
    counts = counts.to("cpu", torch.int64)
    if counts.numel() != batch_size:
        raise ValueError(f"counts must have batch_size={batch_size} entries, got {counts.numel()}")
    coords_cpu = coords.to("cpu", torch.int64)
    out = []
    for b in range(batch_size):
        k = int(counts[b])
        mine = coords_cpu[coords_cpu[:, 0] == b]
        occupied = torch.unique((mine[:, 1] * ny + mine[:, 2]) * nx + mine[:, 3])   # linear (z, y, x) index
        if k > cells - occupied.numel() and clamp:
            k = cells - occupied.numel()
        elif k > cells - occupied.numel():
            raise ValueError(f"cannot sample {k} empty voxels in sample {b}: only {cells - occupied.numel()} "
                             f"of the grid's {cells} cells are empty")
        chosen = torch.zeros(0, dtype=torch.int64)
        n_empty = cells - occupied.numel()
        if n_empty < 4 * k + 64:
            # Nearly full grid: rejection would rarely hit, so list the empty cells and take a random
            # k-subset of them (a prefix of a uniform permutation).
            is_empty = torch.ones(cells, dtype=torch.bool)
            is_empty[occupied] = False
            empty_cells = torch.nonzero(is_empty).squeeze(1)
            chosen = empty_cells[torch.randperm(n_empty, generator=generator)[:k]]
        for _ in range(max_rounds):
            if chosen.numel() >= k:
                break
            draw = torch.randint(0, cells, (2 * (k - chosen.numel()) + 16,), generator=generator)
            fresh = draw[~torch.isin(draw, occupied) & ~torch.isin(draw, chosen)]
            # First occurrence of each cell, in draw order (uniqueness without re-sorting by value).
            values, inverse = torch.unique(fresh, return_inverse=True)
            first = torch.full((values.numel(),), fresh.numel(), dtype=torch.int64).scatter_reduce(
                0, inverse, torch.arange(fresh.numel()), reduce="amin")
            chosen = torch.cat([chosen, fresh[torch.sort(first).values]])[:k]
        if chosen.numel() < k:
            raise RuntimeError(f"empty voxel sampling did not converge in {max_rounds} rounds (sample {b})")
        z, rest = chosen // (ny * nx), chosen % (ny * nx)
        out.append(torch.stack([torch.full_like(z, b), z, rest // nx, rest % nx], dim=1))
    result = torch.cat(out) if out else torch.zeros(0, 4, dtype=torch.int64)
    return result.to(coords.device, torch.int32)


def bev_picture(panels: Sequence[tuple[str, np.ndarray, Optional[np.ndarray]]], point_range: Sequence[float],
                size: int = 320) -> np.ndarray:
    """Side-by-side bird's-eye views: panels of (title, points (N, >=3), colours (N, 3) uint8 or None
    for height colours), drawn over `point_range` at `size` pixels along the longer side."""
    from pointmae.viz.bev import render_bev
    from pointmae.viz.points3d import side_by_side
    x0, y0, _, x1, y1, _ = (float(v) for v in point_range)
    resolution = max(x1 - x0, y1 - y0) / size
    images, titles = [], []
    for title, points, colours in panels:
        if colours is None:
            image = np.asarray(render_bev(points, x_range=(x0, x1), y_range=(y0, y1), resolution=resolution))
        else:
            image = np.asarray(render_bev(np.zeros((0, 3)), x_range=(x0, x1), y_range=(y0, y1),
                                          resolution=resolution)).copy()
            rows = ((x1 - points[:, 0]) / resolution).astype(np.int64)
            cols = ((y1 - points[:, 1]) / resolution).astype(np.int64)
            inside = (rows >= 0) & (rows < image.shape[0]) & (cols >= 0) & (cols < image.shape[1])
            image[rows[inside], cols[inside]] = colours[inside]
        images.append(image)
        titles.append(title)
    return side_by_side(images, titles)


def first_sample_points(batch: dict, point_to_voxel: torch.Tensor, keep: torch.Tensor):
    """Sample 0's points (N_0, 3) and those of them in visible voxels, as numpy, for pictures.
    point_to_voxel (N,) over the batch's points (-1: dropped); keep (V,) True = visible voxel."""
    end = int(batch["offsets"][1])
    points = batch["points"][:end, :3]
    p2v = point_to_voxel[:end]
    visible = (p2v >= 0) & keep[p2v.clamp(min=0)]
    return points.float().cpu().numpy(), points[visible].float().cpu().numpy()

