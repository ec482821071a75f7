"""Sparse window transformer: window locality, shifted windows mixing, permutation equivariance."""
import pytest
import torch

from pointmae.models.backbones.sst import SparseWindowBlock, SSTBackbone, group_by_window, window_partition

WINDOW = (4, 4)


def pillars(n=150, batch=2, extent=(16, 20), seed=0, channels=8):
    g = torch.Generator().manual_seed(seed)
    coords = torch.stack([torch.randint(0, batch, (n,), generator=g), torch.zeros(n, dtype=torch.long),
                          torch.randint(0, extent[0], (n,), generator=g), torch.randint(0, extent[1], (n,), generator=g)], 1)
    coords = torch.unique(coords, dim=0).int()
    coords = coords[torch.randperm(len(coords), generator=g)]  # unsorted, as after masking
    return torch.randn(len(coords), channels, generator=g, dtype=torch.float64), coords


def block(shifted, seed=0):
    torch.manual_seed(seed)
    return SparseWindowBlock(8, 2, WINDOW, shifted=shifted, min_bucket=4).double().eval()


def test_grouping_covers_every_voxel_once_with_bucketed_padding():
    _, coords = pillars()
    window_id, local = window_partition(coords, WINDOW, shifted=False)
    assert local.min() >= -1 and local.max() < 1
    groups = group_by_window(window_id, min_bucket=4)
    rows = torch.cat([idx[idx >= 0] for idx in groups.index])
    assert torch.equal(torch.sort(rows).values, torch.arange(len(coords)))
    for idx in groups.index:
        length = idx.shape[1]
        assert length >= 4 and length & (length - 1) == 0  # a power of two
        filled = (idx >= 0).sum(1)
        assert (filled > length // 2).all() or length == 4  # padding below 2x
        for row in idx:  # one window per row: same sample, same window
            ids = window_id[row[row >= 0]]
            assert (ids == ids[0]).all()


def test_unshifted_block_sees_only_its_own_window():
    x, coords = pillars()
    model = block(shifted=False)
    window_id, _ = window_partition(coords, WINDOW, shifted=False)
    with torch.no_grad():
        base = model(x, coords)
        victim = int(torch.nonzero(window_id == window_id[0])[-1])
        perturbed = x.clone()
        perturbed[victim] += torch.linspace(-3, 4, 8, dtype=torch.float64)  # not constant: LayerNorm removes constants
        out = model(perturbed, coords)
    same_window = window_id == window_id[victim]
    torch.testing.assert_close(out[~same_window], base[~same_window], rtol=0, atol=1e-12)
    assert (out[same_window] - base[same_window]).abs().amax(1).gt(1e-6).all()  # attention mixes the window


def test_windows_do_not_cross_samples():
    x, coords = pillars()
    model = block(shifted=True)
    with torch.no_grad():
        base = model(x, coords)
        perturbed = x.clone()
        perturbed[coords[:, 0] == 1] += torch.linspace(-3, 4, 8, dtype=torch.float64)
        out = model(perturbed, coords)
    in0 = coords[:, 0] == 0
    torch.testing.assert_close(out[in0], base[in0], rtol=0, atol=1e-12)


def test_shifted_block_mixes_neighbouring_windows():
    """Two voxels in different unshifted windows but one shifted window: only the shifted block links them."""
    coords = torch.tensor([[0, 0, 1, 3], [0, 0, 1, 4], [0, 0, 9, 9]], dtype=torch.int32)  # x 3 | 4: window border
    x = torch.randn(3, 8, dtype=torch.float64)
    perturbed = x.clone()
    perturbed[1] += torch.linspace(-3, 4, 8, dtype=torch.float64)
    unshifted, shifted = block(False), block(True)
    with torch.no_grad():
        torch.testing.assert_close(unshifted(perturbed, coords)[0], unshifted(x, coords)[0], rtol=0, atol=1e-12)
        assert (shifted(perturbed, coords)[0] - shifted(x, coords)[0]).abs().max() > 1e-6
    backbone = SSTBackbone(8, dim=16, depth=2, num_heads=2, window_shape=WINDOW).double().eval()
    with torch.no_grad():  # two blocks (unshifted + shifted): information crosses the border
        assert (backbone(perturbed, coords)[0] - backbone(x, coords)[0]).abs().max() > 1e-6


@pytest.mark.parametrize("shifted", [False, True])
def test_permuting_input_permutes_output(shifted):
    x, coords = pillars(seed=3)
    perm = torch.randperm(len(coords), generator=torch.Generator().manual_seed(1))
    model = block(shifted)
    with torch.no_grad():
        torch.testing.assert_close(model(x[perm], coords[perm]), model(x, coords)[perm])


def test_backbone_forward_backward_and_errors():
    x, coords = pillars(n=400, extent=(40, 40))
    model = SSTBackbone(8, dim=32, depth=2, num_heads=4, window_shape=(8, 8)).double()
    out = model(x, coords)
    assert out.shape == (len(coords), 32) and torch.isfinite(out).all()
    out.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    with pytest.raises(ValueError, match="voxel_features"):
        model(x[:, :3], coords)
    with pytest.raises(ValueError, match="voxel_coords"):
        model(x, coords.double())
    with pytest.raises(ValueError, match="window_shape"):
        SSTBackbone(8, window_shape=(0, 4))
    assert model(x[:0], coords[:0]).shape == (0, 32)


@pytest.mark.parametrize("shifted", [False, True])
def test_window_ids_are_the_sorted_unique_window_rows(shifted):
    # window_partition's 1-D key must number windows exactly as the unique (batch, row, col) rows do.
    g = torch.Generator().manual_seed(3)
    n = 3000
    coords = torch.stack([torch.randint(0, 3, (n,), generator=g), torch.randint(0, 2, (n,), generator=g),
                          torch.randint(0, 97, (n,), generator=g), torch.randint(0, 61, (n,), generator=g)], 1).int()
    window_id, local = window_partition(coords, (7, 5), shifted)
    shift = torch.tensor([3, 2] if shifted else [0, 0])
    rows = torch.cat([coords[:, :1].long(), torch.div(coords[:, 2:4].long() + shift, torch.tensor([7, 5]),
                                                      rounding_mode="floor")], 1)
    unique_rows, expected = torch.unique(rows, dim=0, return_inverse=True)
    assert torch.equal(window_id, expected) and int(window_id.max()) + 1 == len(unique_rows)
    assert bool((local >= -1).all() and (local < 1).all())
    empty_id, _ = window_partition(coords[:0], (7, 5), shifted)
    assert empty_id.shape == (0,)


def test_a_stack_partitions_each_window_grid_once(monkeypatch):
    # 4 blocks alternate two window grids: two partitions per forward, the same output as block by block.
    import pointmae.models.backbones.sst as sst
    torch.manual_seed(0)
    backbone = sst.SSTBackbone(in_channels=8, dim=16, depth=4, num_heads=2, window_shape=WINDOW).double().eval()
    features, coords = pillars()
    with torch.no_grad():
        x = backbone.input_proj(features)
        for block in backbone.blocks:
            x = block(x, coords)
        expected = backbone.norm(x)
    calls = []
    original = sst.window_partition
    monkeypatch.setattr(sst, "window_partition", lambda *a, **k: calls.append(a[2]) or original(*a, **k))
    with torch.no_grad():
        out = backbone(features, coords)
    assert calls == [False, True]
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
