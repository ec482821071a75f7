"""T-MAE: windowed cross-attention locality and exactness, masks, gradients through the shared encoder
from both sweeps, determinism, pair alignment, point targets, and a short run where the loss falls."""
import numpy as np
import pytest
import torch

from pointmae.data.boxes import invert_pose, rotation_z
from pointmae.data.frame import Frame
from pointmae.data.lidar_datasets import SyntheticFrames
from pointmae.data.lidar_pretrain import LidarPretrainDataset, align_to_frame, collate_lidar_pretrain
from pointmae.data.synthetic.sensor import sensor_preset
from pointmae.masking import kept_count
from pointmae.models.backbones.sst import window_partition
from pointmae.models.targets import voxel_centres, voxel_point_targets
from pointmae.models.temporal_mae import TemporalMAE, WindowCrossAttention, window_pairs

WINDOW = (4, 4)
RANGE = (-12.8, -12.8, -3.0, 12.8, 12.8, 3.0)
VOXEL = (0.4, 0.4, 6.0)


def voxels(n, batch=2, extent=(12, 12), seed=0, channels=8):
    g = torch.Generator().manual_seed(seed)
    coords = torch.stack([torch.randint(0, batch, (n,), generator=g), torch.zeros(n, dtype=torch.long),
                          torch.randint(0, extent[0], (n,), generator=g), torch.randint(0, extent[1], (n,), generator=g)], 1)
    coords = torch.unique(coords, dim=0).int()
    coords = coords[torch.randperm(len(coords), generator=g)]
    return torch.randn(len(coords), channels, generator=g, dtype=torch.float64), coords


def wca(shifted=False, seed=0):
    torch.manual_seed(seed)
    return WindowCrossAttention(8, 2, WINDOW, shifted=shifted, min_bucket=2).double().eval()


def test_window_pairs_cover_every_query_once_with_keys_of_its_own_window():
    _, q = voxels(60, seed=1)
    _, k = voxels(90, seed=2)
    _, _, groups = window_pairs(q, k, WINDOW, shifted=True, min_bucket=2, extra_keys=1)
    window_id, _ = window_partition(torch.cat([q, k]), WINDOW, shifted=True)
    qw, kw = window_id[:len(q)], window_id[len(q):]
    rows = torch.cat([qi[qi >= 0] for qi, _ in groups])
    assert torch.equal(torch.sort(rows).values, torch.arange(len(q)))
    used_keys = []
    for qi, ki in groups:
        assert ki.shape[1] + 1 >= 2 and (ki.shape[1] + 1) & ki.shape[1] == 0  # key rows + null: a power of two
        for qrow, krow in zip(qi, ki):
            window = qw[qrow[qrow >= 0]]
            assert (window == window[0]).all()
            assert (kw[krow[krow >= 0]] == window[0]).all()
            assert int((krow >= 0).sum()) == int((kw == window[0]).sum())  # all keys of the window, no more
            used_keys.append(krow[krow >= 0])
    keys = torch.cat(used_keys)
    assert keys.numel() == keys.unique().numel()


def test_cross_attention_equals_dense_attention_inside_one_hand_built_window():
    # Two windows of sample 0 and one of sample 1, by hand: window (0,0) holds queries q0, q1 and keys
    # k0, k1; window (0,1) holds q2 and no key; sample 1 holds q3 and key k2 at the same cell as q0.
    q_coords = torch.tensor([[0, 0, 0, 0], [0, 0, 1, 2], [0, 0, 0, 5], [1, 0, 0, 0]], dtype=torch.int32)
    k_coords = torch.tensor([[0, 0, 3, 3], [0, 0, 2, 1], [1, 0, 0, 0]], dtype=torch.int32)
    g = torch.Generator().manual_seed(0)
    x, ctx = torch.randn(4, 8, generator=g, dtype=torch.float64), torch.randn(3, 8, generator=g, dtype=torch.float64)
    module = wca()
    with torch.no_grad():
        out = module(x, q_coords, ctx, k_coords)
        _, local = window_partition(torch.cat([q_coords, k_coords]), WINDOW, shifted=False)
        pos = module.pos_embed(local.double())
        q, k = x + pos[:4], ctx + pos[4:]
        null = module.null_key[0]

        def dense(queries, keys):  # plain attention over exactly these keys, no padding, no mask
            return module.block(queries[None], torch.cat([keys, null])[None])[0]

        torch.testing.assert_close(out[:2], dense(q[:2], k[:2]), rtol=0, atol=1e-12)
        torch.testing.assert_close(out[2:3], dense(q[2:3], k[:0]), rtol=0, atol=1e-12)  # null key only
        torch.testing.assert_close(out[3:4], dense(q[3:4], k[2:3]), rtol=0, atol=1e-12)


def test_cross_attention_only_attends_within_the_window():
    x, q = voxels(60, seed=3)
    ctx, k = voxels(90, seed=4)
    for shifted in (False, True):
        module = wca(shifted)
        window_id, _ = window_partition(torch.cat([q, k]), WINDOW, shifted)
        qw, kw = window_id[:len(q)], window_id[len(q):]
        victim = int(kw[0])
        with torch.no_grad():
            base = module(x, q, ctx, k)
            perturbed = ctx.clone()
            perturbed[kw == victim] += torch.linspace(-3, 4, 8, dtype=torch.float64)
            out = module(x, q, perturbed, k)
        inside = qw == victim
        torch.testing.assert_close(out[~inside], base[~inside], rtol=0, atol=1e-12)
        if inside.any():
            assert (out[inside] - base[inside]).abs().amax(1).gt(1e-6).all()


def test_cross_attention_is_equivariant_to_the_order_of_queries_and_keys():
    x, q = voxels(60, seed=5)
    ctx, k = voxels(90, seed=6)
    module = wca()
    pq, pk = torch.randperm(len(q)), torch.randperm(len(k))
    with torch.no_grad():
        torch.testing.assert_close(module(x, q, ctx, k)[pq], module(x[pq], q[pq], ctx[pk], k[pk]), rtol=0, atol=1e-12)


# --------------------------------------------------------------------------------------------------
def tiny_model(**kwargs):
    torch.manual_seed(0)
    args = dict(point_range=RANGE, voxel_size=VOXEL, embed_dim=32, depth=2, num_heads=2, window_shape=(8, 8),
                decoder_dim=32, decoder_depth=1, decoder_num_heads=2, points_per_voxel=4)
    args.update(kwargs)
    return TemporalMAE(**args)


@pytest.fixture(scope="module")
def pairs():
    sensor = sensor_preset("nuscenes32").with_(azimuth_resolution_deg=2.0)
    frames = SyntheticFrames(num_frames=8, seed=0, sensor=sensor, frames_per_sequence=4)
    return LidarPretrainDataset(frames, ("x", "y", "z", "intensity"), (-40.0, -40.0, -5.0, 40.0, 40.0, 5.0),
                                num_previous=1, missing_previous="skip")


@pytest.fixture(scope="module")
def batch(pairs):
    return collate_lidar_pretrain([pairs[0], pairs[4]])


def test_pairs_skip_sequence_starts_and_follow_the_contract(pairs, batch):
    assert len(pairs) == 6  # 2 sequences of 4 frames, the first of each has no previous frame
    assert pairs.frame_indices == [1, 2, 3, 5, 6, 7]
    assert bool(batch["has_prev"].all())
    assert batch["prev_offsets"].dtype == torch.int64 and batch["prev_offsets"].shape == (3,)
    assert batch["prev_points"].shape[1] == batch["points"].shape[1]
    assert int(batch["prev_offsets"][-1]) == len(batch["prev_points"])


def test_align_to_frame_puts_a_world_point_at_the_same_place():
    rng = np.random.default_rng(0)
    world = rng.normal(size=(50, 3)) * 10
    poses = []
    for yaw, t in ((0.3, [5.0, -2.0, 0.1]), (-1.1, [12.0, 4.0, 0.3])):
        pose = np.eye(4)
        pose[:3, :3], pose[:3, 3] = rotation_z(yaw), t
        poses.append(pose)
    prev_pose, cur_pose = poses
    in_prev = (world - prev_pose[:3, 3]) @ prev_pose[:3, :3]          # world -> previous sensor frame
    extra = rng.normal(size=(50, 1))
    previous = Frame(np.concatenate([in_prev, extra], 1), ("x", "y", "z", "intensity"), pose=prev_pose)
    current = Frame(np.zeros((1, 4)), ("x", "y", "z", "intensity"), pose=cur_pose)
    aligned = align_to_frame(previous, current, sensor_origin=(0.0, 0.0, 2.0))
    expected = (np.c_[world, np.ones(50)] @ invert_pose(cur_pose).T)[:, :3]
    np.testing.assert_allclose(aligned.points[:, :3], expected, atol=1e-5)   # float32 points
    np.testing.assert_array_equal(aligned.points[:, 3], extra[:, 0].astype(np.float32))
    np.testing.assert_array_equal(aligned.pose, cur_pose)
    sensor_world = prev_pose[:3, :3] @ np.array([0.0, 0.0, 2.0]) + prev_pose[:3, 3]
    np.testing.assert_allclose(aligned.meta["origin_in_current"],
                               invert_pose(cur_pose)[:3, :3] @ sensor_world + invert_pose(cur_pose)[:3, 3], atol=1e-9)


def test_voxel_point_targets_by_hand():
    points = torch.tensor([[0.1, 0.1, 0.0], [0.5, 0.1, 0.0], [0.3, 0.3, 1.0], [0.9, 0.9, 0.0], [0.0, 0.0, 0.0]])
    point_to_voxel = torch.tensor([0, 1, 0, 2, -1])
    coords = torch.tensor([[0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 2, 2]], dtype=torch.int32)
    size, prange = (0.4, 0.4, 4.0), (0.0, 0.0, -2.0, 1.6, 1.6, 2.0)
    centres = voxel_centres(coords, size, prange)
    torch.testing.assert_close(centres, torch.tensor([[0.2, 0.2, 0.0], [0.6, 0.2, 0.0], [1.0, 1.0, 0.0]]))
    targets, offsets = voxel_point_targets(points, point_to_voxel, torch.tensor([2, 0]), centres, size)
    assert offsets.tolist() == [0, 1, 3]
    expected = torch.tensor([[-0.25, -0.25, 0.0], [-0.25, -0.25, 0.0], [0.25, 0.25, 0.25]])
    torch.testing.assert_close(targets, expected)


@pytest.mark.parametrize("mask_type", ["random", "radial", "block"])
def test_masks_are_exact_on_the_current_sweep(batch, mask_type):
    model = tiny_model(mask_type=mask_type, sector_deg=10.0, mask_ratio=0.75)
    feats, coords, _ = model.voxelize(batch["points"], batch["offsets"])
    _, prev_coords, _ = model.voxelize(batch["prev_points"], batch["prev_offsets"])
    keep = model.make_mask(coords, torch.zeros(2, 3), torch.Generator().manual_seed(1))
    assert keep.shape == (len(coords),)
    sample = coords[:, 0].long()
    if mask_type == "random":
        n = torch.bincount(sample)
        assert torch.equal(torch.bincount(sample[keep], minlength=2), kept_count(n, 0.25))
    elif mask_type == "radial":  # whole sectors around the sensor are kept or masked
        centres = voxel_centres(coords, VOXEL, RANGE)
        sector = torch.floor(torch.rad2deg(torch.atan2(centres[:, 1].double(), centres[:, 0].double())) % 360 / 10).long()
        for b in range(2):
            for s in sector[sample == b].unique():
                in_sector = (sample == b) & (sector == s)
                assert keep[in_sector].all() or (~keep[in_sector]).all()
    else:
        block = torch.div(coords[:, 2:4].long(), 4, rounding_mode="floor")
        for key in torch.unique(torch.cat([sample[:, None], block], 1), dim=0):
            inside = (sample == key[0]) & (block == key[1:]).all(1)
            assert keep[inside].all() or (~keep[inside]).all()
    assert 0.1 < float(keep.float().mean()) < 0.5


def test_forward_loss_and_output_shapes(batch):
    model = tiny_model()
    out = model(batch, torch.Generator().manual_seed(0))
    masked = out["masked"]
    assert out["pred"].shape == (len(masked), 4, 3)
    assert torch.isfinite(out["loss"]) and out["loss"].dim() == 0
    assert int(out["num_masked"]) + int(out["num_visible"]) == len(out["coords"])
    image = model.visualize(batch, out)["t_mae_bev"]
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert (image == np.array([255, 70, 50], np.uint8)).all(-1).any()  # predicted points are drawn (red)


def test_contract_attribute_names_and_missing_keys(batch):
    model = tiny_model()
    assert any(k.startswith("backbone_3d.") for k in model.state_dict())
    assert hasattr(model, "vfe")
    with pytest.raises(KeyError, match="prev_points"):
        model({k: v for k, v in batch.items() if k not in ("prev_points",)})


def test_gradients_reach_the_shared_encoder_from_both_sweeps(batch):
    model = tiny_model()
    g = torch.Generator().manual_seed(0)
    feats, coords, p2v = model.voxelize(batch["points"], batch["offsets"])
    prev_feats, prev_coords, _ = model.voxelize(batch["prev_points"], batch["prev_offsets"])
    keep = model.make_mask(coords, torch.zeros(2, 3), g)
    vis, masked = torch.nonzero(keep).squeeze(1), torch.nonzero(~keep).squeeze(1)
    feats_vis = feats[vis].clone().requires_grad_()
    prev_feats = prev_feats.clone().requires_grad_()
    latent, prev_latent = model.forward_encoder(feats_vis, coords[vis], prev_feats, prev_coords, 2)
    fused = model.forward_cross_attention(latent, coords[vis], coords[masked], prev_latent, prev_coords)
    pred = model.forward_decoder(fused, coords[vis], coords[masked])
    targets, offsets = voxel_point_targets(batch["points"][:, :3], p2v, masked,
                                           voxel_centres(coords, VOXEL, RANGE), VOXEL)
    model.forward_loss(pred, targets, offsets).backward()
    # The encoder's input of either sweep receives gradient, so both branches pass through backbone_3d.
    assert feats_vis.grad.abs().sum() > 0 and prev_feats.grad.abs().sum() > 0
    # And the previous branch alone moves the shared weights: with the current branch's encoder output
    # cut off, backbone_3d still gets gradient through the keys / values of the cross-attention.
    model.zero_grad()
    latent, prev_latent = model.forward_encoder(feats_vis.detach(), coords[vis], prev_feats.detach(), prev_coords, 2)
    fused = model.forward_cross_attention(latent.detach(), coords[vis], coords[masked], prev_latent, prev_coords)
    model.forward_loss(model.forward_decoder(fused, coords[vis], coords[masked]), targets, offsets).backward()
    grads = [p.grad for p in model.backbone_3d.parameters() if p.grad is not None]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0


def test_same_seed_same_result_other_seed_other_mask(batch):
    model = tiny_model()
    a = model(batch, torch.Generator().manual_seed(7))
    b = model(batch, torch.Generator().manual_seed(7))
    c = model(batch, torch.Generator().manual_seed(8))
    assert torch.equal(a["keep"], b["keep"]) and torch.equal(a["pred"], b["pred"]) and torch.equal(a["loss"], b["loss"])
    assert not torch.equal(a["keep"], c["keep"])
    torch.manual_seed(3)
    d = model(batch)
    torch.manual_seed(3)
    e = model(batch)  # without a generator: the seed comes from the global RNG
    assert torch.equal(d["keep"], e["keep"]) and torch.equal(d["loss"], e["loss"])


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="mask_ratio"):
        tiny_model(mask_ratio=1.0)
    with pytest.raises(ValueError, match="mask_type"):
        tiny_model(mask_type="temporal")
    with pytest.raises(ValueError, match="point_range"):
        tiny_model(point_range=(0, 0, 0, -1, 1, 1))


def test_short_training_run_lowers_the_loss(pairs):
    torch.set_num_threads(1)
    model = tiny_model()
    batches = [collate_lidar_pretrain([pairs[i], pairs[i + 3]]) for i in range(3)]

    def held_out_loss():  # the same masks before and after training
        with torch.no_grad():
            return float(np.mean([model(b, torch.Generator().manual_seed(100 + i))["loss"].item()
                                  for i, b in enumerate(batches)]))

    before = held_out_loss()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    for step in range(24):
        loss = model(batches[step % 3], g)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = held_out_loss()
    print(f"held-out loss before {before:.4f} after {after:.4f}")
    assert after < 0.75 * before, (before, after)


def test_missing_previous_sweep_falls_back_to_the_null_key(batch):
    # Sample 1 has an empty previous sweep (e.g. a sequence start): its queries only see the null key.
    model = tiny_model()
    cut = int(batch["prev_offsets"][1])
    partial = dict(batch, prev_points=batch["prev_points"][:cut], prev_offsets=torch.tensor([0, cut, cut]))
    out = model(partial, torch.Generator().manual_seed(0))
    assert torch.isfinite(out["loss"]) and torch.isfinite(out["pred"]).all()
    x, q = voxels(20, seed=9)
    module = wca()
    with torch.no_grad():
        alone = module(x, q, x[:0], q[:0])
        assert torch.isfinite(alone).all()
        # With no keys at all, a query's output depends on the query only (not on its window mates).
        torch.testing.assert_close(module(x[:1], q[:1], x[:0], q[:0]), alone[:1], rtol=0, atol=1e-12)


def test_stand_in_previous_sweeps_are_dropped(batch):
    # missing_previous: current copies the current sweep as the previous one; T-MAE must not see it
    # (it would show the masked points), so a sample with has_prev False trains without a previous sweep.
    model = tiny_model()
    copied = dict(batch, prev_points=batch["points"], prev_offsets=batch["offsets"],
                  has_prev=torch.tensor([True, False]))
    n0 = int(batch["offsets"][1])
    empty_second = dict(batch, prev_points=batch["points"][:n0], prev_offsets=torch.tensor([0, n0, n0]))
    a = model(copied, torch.Generator().manual_seed(3))["loss"]
    b = model(empty_second, torch.Generator().manual_seed(3))["loss"]
    leaked = model(dict(copied, has_prev=torch.tensor([True, True])), torch.Generator().manual_seed(3))["loss"]
    torch.testing.assert_close(a, b)
    assert float(leaked) != float(a)
