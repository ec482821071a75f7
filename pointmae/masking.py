"""Masking of voxels / tokens for masked autoencoders on LiDAR sweeps.

Every function here is pure: (coordinates, batch index, sensor origin, torch.Generator) -> keep mask.
The keep mask is a bool tensor of shape (N,), True = visible (fed to the encoder), False = masked
(to be reconstructed). Nothing reads global RNG state, so the same generator seed gives the same mask,
and masks can be computed in a data loader worker or on the GPU alike.

Batch layout: voxels of all samples are packed, ``batch_idx`` (N,) int gives the sample of each voxel.
Samples need not be sorted or contiguous.

Exact counts. "Keep ratio r" always means: in every group (a sample, or a sample's range bin) exactly
``kept_count(n, r) = clamp(floor(n * r + 0.5), 1, n)`` of its n units (voxels, blocks or non-empty
sectors) are kept, chosen uniformly without replacement. At least one unit stays visible so the
encoder never receives an empty sample.

Methods
-------
- ``random_mask``: uniform random voxel masking, as in MAE (He et al., CVPR 2022) and Voxel-MAE
  (Hess et al., "Masked Autoencoder for Self-Supervised Pre-Training on Lidar Point Clouds", WACV
  workshops 2023), which masks 70% of non-empty voxels.
- ``block_mask``: the grid is cut into cubes (or squares) of ``block_size`` cells, a fraction of the
  sample's non-empty blocks is kept whole. Masking contiguous regions makes reconstruction harder
  than independent voxels (neighbours cannot be copied).
- ``radial_mask``: R-MAE (Tayebati, Tulabandhula, Trivedi, "Sense Less, Generate More: Pre-training
  LiDAR Perception with Masked Autoencoders for Ultra-Efficient 3D Sensing", arXiv 2406.07833, 2024).
  The full 360 degrees around the sensor are cut into angular sectors of ``sector_deg``; per sample, a
  fraction ``keep_ratio`` of the sample's non-empty sectors is kept and every voxel in a masked sector
  is masked -- what a LiDAR that does not fire its laser in those directions would see. The paper's
  defaults are 1-degree sectors keeping 20% (10% on nuScenes).
  Range-aware variant: the sectors are further split by the horizontal distance to the sensor into
  range bins (``range_edges`` in metres) and each bin has its own keep ratio
  (``range_keep_ratios``), typically increasing with range, because far voxels are sparse and a
  masked far sector leaves almost nothing to learn from. (This per-bin exact-count formulation is
  ours; it has not been checked line by line against the paper's range-aware variant.)

  Differences from the published R-MAE code, deliberately: that code measures the angle of a voxel
  on integer grid indices (x, y) relative to the grid's corner (index 0, 0), not in metres relative
  to the sensor, so the "sectors" are rays fanning out from a corner of the scene and their metric
  width depends on the voxel size; and it draws the kept sectors once for the whole batch instead of
  per sample. Here angles are ``atan2(y - origin_y, x - origin_x)`` on metric voxel centres around
  each sample's own ``sensor_origin``, over the full circle, and each sample draws its own sectors.
- ``temporal``: T-MAE (Wei et al., "T-MAE: Temporal Masked Autoencoders for Point Cloud
  Representation Learning", ECCV 2024): two ego-motion aligned sweeps; the previous sweep stays fully
  visible, the current one is masked (75% random in the paper). ``mask_current_sweep`` takes any of
  the maskers above, so radial + temporal is one call.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import torch

__all__ = [
    "kept_count",
    "random_mask",
    "block_mask",
    "radial_sector_index",
    "radial_mask",
    "mask_current_sweep",
]


# --------------------------------------------------------------------------------------------------
# validation helpers: every error names the argument, what was expected and what was received
# --------------------------------------------------------------------------------------------------
def _check_ratio(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not 0.0 < value <= 1.0:
        raise ValueError(f"{name} must be a number in (0, 1], got {value!r}")
    return float(value)


def _check_batch_idx(batch_idx: torch.Tensor) -> torch.Tensor:
    if not isinstance(batch_idx, torch.Tensor):
        raise TypeError(f"batch_idx must be a torch.Tensor, got {type(batch_idx).__name__}")
    if batch_idx.dim() != 1:
        raise ValueError(f"batch_idx must have shape (N,), got shape {tuple(batch_idx.shape)}")
    if batch_idx.dtype.is_floating_point or batch_idx.dtype == torch.bool or batch_idx.is_complex():
        raise TypeError(f"batch_idx must be an integer tensor, got dtype {batch_idx.dtype}")
    if batch_idx.numel() and int(batch_idx.min()) < 0:
        raise ValueError(f"batch_idx must be non-negative, got min {int(batch_idx.min())}")
    return batch_idx.long()


def _check_generator(generator: torch.Generator) -> torch.Generator:
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    return generator


def _check_points(name: str, x: torch.Tensor, n: int, dims: Sequence[int], floating: bool) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 2 or x.shape[0] != n or x.shape[1] not in dims:
        want = " or ".join(f"({n}, {d})" for d in dims)
        raise ValueError(f"{name} must have shape {want} (one row per entry of batch_idx), got {tuple(x.shape)}")
    if floating and not x.dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if not floating and (x.dtype.is_floating_point or x.dtype == torch.bool):
        raise TypeError(f"{name} must be an integer tensor, got dtype {x.dtype}")
    if floating and x.numel() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} must be finite (no NaN/Inf)")


# --------------------------------------------------------------------------------------------------
# the one sampling primitive: keep exactly k_g of the members of every group, uniformly
# --------------------------------------------------------------------------------------------------
def kept_count(n: torch.Tensor, keep_ratio: float | torch.Tensor) -> torch.Tensor:
    """Number kept out of ``n`` at ``keep_ratio``: round half up, at least 1 when n > 0, at most n.

    n: (G,) int64 group sizes; keep_ratio: float or (G,) float. Returns (G,) int64.
    """
    k = torch.floor(n.to(torch.float64) * keep_ratio + 0.5).long()
    return torch.minimum(k.clamp_min(1), n) * (n > 0)


def _keep_exact_per_group(group: torch.Tensor, keep_per_group: torch.Tensor,
                          generator: torch.Generator) -> torch.Tensor:
    """Keep exactly ``keep_per_group[g]`` members of each group g, uniformly without replacement.

    group: (M,) int64 in [0, G); keep_per_group: (G,) int64. Returns keep (M,) bool.
    Method: draw a uniform key per member, sort members by (group, key) and keep the first k_g of each
    group: a uniformly random k_g-subset (all orderings of i.i.d. keys are equally likely).
    """
    m = group.numel()
    if m == 0:
        return torch.zeros(0, dtype=torch.bool, device=group.device)
    # Keys are drawn on the generator's device, then moved: the mask depends only on the seed, not on
    # where the voxels live.
    keys = torch.rand(m, generator=generator, device=generator.device).to(group.device)
    by_key = torch.argsort(keys)
    order = by_key[torch.argsort(group[by_key], stable=True)]  # (M,) sorted by group, then key
    sorted_group = group[order]
    group_size = torch.bincount(group, minlength=keep_per_group.numel())
    group_start = torch.cumsum(group_size, 0) - group_size  # (G,)
    rank = torch.arange(m, device=group.device) - group_start[sorted_group]  # rank within group
    keep = torch.empty(m, dtype=torch.bool, device=group.device)
    keep[order] = rank < keep_per_group[sorted_group]
    return keep


def _dense_ids(*keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of the stacked integer keys -> (dense id per row (M,), unique rows (U, K))."""
    stacked = torch.stack([k.long() for k in keys], dim=1)
    unique_rows, ids = torch.unique(stacked, dim=0, return_inverse=True)
    return ids, unique_rows


# --------------------------------------------------------------------------------------------------
# maskers
# --------------------------------------------------------------------------------------------------
def random_mask(batch_idx: torch.Tensor, keep_ratio: float, generator: torch.Generator) -> torch.Tensor:
    """Uniform random masking: every sample keeps exactly ``kept_count(n_b, keep_ratio)`` voxels.

    batch_idx: (N,) int sample of each voxel. Returns keep (N,) bool.
    """
    batch_idx = _check_batch_idx(batch_idx)
    keep_ratio = _check_ratio("keep_ratio", keep_ratio)
    _check_generator(generator)
    if batch_idx.numel() == 0:
        return torch.zeros(0, dtype=torch.bool, device=batch_idx.device)
    n_per_sample = torch.bincount(batch_idx)
    return _keep_exact_per_group(batch_idx, kept_count(n_per_sample, keep_ratio), generator)


def block_mask(coords: torch.Tensor, batch_idx: torch.Tensor, block_size: int | Sequence[int],
               keep_ratio: float, generator: torch.Generator) -> torch.Tensor:
    """Block masking: keep whole blocks of ``block_size`` grid cells.

    coords: (N, D) int grid indices of each voxel (any axis order, D = 2 for pillars/BEV or 3);
    batch_idx: (N,) int; block_size: cells per block edge, one int or one per axis of ``coords``.
    Every sample keeps exactly ``kept_count(#non-empty blocks, keep_ratio)`` of its non-empty blocks,
    and all voxels inside a kept block. Returns keep (N,) bool.
    """
    batch_idx = _check_batch_idx(batch_idx)
    _check_points("coords", coords, batch_idx.numel(), (2, 3), floating=False)
    keep_ratio = _check_ratio("keep_ratio", keep_ratio)
    _check_generator(generator)
    sizes = [block_size] * coords.shape[1] if isinstance(block_size, int) else list(block_size)
    if len(sizes) != coords.shape[1] or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in sizes):
        raise ValueError(f"block_size must be a positive int or {coords.shape[1]} positive ints "
                         f"(one per column of coords), got {block_size!r}")
    if batch_idx.numel() == 0:
        return torch.zeros(0, dtype=torch.bool, device=batch_idx.device)
    block_coords = torch.div(coords.long(), torch.tensor(sizes, device=coords.device), rounding_mode="floor")
    block_id, blocks = _dense_ids(batch_idx, *block_coords.unbind(1))  # blocks: (U, 1 + D), col 0 = sample
    block_sample = blocks[:, 0]
    keep_block = _keep_exact_per_group(block_sample, kept_count(torch.bincount(block_sample), keep_ratio),
                                       generator)
    return keep_block[block_id]


def radial_sector_index(xyz_centres: torch.Tensor, batch_idx: torch.Tensor, sensor_origin: torch.Tensor,
                        sector_deg: float) -> torch.Tensor:
    """Angular sector of each voxel around its sample's sensor, in [0, ceil(360 / sector_deg)).

    Sector s covers azimuths [s * sector_deg, (s + 1) * sector_deg) degrees, azimuth measured
    counter-clockwise from the +x axis in the horizontal (x, y) plane, in [0, 360).
    xyz_centres: (N, 3) float metric voxel centres; sensor_origin: (B, 3) float. Returns (N,) int64.
    """
    dx = xyz_centres[:, 0] - sensor_origin[batch_idx, 0]
    dy = xyz_centres[:, 1] - sensor_origin[batch_idx, 1]
    # Double precision so that points exactly on a sector boundary land on the same side on CPU and GPU.
    azimuth = torch.rad2deg(torch.atan2(dy.double(), dx.double())) % 360.0  # (N,) in [0, 360)
    n_sectors = math.ceil(360.0 / sector_deg)
    return torch.floor(azimuth / sector_deg).long().clamp_(0, n_sectors - 1)


def radial_mask(xyz_centres: torch.Tensor, batch_idx: torch.Tensor, sensor_origin: torch.Tensor,
                sector_deg: float, keep_ratio: float, generator: torch.Generator,
                range_edges: Optional[Sequence[float]] = None,
                range_keep_ratios: Optional[Sequence[float]] = None) -> torch.Tensor:
    """R-MAE radial masking around each sample's sensor (see the module docstring).

    xyz_centres: (N, 3) float metric voxel centres (the same frame as ``sensor_origin``);
    batch_idx: (N,) int; sensor_origin: (B, 3) float, row b = sensor position of sample b
    (B > max(batch_idx)); sector_deg: sector width in degrees, in (0, 360]; keep_ratio: fraction of a
    sample's non-empty sectors kept.
    Range-aware variant: ``range_edges`` (R,) increasing horizontal distances in metres split the
    range into R + 1 bins; ``range_keep_ratios`` (R + 1,) gives each bin's keep ratio and replaces
    ``keep_ratio``. A (sector, range bin) cell is then the unit, and each bin of each sample keeps
    exactly ``kept_count(#non-empty sectors in that bin, ratio of the bin)`` cells.
    Returns keep (N,) bool.
    """
    batch_idx = _check_batch_idx(batch_idx)
    n = batch_idx.numel()
    _check_points("xyz_centres", xyz_centres, n, (3,), floating=True)
    if not isinstance(sensor_origin, torch.Tensor) or sensor_origin.dim() != 2 or sensor_origin.shape[1] != 3:
        got = tuple(sensor_origin.shape) if isinstance(sensor_origin, torch.Tensor) else type(sensor_origin).__name__
        raise ValueError(f"sensor_origin must have shape (B, 3), got {got}")
    if not sensor_origin.dtype.is_floating_point or not bool(torch.isfinite(sensor_origin).all()):
        raise ValueError(f"sensor_origin must be a finite floating-point tensor, got dtype {sensor_origin.dtype}")
    if n and int(batch_idx.max()) >= sensor_origin.shape[0]:
        raise ValueError(f"sensor_origin has {sensor_origin.shape[0]} rows but batch_idx refers to sample "
                         f"{int(batch_idx.max())}: one origin per sample is needed")
    if isinstance(sector_deg, bool) or not isinstance(sector_deg, (int, float)) or not 0.0 < sector_deg <= 360.0:
        raise ValueError(f"sector_deg must be a number in (0, 360], got {sector_deg!r}")
    _check_generator(generator)
    if (range_edges is None) != (range_keep_ratios is None):
        raise ValueError("range_edges and range_keep_ratios must be given together (range-aware variant) "
                         f"or both left out, got range_edges={range_edges!r}, range_keep_ratios={range_keep_ratios!r}")
    if range_edges is None:
        keep_ratio = _check_ratio("keep_ratio", keep_ratio)
        bin_ratios = [keep_ratio]
        edges: list[float] = []
    else:
        edges = [float(e) for e in range_edges]
        if any(not math.isfinite(e) or e <= 0 for e in edges) or any(b <= a for a, b in zip(edges, edges[1:])):
            raise ValueError(f"range_edges must be strictly increasing positive distances in metres, got {range_edges!r}")
        bin_ratios = [_check_ratio("range_keep_ratios", r) for r in range_keep_ratios]
        if len(bin_ratios) != len(edges) + 1:
            raise ValueError(f"range_keep_ratios must have len(range_edges) + 1 = {len(edges) + 1} entries "
                             f"(one per range bin), got {len(bin_ratios)}")
    if n == 0:
        return torch.zeros(0, dtype=torch.bool, device=batch_idx.device)

    sector = radial_sector_index(xyz_centres, batch_idx, sensor_origin, float(sector_deg))  # (N,)
    horizontal_range = torch.hypot(xyz_centres[:, 0] - sensor_origin[batch_idx, 0],
                                   xyz_centres[:, 1] - sensor_origin[batch_idx, 1])
    range_bin = torch.bucketize(horizontal_range, torch.tensor(edges, dtype=horizontal_range.dtype,
                                                               device=horizontal_range.device), right=True)
    # A cell is a non-empty (sample, range bin, sector); the group that counts is (sample, range bin).
    cell_id, cells = _dense_ids(batch_idx, range_bin, sector)  # cells: (U, 3)
    group_of_cell, groups = _dense_ids(cells[:, 0], cells[:, 1])  # groups: (G, 2)
    ratio_of_group = torch.tensor(bin_ratios, dtype=torch.float64, device=groups.device)[groups[:, 1]]
    keep_cell = _keep_exact_per_group(group_of_cell, kept_count(torch.bincount(group_of_cell), ratio_of_group),
                                      generator)
    return keep_cell[cell_id]


def mask_current_sweep(is_current: torch.Tensor, batch_idx: torch.Tensor,
                       masker: Callable[..., torch.Tensor], **masker_args) -> torch.Tensor:
    """Temporal masking (T-MAE): previous-sweep voxels all visible, current-sweep voxels masked.

    is_current: (N,) bool, True for voxels of the current sweep (ego-motion aligned with the previous);
    batch_idx: (N,) int; masker: one of ``random_mask``, ``block_mask``, ``radial_mask``; masker_args:
    its other arguments, where per-voxel tensors (``coords``, ``xyz_centres``) are given for all N
    voxels. The masker sees only the current sweep, so its exact counts hold over the current sweep.
    Returns keep (N,) bool.
    """
    batch_idx = _check_batch_idx(batch_idx)
    if not isinstance(is_current, torch.Tensor) or is_current.dtype != torch.bool or is_current.shape != batch_idx.shape:
        got = (f"dtype {is_current.dtype}, shape {tuple(is_current.shape)}" if isinstance(is_current, torch.Tensor)
               else type(is_current).__name__)
        raise ValueError(f"is_current must be a bool tensor of shape {tuple(batch_idx.shape)}, got {got}")
    if not callable(masker):
        raise TypeError(f"masker must be a masking function such as random_mask, got {masker!r}")
    n = batch_idx.numel()
    current_args = {name: (value[is_current] if isinstance(value, torch.Tensor) and value.dim() >= 1
                           and value.shape[0] == n and name != "sensor_origin" else value)
                    for name, value in masker_args.items()}
    keep = torch.ones(n, dtype=torch.bool, device=batch_idx.device)
    keep[is_current] = masker(batch_idx=batch_idx[is_current], **current_args)
    return keep
