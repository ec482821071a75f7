"""Voxel-MAE and R-MAE: fake-voxel sampling, each loss term on hand-built cases, masking inside the
models, determinism, configs, backbone keys, and a pre-training smoke run through the engine."""
from pathlib import Path

import numpy as np
import pytest
import torch

from pointmae.config import config_from_dict, load_config
from pointmae.engine.builders import build_dataset, build_model
from pointmae.engine.checkpoint import load_checkpoint
from pointmae.masking import radial_sector_index
from pointmae.models.backbones.sparse_conv import VoxelBackBone8x
from pointmae.models.backbones.sst import SSTBackbone
from pointmae.models.lidar_voxels import VoxelGrid, VoxelMasker, sample_empty_voxels, voxelize_points
from pointmae.models.targets import voxel_point_targets
from pointmae.models.voxel_features import MeanVFE
from pointmae.ops import voxelize
from pointmae.models.r_mae import RMAE
from pointmae.models.voxel_mae import VoxelMAE, sparse_conv_output_depth

ROOT = Path(__file__).resolve().parents[2]
RANGE = (-16.0, -16.0, -3.0, 16.0, 16.0, 1.05)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _tiny_voxel_mae(**kw):
    args = dict(in_channels=4, point_range=RANGE, voxel_size=(0.8, 0.8, 4.05), max_points_per_voxel=16,
                embed_dim=32, depth=2, num_heads=2, window_shape=(6, 6), decoder_dim=32, decoder_depth=1,
                decoder_num_heads=2, num_pred_points=4)
    args.update(kw)
    return VoxelMAE(**args)


def _tiny_r_mae(**kw):
    args = dict(in_channels=4, point_range=RANGE, voxel_size=(0.4, 0.4, 0.15), decoder_channels=(8,))
    args.update(kw)
    return RMAE(**args)


def _batch(seed=0, batch_size=2, n=3000):
    """Points on a ground plane and a few walls around the sensor, per sample."""
    g = torch.Generator().manual_seed(seed)
    clouds = []
    for _ in range(batch_size):
        r = torch.rand(n, generator=g) * 14 + 1
        a = torch.rand(n, generator=g) * 2 * np.pi
        z = torch.where(torch.rand(n, generator=g) < 0.6, torch.full((n,), -1.7), torch.rand(n, generator=g) * 2.5 - 1.7)
        clouds.append(torch.stack([r * torch.cos(a), r * torch.sin(a), z, torch.rand(n, generator=g)], 1))
    sizes = torch.tensor([0] + [len(c) for c in clouds])
    return {"points": torch.cat(clouds), "offsets": torch.cumsum(sizes, 0), "origins": torch.zeros(batch_size, 3)}


# ---------------------------------------------------------------------------------------------- fake voxels
def test_sample_empty_voxels_exact_distinct_empty_and_deterministic():
    coords = torch.tensor([[0, 0, 1, 1], [0, 0, 2, 3], [1, 0, 0, 0], [1, 0, 3, 3]], dtype=torch.int32)
    counts = torch.tensor([5, 14])   # sample 1: all 14 empty cells of the 4 x 4 x 1 grid
    out = sample_empty_voxels(coords, 2, (4, 4, 1), counts, _gen(0))
    assert out.dtype == torch.int32 and out.shape == (19, 4)
    assert (out[:, 0] == 0).sum() == 5 and (out[:, 0] == 1).sum() == 14
    rows = {tuple(r) for r in out.tolist()}
    assert len(rows) == 19 and not rows & {tuple(r) for r in coords.tolist()}
    assert ((out[:, 1] == 0) & (out[:, 2] < 4) & (out[:, 3] < 4) & (out[:, 2] >= 0)).all()
    torch.testing.assert_close(out, sample_empty_voxels(coords, 2, (4, 4, 1), counts, _gen(0)))
    assert not torch.equal(out[:5], sample_empty_voxels(coords, 2, (4, 4, 1), counts, _gen(1))[:5])
    with pytest.raises(ValueError, match="only 14"):
        sample_empty_voxels(coords, 2, (4, 4, 1), torch.tensor([0, 15]), _gen(0))
    assert sample_empty_voxels(coords, 2, (4, 4, 1), torch.tensor([0, 15]), _gen(0), clamp=True).shape == (14, 4)


@pytest.mark.parametrize("grid,k,trials,chi2_limit", [
    ((4, 2, 1), 2, 3000, 20.5),     # nearly full grid: the enumerating path (5 dof, p ~ 0.001)
    ((10, 10, 1), 4, 1500, 146.0),  # sparse grid: the rejection path (97 dof, p ~ 0.001)
])
def test_sample_empty_voxels_is_uniform_over_empty_cells(grid, k, trials, chi2_limit):
    coords = torch.tensor([[0, 0, 0, 0], [0, 0, 0, 1]], dtype=torch.int32)   # 2 cells occupied
    g = _gen(3)
    nx, ny, _ = grid
    hits = torch.zeros(nx * ny)
    for _ in range(trials):
        out = sample_empty_voxels(coords, 1, grid, torch.tensor([k]), g).long()
        assert len(set((out[:, 2] * nx + out[:, 3]).tolist())) == k
        hits.index_add_(0, out[:, 2] * nx + out[:, 3], torch.ones(k))
    assert hits[0] == 0 and hits[1] == 0
    expected = trials * k / (nx * ny - 2)
    chi2 = float(((hits[2:] - expected) ** 2 / expected).sum())
    assert chi2 < chi2_limit, hits


# ---------------------------------------------------------------------------------------------- Voxel-MAE
def test_voxel_mae_losses_vanish_on_a_perfect_prediction():
    torch.manual_seed(0)
    model = _tiny_voxel_mae(num_pred_points=4)
    k = 4
    # Two masked voxels, each with its true points all at one normalised spot, and three fake voxels.
    spot = torch.tensor([0.1, -0.2, 0.3])
    target = spot.repeat(5, 1)
    target_offsets = torch.tensor([0, 2, 5])
    counts = torch.tensor([2, 3])
    with torch.no_grad():
        model.points_head.weight.zero_()
        model.points_head.bias.copy_(spot.repeat(k))
        model.count_head.weight.zero_()
        model.count_head.weight[0, 1] = 1.0        # the count is read from feature 1
        model.count_head.bias.zero_()
        model.occupancy_head.weight.zero_()
        model.occupancy_head.weight[0, 0] = 50.0   # occupied if feature 0 > 0
        model.occupancy_head.bias.zero_()
    decoded = torch.zeros(2, 32)
    decoded[:, 0], decoded[:, 1] = 1.0, counts.float()
    fake = torch.zeros(3, 32)
    fake[:, 0] = -1.0
    out = model.forward_loss(decoded, fake, target, target_offsets, counts)
    assert float(out["loss_chamfer"]) < 1e-10 and float(out["loss_count"]) == 0.0
    assert float(out["loss_occupancy"]) < 1e-10
    # A wrong count, a shifted point or a flipped occupancy each show up in their own term.
    decoded[0, 1] = 5.0
    assert float(model.forward_loss(decoded, fake, target, target_offsets, counts)["loss_count"]) > 1.0
    shifted = target.clone()
    shifted[0] += torch.tensor([0.3, 0.0, 0.0])
    assert float(model.forward_loss(decoded, fake, shifted, target_offsets, counts)["loss_chamfer"]) > 0.01
    assert float(model.forward_loss(decoded, -fake, target, target_offsets, counts)["loss_occupancy"]) > 10


def test_voxel_targets_are_normalised_to_their_voxel():
    # Voxel-MAE's targets: the shared voxelization (with hard voxelization's limits) + voxel_point_targets.
    model = _tiny_voxel_mae()
    batch = _batch(n=500)
    vox = voxelize(batch["points"], batch["offsets"], model.grid.voxel_size, model.grid.point_range, 3, 1000)
    capped = voxelize_points(batch["points"], batch["offsets"], model.grid, 3, 1000)
    assert torch.equal(capped.coords, vox.coords)
    rows = torch.arange(len(vox.coords))
    pts, offsets = voxel_point_targets(batch["points"][:, :3], capped.point_to_voxel, rows,
                                       model.grid.centres(vox.coords), model.grid.voxel_size)
    assert torch.equal(offsets.diff(), vox.num_points.long()) and offsets[-1] == pts.shape[0]
    assert pts.abs().max() <= 0.5 + 1e-5
    # Undo the normalisation: each voxel's points are exactly the ones hard voxelization keeps.
    back = pts * torch.tensor(model.grid.voxel_size) + model.grid.centres(vox.coords).repeat_interleave(
        offsets.diff(), 0)
    valid = torch.arange(3)[None] < vox.num_points[:, None]
    torch.testing.assert_close(back, vox.voxels[valid][:, :3], atol=1e-5, rtol=0)


def test_voxelize_points_limits_voxels_per_sample_like_hard_voxelization():
    grid = VoxelGrid((-4.0, -4.0, -1.0, 4.0, 4.0, 1.0), (0.5, 0.5, 2.0))
    batch = _batch(n=800)
    hard = voxelize(batch["points"], batch["offsets"], grid.voxel_size, grid.point_range, 100, 7)
    capped = voxelize_points(batch["points"], batch["offsets"], grid, 100, 7)
    assert torch.equal(capped.coords, hard.coords) and len(hard.coords) == 14      # 7 per sample
    kept = capped.point_to_voxel >= 0
    assert torch.equal(torch.bincount(capped.point_to_voxel[kept], minlength=14), hard.num_points.long())
    features = MeanVFE(4, grid.voxel_size, grid.point_range, centre_offset=False)(
        batch["points"], capped.point_to_voxel, capped.coords)
    valid = (torch.arange(hard.voxels.shape[1])[None] < hard.num_points[:, None]).float()[..., None]
    torch.testing.assert_close(features, (hard.voxels * valid).sum(1) / hard.num_points[:, None].float())


@pytest.mark.parametrize("backbone", ["sst", "VoxelBackBone8x"])
def test_voxel_mae_forward_backward_deterministic(backbone):
    kw = {} if backbone == "sst" else {"backbone": backbone, "voxel_size": (0.4, 0.4, 0.15)}
    torch.manual_seed(0)
    model = _tiny_voxel_mae(**kw)
    batch = _batch()

    def run(seed):
        model.zero_grad()
        out = model(batch, _gen(seed))
        out["loss"].backward()
        return out, [p.grad.clone() for p in model.parameters() if p.grad is not None]

    a, grads_a = run(1)
    b, grads_b = run(1)
    assert torch.isfinite(a["loss"]) and float(a["loss"]) == float(b["loss"])
    assert all(torch.equal(x, y) for x, y in zip(grads_a, grads_b))
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone_3d.parameters())
    c, _ = run(2)
    assert not torch.equal(a["vis"]["keep"], c["vis"]["keep"])
    keep, coords = a["vis"]["keep"], a["vis"]["coords"]
    for s in range(2):   # exactly 30% of each sample's voxels visible (round half up)
        n = int((coords[:, 0] == s).sum())
        assert int(keep[coords[:, 0] == s].sum()) == int(np.floor(n * 0.3 + 0.5))
    n_fake = a["vis"]["fake"].shape[0]
    assert n_fake == sum(int(np.floor(int((coords[:, 0] == s).sum()) * 0.1 + 0.5)) for s in range(2))
    picture = model.visualize(batch, a)["reconstruction"]
    assert picture.dtype == np.uint8 and picture.ndim == 3 and picture.shape[2] == 3


def test_sparse_conv_depth_rule_and_error():
    assert sparse_conv_output_depth(40) == 2          # KITTI's 41-layer sparse tensor -> 2 (OpenPCDet)
    assert sparse_conv_output_depth(23) == 0 and sparse_conv_output_depth(24) == 1
    with pytest.raises(ValueError, match="24 z layers"):
        _tiny_voxel_mae(backbone="VoxelBackBone8x")   # pillars: one z layer


# ---------------------------------------------------------------------------------------------- R-MAE
def test_r_mae_loss_on_perfect_logits_and_cells():
    model = _tiny_r_mae()
    w, h, d = model.occupancy_grid
    coords = torch.tensor([[0, 0, 0, 0], [0, 1, 1, 1], [0, 26, 79, 79], [1, 13, 40, 2]], dtype=torch.int32)
    cells = model.occupancy_cells(coords)
    # Stride 4 in x/y (one up-sampling layer), z scaled to the d layers.
    assert cells.tolist() == [[0, 0, 0, 0], [0, (26 * d) // 27, 19, 19], [1, (13 * d) // 27, 10, 0]]
    logits = torch.full((2, d, h, w), -30.0)
    logits[cells[:, 0], cells[:, 1], cells[:, 2], cells[:, 3]] = 30.0
    empty = sample_empty_voxels(cells, 2, model.occupancy_grid, torch.tensor([2, 1]), _gen(0)).long()
    def pick(grid, c):
        return grid[c[:, 0], c[:, 1], c[:, 2], c[:, 3]]

    out = model.forward_loss(pick(logits, cells), pick(logits, empty))
    assert float(out["loss"]) < 1e-10 and float(out["occupancy_accuracy"]) == 1.0
    flipped = model.forward_loss(pick(-logits, cells), pick(-logits, empty))
    assert float(flipped["loss"]) > 10 and float(flipped["occupied_recall"]) == 0.0


def test_r_mae_masks_whole_sectors_around_each_samples_sensor():
    torch.manual_seed(0)
    model = _tiny_r_mae()
    batch = _batch()
    batch["origins"] = torch.tensor([[0.0, 0.0, 0.0], [3.0, -2.0, 0.0]])
    out = model(batch, _gen(4))
    out["loss"].backward()
    keep, coords = out["vis"]["keep"], out["vis"]["coords"]
    sector = radial_sector_index(model.grid.centres(coords), coords[:, 0].long(), batch["origins"], 1.0)
    for s in range(2):
        mine = coords[:, 0] == s
        key = sector[mine]
        kept_sectors = set(key[keep[mine]].tolist())
        masked_sectors = set(key[~keep[mine]].tolist())
        assert kept_sectors and not kept_sectors & masked_sectors         # all-or-nothing per sector
        n_sectors = len(kept_sectors | masked_sectors)
        assert len(kept_sectors) == int(np.floor(n_sectors * 0.2 + 0.5))
    again = model(batch, _gen(4))
    assert torch.equal(again["vis"]["keep"], keep) and float(again["loss"]) == float(out["loss"])
    picture = model.visualize(batch, out)["occupancy"]
    assert picture.dtype == np.uint8 and picture.shape[2] == 3


# ---------------------------------------------------------------------------------------------- configs, checkpoints
@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "voxel_mae").glob("*.yaml"))
                         + sorted((ROOT / "configs" / "r_mae").glob("*.yaml")), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_configs_load_and_build(path):
    cfg = load_config(path)
    model = build_model(cfg.model)
    assert cfg.model.in_channels == len(cfg.data.channels)
    assert tuple(cfg.model.point_range) == tuple(cfg.data.point_range)
    assert isinstance(model.backbone_3d, (SSTBackbone, VoxelBackBone8x)) or "Res" in cfg.model.backbone


def test_pretrain_smoke_and_backbone_keys_load_into_fresh_backbones(tmp_path):
    from pointmae.engine.run import train
    for method in ("voxel_mae", "r_mae"):
        cfg = load_config(ROOT / "configs" / method / "synthetic.yaml", [
            f"work_dir={tmp_path / method}", "train.max_steps=2", "train.batch_size=2", "train.vis_every=2",
            "train.progress_bar=false", "train.tensorboard=false", "data.num_frames=4",
            "data.frames_per_sequence=2", "data.azimuth_resolution_deg=2.0"])
        train(cfg)
        assert list((tmp_path / method / "vis").glob("*.png"))
        ckpt = load_checkpoint(sorted((tmp_path / method / "checkpoints").glob("ckpt_step*.pt"))[-1])
        state = ckpt["model"]
        backbone_keys = {k[len("backbone_3d."):]: v for k, v in state.items() if k.startswith("backbone_3d.")}
        assert backbone_keys and ckpt["config"]["model"]["name"] == method
        grid = VoxelGrid(tuple(cfg.model.point_range), tuple(cfg.model.voxel_size)).grid_size
        fresh = (VoxelBackBone8x(cfg.model.in_channels, grid) if method == "r_mae" else
                 SSTBackbone(cfg.model.in_channels, cfg.model.embed_dim, cfg.model.depth, cfg.model.num_heads,
                             cfg.model.window_shape))
        fresh.load_state_dict(backbone_keys, strict=True)
        name, tensor = next(iter(fresh.state_dict().items()))
        torch.testing.assert_close(tensor, backbone_keys[name])
        # The vfe is parameter-free: nothing under vfe., as the detector expects for a MeanVFE.
        assert not any(k.startswith("vfe.") for k in state)


def test_model_rejects_wrong_channels():
    model = _tiny_voxel_mae()
    batch = _batch()
    batch["points"] = batch["points"][:, :3]
    with pytest.raises(ValueError, match="in_channels"):
        model(batch, _gen(0))


def test_voxel_mae_range_aware_radial_masking_by_config():
    cfg = load_config(ROOT / "configs" / "voxel_mae" / "synthetic.yaml", [
        "model.mask_type=radial", "model.sector_deg=5.0", "model.range_edges=[8.0]",
        "model.range_keep_ratios=[0.2,0.6]"])
    torch.manual_seed(0)
    model = build_model(cfg.model)
    out = model(_batch(), _gen(0))
    keep, coords = out["vis"]["keep"], out["vis"]["coords"]
    far = model.grid.centres(coords)[:, :2].norm(dim=1) >= 8.0
    assert keep[far].float().mean() > keep[~far].float().mean() + 0.2   # far voxels kept more
    assert torch.isfinite(out["loss"])


@pytest.mark.parametrize("backbone", ["sst", "VoxelBackBone8x"])
def test_voxel_mae_radial_plus_temporal_by_config(backbone):
    # Radial + temporal masking for Voxel-MAE: mask_type radial, temporal true, and the data pipeline's
    # previous sweep. The encoder then sees the visible current points and the whole previous sweep.
    cfg = load_config(ROOT / "configs" / "voxel_mae" / "synthetic.yaml", [
        "model.mask_type=radial", "model.sector_deg=10.0", "model.mask_ratio=0.7", "model.temporal=true",
        f"model.backbone={backbone}", "model.voxel_size=[0.8,0.8,0.15]", "model.embed_dim=32", "model.depth=1",
        "model.decoder_dim=32", "model.num_heads=2", "model.decoder_num_heads=2"])
    torch.manual_seed(0)
    model = build_model(cfg.model)
    batch = _batch(n=1500)
    shifted = batch["points"].clone()
    shifted[:, 0] += 0.4                                 # the "previous sweep": the scene seen from elsewhere
    temporal = dict(batch, prev_points=shifted, prev_offsets=batch["offsets"], has_prev=torch.tensor([True, True]))
    out = model(temporal, _gen(0))
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and model.backbone_3d.parameters().__next__().grad is not None
    # Whole sectors around the sensor are masked (radial), on the current sweep only.
    keep, coords = out["vis"]["keep"], out["vis"]["coords"]
    sector = radial_sector_index(model.grid.centres(coords), coords[:, 0].long(), batch["origins"], 10.0)
    for b in range(2):
        for s in sector[coords[:, 0] == b].unique():
            inside = (coords[:, 0] == b) & (sector == s)
            assert keep[inside].all() or (~keep[inside]).all()
    # What the encoder sees: with an empty (or stand-in) previous sweep exactly the visible voxels; with
    # the previous sweep also cells the current sweep has masked, holding previous points only.
    vox = voxelize_points(batch["points"], batch["offsets"], model.grid, model.max_points_per_voxel, model.max_voxels)
    features = model.vfe(batch["points"], vox.point_to_voxel, vox.coords)
    stand_in = dict(temporal, has_prev=torch.tensor([False, False]))
    f0, c0 = model.encoder_input(stand_in, batch["points"], batch["offsets"], vox.point_to_voxel, features,
                                 vox.coords, keep)
    assert torch.equal(c0, vox.coords[keep]) and torch.allclose(f0, features[keep])
    _, c1 = model.encoder_input(temporal, batch["points"], batch["offsets"], vox.point_to_voxel, features,
                                vox.coords, keep)
    key = lambda c: set(map(tuple, c.tolist()))  # noqa: E731
    masked_cells = key(vox.coords[~keep])
    assert key(c1) >= key(vox.coords[keep]) and key(c1) & masked_cells
    with pytest.raises(KeyError, match="prev_points"):
        model(batch, _gen(0))


@pytest.mark.parametrize("decoder_channels", [(8,), (8, 4)])
def test_r_mae_sparse_decoder_equals_the_dense_decoder(decoder_channels):
    """forward_decoder + occupancy_logits read the dense decoder's logits (transposed convs, BatchNorm
    with the dense tensor's batch statistics, ReLU, head) at any cells, with the same running-statistics
    update and the same gradients, without laying the grid out densely."""
    import copy
    torch.manual_seed(0)
    model = _tiny_r_mae(decoder_channels=decoder_channels)
    batch = _batch(n=1500)
    vox = voxelize_points(batch["points"], batch["offsets"], model.grid, model.max_points_per_voxel, model.max_voxels)
    features = model.vfe(batch["points"], vox.point_to_voxel, vox.coords)
    keep = model.masker(vox.coords, model.grid.centres(vox.coords), batch["origins"], _gen(0))
    encoded = model.forward_encoder(features[keep], vox.coords[keep], 2)
    dense_model = copy.deepcopy(model)
    for m in (model, dense_model):       # a non-trivial BatchNorm affine part
        for bn in m.decoder:
            if isinstance(bn, torch.nn.BatchNorm3d):
                torch.nn.init.uniform_(bn.weight, 0.5, 1.5, generator=torch.Generator().manual_seed(1))
                torch.nn.init.uniform_(bn.bias, -0.5, 0.5, generator=torch.Generator().manual_seed(2))
    dense_in = encoded.encoded.dense().detach().requires_grad_(True)
    sparse_features = encoded.encoded.features.detach().requires_grad_(True)
    encoded.encoded = encoded.encoded.replace_feature(sparse_features)
    w, h, d = model.occupancy_grid
    dense_logits = dense_model.occupancy_head(dense_model.decoder(dense_in)).squeeze(1)[:, :d, :h, :w]
    cells = torch.stack(torch.meshgrid(torch.arange(2), torch.arange(d), torch.arange(h), torch.arange(w),
                                       indexing="ij"), -1).reshape(-1, 4)
    logits = model.occupancy_logits(model.forward_decoder(encoded), cells)
    expected = dense_logits[cells[:, 0], cells[:, 1], cells[:, 2], cells[:, 3]]
    torch.testing.assert_close(logits, expected, atol=2e-5, rtol=1e-4)
    for a, b in zip(model.decoder.modules(), dense_model.decoder.modules()):
        if isinstance(a, torch.nn.BatchNorm3d):
            torch.testing.assert_close(a.running_mean, b.running_mean, atol=1e-6, rtol=1e-5)
            torch.testing.assert_close(a.running_var, b.running_var, atol=1e-6, rtol=1e-5)
    # Gradients of a loss on some cells: the same for the decoder's parameters and the encoder's output.
    picked = torch.randperm(len(cells), generator=torch.Generator().manual_seed(3))[:500]
    weights = torch.randn(500, generator=torch.Generator().manual_seed(4))
    (logits[picked] * weights).sum().backward()
    (expected[picked] * weights).sum().backward()
    for (name, a), b in zip(model.decoder.named_parameters(), dense_model.decoder.parameters()):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-4, rtol=1e-3, msg=name)
    idx = encoded.encoded.indices.long()
    torch.testing.assert_close(sparse_features.grad, dense_in.grad[idx[:, 0], :, idx[:, 1], idx[:, 2], idx[:, 3]],
                               atol=1e-4, rtol=1e-3)
    model.eval()
    dense_model.eval()
    eval_dense = dense_model.occupancy_head(dense_model.decoder(dense_in)).squeeze(1)[:, :d, :h, :w]
    torch.testing.assert_close(model.occupancy_logits(model.forward_decoder(encoded), cells),
                               eval_dense[cells[:, 0], cells[:, 1], cells[:, 2], cells[:, 3]], atol=2e-5, rtol=1e-4)


def test_one_mask_ratio_field_for_every_lidar_mae():
    # R-MAE's "keep 10%" is mask_ratio 0.9; the kept fraction is exactly 0.1, so 5 voxels keep
    # round-half-up(0.5) = 1 (a float 0.0999... would keep 0).
    masker = VoxelMasker("random", 0.9)
    assert masker.keep_ratio == 0.1
    keep = masker(torch.zeros(5, 4, dtype=torch.int32), torch.zeros(5, 3), torch.zeros(1, 3), _gen(0))
    assert int(keep.sum()) == 1
    with pytest.raises(ValueError, match="mask_ratio"):
        VoxelMasker("random", 1.0)
    for method in ("voxel_mae", "r_mae", "t_mae"):
        for path in sorted((ROOT / "configs" / method).glob("*.yaml")):
            model_cfg = load_config(path).model
            assert hasattr(model_cfg, "mask_type") and hasattr(model_cfg, "mask_ratio"), path
    assert load_config(ROOT / "configs" / "r_mae" / "nuscenes.yaml").model.mask_ratio == 0.9
