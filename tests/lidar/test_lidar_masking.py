"""Masking: exact counts, geometry around the sensor, statistics over seeds, determinism, errors."""
import math

import pytest
import torch

from pointmae.masking import (block_mask, kept_count, mask_current_sweep, radial_mask, radial_sector_index,
                              random_mask)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def ring_scene(n_per_sample=(400, 250, 90), origins=((0.0, 0.0, 1.8), (30.0, -12.0, 1.6), (-5.0, 40.0, 2.0)),
               seed=0):
    """Points scattered around each sample's own sensor at 2-60 m, in any direction; samples interleaved."""
    g = gen(seed)
    xyz, batch = [], []
    for b, (n, o) in enumerate(zip(n_per_sample, origins)):
        r = 2 + 58 * torch.rand(n, generator=g, dtype=torch.float64)
        a = 2 * math.pi * torch.rand(n, generator=g, dtype=torch.float64)
        z = torch.rand(n, generator=g, dtype=torch.float64) * 3 - 1
        xyz.append(torch.stack([o[0] + r * torch.cos(a), o[1] + r * torch.sin(a), z], 1))
        batch.append(torch.full((n,), b))
    xyz, batch = torch.cat(xyz).float(), torch.cat(batch)
    perm = torch.randperm(len(batch), generator=g)  # samples need not be contiguous
    return xyz[perm], batch[perm], torch.tensor(origins, dtype=torch.float32)


# ------------------------------------------------------------------ counts
def test_kept_count_rounding_and_bounds():
    n = torch.tensor([0, 1, 2, 3, 10, 11, 1000])
    assert kept_count(n, 0.3).tolist() == [0, 1, 1, 1, 3, 3, 300]
    assert kept_count(n, 1.0).tolist() == n.tolist()
    assert kept_count(torch.tensor([5]), 0.5).tolist() == [3]  # half rounds up


@pytest.mark.parametrize("keep_ratio", [0.01, 0.25, 0.3, 0.7, 1.0])
def test_random_mask_exact_count_per_sample(keep_ratio):
    batch = torch.tensor([2] * 7 + [0] * 100 + [3] * 1 + [0] * 33)  # sample 1 is empty
    keep = random_mask(batch, keep_ratio, gen(1))
    assert keep.dtype == torch.bool and keep.shape == batch.shape
    n = torch.bincount(batch, minlength=4)
    assert torch.equal(torch.bincount(batch[keep], minlength=4), kept_count(n, keep_ratio))


def test_block_mask_keeps_whole_blocks_and_exact_block_count():
    g = gen(3)
    coords = torch.randint(0, 40, (600, 3), generator=g, dtype=torch.int32)
    batch = torch.randint(0, 3, (600,), generator=g)
    keep = block_mask(coords, batch, (4, 8, 8), 0.4, gen(5))
    block = torch.cat([batch[:, None], coords.long() // torch.tensor([4, 8, 8])], 1)
    ids, inverse = torch.unique(block, dim=0, return_inverse=True)
    # every block is all kept or all masked
    kept_frac = torch.zeros(len(ids)).index_add_(0, inverse, keep.float()) / torch.bincount(inverse).float()
    assert torch.all((kept_frac == 0) | (kept_frac == 1))
    for b in range(3):
        in_b = ids[:, 0] == b
        assert int((kept_frac[in_b] == 1).sum()) == int(kept_count(in_b.sum()[None], 0.4))


# ------------------------------------------------------------------ radial geometry
def test_radial_kept_voxels_lie_in_kept_sectors_around_the_given_origin():
    xyz, batch, origin = ring_scene()
    sector_deg, keep_ratio = 10.0, 0.2
    keep = radial_mask(xyz, batch, origin, sector_deg, keep_ratio, gen(7))
    # independent azimuth computation around each sample's own origin
    d = xyz[:, :2].double() - origin[batch, :2].double()
    sector = (torch.rad2deg(torch.atan2(d[:, 1], d[:, 0])) % 360 // sector_deg).long()
    for b in range(3):
        sb, kb = sector[batch == b], keep[batch == b]
        kept_sectors = set(sb[kb].tolist())
        masked_sectors = set(sb[~kb].tolist())
        assert not kept_sectors & masked_sectors  # a sector is kept or masked as a whole
        n_nonempty = len(set(sb.tolist()))
        assert len(kept_sectors) == int(kept_count(torch.tensor([n_nonempty]), keep_ratio))


def test_moving_the_origin_moves_the_sectors():
    xyz, batch, origin = ring_scene(n_per_sample=(300,), origins=((0.0, 0.0, 0.0),))
    shift = torch.tensor([[17.0, -9.0, 0.5]])
    keep = radial_mask(xyz, batch, origin, 5.0, 0.3, gen(11))
    keep_moved = radial_mask(xyz + shift, batch, origin + shift, 5.0, 0.3, gen(11))
    assert torch.equal(keep, keep_moved)  # rigid translation of scene + sensor: same mask
    # the sensor moved, the scene did not: sectors are measured around the new origin
    s_new = radial_sector_index(xyz.double(), batch, (origin + shift).double(), 5.0)
    keep_other = radial_mask(xyz, batch, origin + shift, 5.0, 0.3, gen(11))
    assert not set(s_new[keep_other].tolist()) & set(s_new[~keep_other].tolist())
    assert not torch.equal(keep_other, keep)


def test_sectors_cover_full_circle_and_boundaries():
    origin = torch.zeros(1, 3, dtype=torch.float64)
    angles = torch.tensor([0.0, 89.999, 90.0, 180.0, -90.0, 359.999, -0.001], dtype=torch.float64)
    xyz = torch.stack([torch.cos(torch.deg2rad(angles)), torch.sin(torch.deg2rad(angles)), torch.zeros(7, dtype=torch.float64)], 1)
    sector = radial_sector_index(xyz, torch.zeros(7, dtype=torch.long), origin, 90.0)
    assert sector.tolist() == [0, 0, 1, 2, 3, 3, 3]
    # a width that does not divide 360: the last sector is the remainder
    assert radial_sector_index(xyz, torch.zeros(7, dtype=torch.long), origin, 100.0).max() == 3


def test_range_aware_keeps_more_far_voxels_exactly_per_bin():
    xyz, batch, origin = ring_scene(n_per_sample=(3000, 2000), origins=((0.0, 0.0, 0.0), (50.0, 0.0, 0.0)))
    edges, ratios = [20.0, 40.0], [0.1, 0.3, 0.6]
    keep = radial_mask(xyz, batch, origin, 2.0, 0.5, gen(2), range_edges=edges, range_keep_ratios=ratios)
    rng = torch.hypot(*(xyz[:, :2] - origin[batch, :2]).unbind(1))
    bin_ = torch.bucketize(rng, torch.tensor(edges), right=True)
    sector = radial_sector_index(xyz, batch, origin, 2.0)
    rates = []
    for b in range(2):
        for r in range(3):
            sel = (batch == b) & (bin_ == r)
            cells_all = set(sector[sel].tolist())
            cells_kept = set(sector[sel & keep].tolist())
            assert not cells_kept & set(sector[sel & ~keep].tolist())
            assert len(cells_kept) == int(kept_count(torch.tensor([len(cells_all)]), ratios[r]))
            rates.append(keep[sel].float().mean().item())
        assert rates[-3] < rates[-2] < rates[-1]


# ------------------------------------------------------------------ statistics
def test_random_mask_uniform_over_seeds():
    """Every voxel is kept with probability k/n: a chi-square test of the per-voxel keep counts.

    Under uniform sampling the counts over S seeds are Binomial(S, k/n) (negatively correlated, which
    only shrinks the statistic). The bound is the chi-square 99.99% quantile: a flaky-proof bound that
    still fails a biased sampler (the test below checks it would).
    """
    n, k_ratio, seeds = 50, 0.3, 400
    batch = torch.zeros(n, dtype=torch.long)
    counts = torch.zeros(n)
    for s in range(seeds):
        counts += random_mask(batch, k_ratio, gen(s)).float()
    p = 15 / n
    expected, var = seeds * p, seeds * p * (1 - p)
    chi2 = float(((counts - expected) ** 2 / var).sum())
    dof = n - 1
    bound = dof + 3.72 * math.sqrt(2 * dof) + 10  # ~ 99.99% quantile, with slack
    assert chi2 < bound, (chi2, bound)
    biased = counts.clone()
    biased[:5] += 0.2 * seeds  # what a sampler favouring the first voxels would look like
    assert float(((biased - expected) ** 2 / var).sum()) > bound


def test_radial_sectors_uniform_over_seeds():
    sector_deg = 30.0  # 12 sectors
    angles = torch.arange(12) * 30.0 + 15.0
    xyz = torch.stack([torch.cos(torch.deg2rad(angles)), torch.sin(torch.deg2rad(angles)), torch.zeros(12)], 1) * 10
    batch, origin = torch.zeros(12, dtype=torch.long), torch.zeros(1, 3)
    seeds, counts = 300, torch.zeros(12)
    for s in range(seeds):
        keep = radial_mask(xyz, batch, origin, sector_deg, 0.25, gen(s))
        assert int(keep.sum()) == 3
        counts += keep.float()
    p = 0.25
    chi2 = float(((counts - seeds * p) ** 2 / (seeds * p * (1 - p))).sum())
    assert chi2 < 11 + 3.72 * math.sqrt(22) + 10


def test_samples_are_masked_independently():
    """Two identical samples in one batch get different masks; joint keep rate ~ product of rates."""
    n = 200
    batch = torch.cat([torch.zeros(n), torch.ones(n)]).long()
    both, trials = 0.0, 50
    for s in range(trials):
        keep = random_mask(batch, 0.5, gen(s))
        assert not torch.equal(keep[:n], keep[n:])
        both += (keep[:n] & keep[n:]).float().mean().item()
    assert abs(both / trials - 0.25) < 0.03
    xyz, _, _ = ring_scene(n_per_sample=(300,), origins=((0.0, 0.0, 0.0),))
    keep = radial_mask(torch.cat([xyz, xyz]), torch.cat([torch.zeros(300), torch.ones(300)]).long(),
                       torch.zeros(2, 3), 5.0, 0.2, gen(0))
    assert not torch.equal(keep[:300], keep[300:])  # the batch is not masked with one shared draw


def test_determinism_by_seed():
    xyz, batch, origin = ring_scene()
    a = radial_mask(xyz, batch, origin, 1.0, 0.2, gen(42))
    b = radial_mask(xyz, batch, origin, 1.0, 0.2, gen(42))
    c = radial_mask(xyz, batch, origin, 1.0, 0.2, gen(43))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(random_mask(batch, 0.3, gen(9)), random_mask(batch, 0.3, gen(9)))


# ------------------------------------------------------------------ temporal (+ radial)
def test_temporal_previous_visible_current_masked_exactly():
    xyz, batch, origin = ring_scene()
    is_current = torch.arange(len(batch)) % 3 != 0
    keep = mask_current_sweep(is_current, batch, random_mask, keep_ratio=0.25, generator=gen(0))
    assert keep[~is_current].all()
    n_cur = torch.bincount(batch[is_current], minlength=3)
    assert torch.equal(torch.bincount(batch[is_current & keep], minlength=3), kept_count(n_cur, 0.25))


def test_temporal_combined_with_radial():
    xyz, batch, origin = ring_scene()
    is_current = torch.arange(len(batch)) % 2 == 0
    keep = mask_current_sweep(is_current, batch, radial_mask, xyz_centres=xyz, sensor_origin=origin,
                              sector_deg=10.0, keep_ratio=0.2, generator=gen(4))
    assert keep[~is_current].all()
    sector = radial_sector_index(xyz, batch, origin, 10.0)
    for b in range(3):
        cur = is_current & (batch == b)
        kept, masked = set(sector[cur & keep].tolist()), set(sector[cur & ~keep].tolist())
        assert not kept & masked
        assert len(kept) == int(kept_count(torch.tensor([len(set(sector[cur].tolist()))]), 0.2))


# ------------------------------------------------------------------ empty input and errors
def test_empty_input():
    empty = torch.zeros(0, dtype=torch.long)
    assert random_mask(empty, 0.5, gen(0)).shape == (0,)
    assert radial_mask(torch.zeros(0, 3), empty, torch.zeros(1, 3), 1.0, 0.2, gen(0)).shape == (0,)
    assert block_mask(torch.zeros(0, 3, dtype=torch.int32), empty, 2, 0.5, gen(0)).shape == (0,)


@pytest.mark.parametrize("call, argument", [
    (lambda: random_mask(torch.zeros(4, dtype=torch.long), 0.0, gen(0)), "keep_ratio"),
    (lambda: random_mask(torch.zeros(4, dtype=torch.long), 1.5, gen(0)), "keep_ratio"),
    (lambda: random_mask(torch.zeros(4), 0.5, gen(0)), "batch_idx"),
    (lambda: random_mask(torch.zeros(2, 2, dtype=torch.long), 0.5, gen(0)), "batch_idx"),
    (lambda: random_mask(torch.tensor([-1, 0]), 0.5, gen(0)), "batch_idx"),
    (lambda: random_mask(torch.zeros(4, dtype=torch.long), 0.5, 0), "generator"),
    (lambda: radial_mask(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long), torch.zeros(1, 3), 1.0, 0.2, gen(0)), "xyz_centres"),
    (lambda: radial_mask(torch.zeros(4, 3), torch.tensor([0, 1, 2, 2]), torch.zeros(2, 3), 1.0, 0.2, gen(0)), "sensor_origin"),
    (lambda: radial_mask(torch.zeros(4, 3), torch.zeros(4, dtype=torch.long), torch.zeros(3), 1.0, 0.2, gen(0)), "sensor_origin"),
    (lambda: radial_mask(torch.full((4, 3), float("nan")), torch.zeros(4, dtype=torch.long), torch.zeros(1, 3), 1.0, 0.2, gen(0)), "xyz_centres"),
    (lambda: radial_mask(torch.zeros(4, 3), torch.zeros(4, dtype=torch.long), torch.zeros(1, 3), 0.0, 0.2, gen(0)), "sector_deg"),
    (lambda: radial_mask(torch.zeros(4, 3), torch.zeros(4, dtype=torch.long), torch.zeros(1, 3), 1.0, 0.2, gen(0),
                         range_edges=[10.0]), "range_edges"),
    (lambda: radial_mask(torch.zeros(4, 3), torch.zeros(4, dtype=torch.long), torch.zeros(1, 3), 1.0, 0.2, gen(0),
                         range_edges=[10.0, 5.0], range_keep_ratios=[0.1, 0.2, 0.3]), "range_edges"),
    (lambda: radial_mask(torch.zeros(4, 3), torch.zeros(4, dtype=torch.long), torch.zeros(1, 3), 1.0, 0.2, gen(0),
                         range_edges=[10.0], range_keep_ratios=[0.1]), "range_keep_ratios"),
    (lambda: block_mask(torch.zeros(4, 3), torch.zeros(4, dtype=torch.long), 2, 0.5, gen(0)), "coords"),
    (lambda: block_mask(torch.zeros(4, 3, dtype=torch.long), torch.zeros(4, dtype=torch.long), 0, 0.5, gen(0)), "block_size"),
    (lambda: mask_current_sweep(torch.zeros(4), torch.zeros(4, dtype=torch.long), random_mask,
                                keep_ratio=0.5, generator=gen(0)), "is_current"),
])
def test_bad_input_names_the_argument(call, argument):
    with pytest.raises((ValueError, TypeError), match=argument):
        call()


# ------------------------------------------------------------------ properties over random inputs
from hypothesis import given, strategies as st  # noqa: E402


@given(sizes=st.lists(st.integers(0, 40), min_size=1, max_size=5), keep_ratio=st.floats(0.01, 1.0),
       sector_deg=st.sampled_from([0.5, 1.0, 7.0, 45.0, 360.0]), seed=st.integers(0, 2**31 - 1))
def test_exact_counts_property(sizes, keep_ratio, sector_deg, seed):
    g = gen(seed)
    batch = torch.cat([torch.full((n,), b) for b, n in enumerate(sizes)]).long()
    batch = batch[torch.randperm(len(batch), generator=g)]
    xyz = torch.randn(len(batch), 3, generator=g) * 20
    origin = torch.randn(len(sizes), 3, generator=g) * 5
    n = torch.tensor(sizes)
    keep = random_mask(batch, keep_ratio, gen(seed))
    assert torch.equal(torch.bincount(batch[keep], minlength=len(sizes)), kept_count(n, keep_ratio))
    keep = radial_mask(xyz, batch, origin, sector_deg, keep_ratio, gen(seed))
    sector = radial_sector_index(xyz, batch, origin, sector_deg)
    for b in range(len(sizes)):
        sb, kb = sector[batch == b], keep[batch == b]
        assert not set(sb[kb].tolist()) & set(sb[~kb].tolist())
        assert len(set(sb[kb].tolist())) == int(kept_count(torch.tensor([len(set(sb.tolist()))]), keep_ratio))


def test_mask_does_not_depend_on_data_device(device):
    """Keys come from the generator's device, so a CPU generator gives the same mask for CUDA data."""
    xyz, batch, origin = ring_scene()
    expected = radial_mask(xyz, batch, origin, 3.0, 0.2, gen(5))
    got = radial_mask(xyz.to(device), batch.to(device), origin.to(device), 3.0, 0.2, gen(5))
    assert got.device.type == device.type and torch.equal(got.cpu(), expected)
    assert torch.equal(random_mask(batch.to(device), 0.3, gen(6)).cpu(), random_mask(batch, 0.3, gen(6)))
