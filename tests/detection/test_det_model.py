"""The CenterPoint model end to end on tiny grids: shapes, both backbone families, an overfit of two
synthetic frames (the loss falls and the decoded boxes match the ground truth), determinism."""
import numpy as np
import pytest
import torch

from pointmae import ops
from pointmae.data.detection import DetectionDataset, collate_detection
from pointmae.data.lidar_datasets import SyntheticFrames
from pointmae.engine.finetune_det import recalibrate_batchnorm
from pointmae.models.detection import CenterPoint
from pointmae.models.detection.center_head import CenterHead
from pointmae.models.detection.losses import focal_heatmap_loss, gather_at, masked_l1_loss
from pointmae.models.detection.targets import build_targets

CLASSES = ["Car", "Pedestrian"]
RANGE = (0.0, -9.6, -3.0, 19.2, 9.6, 1.0)
TINY_BEV = dict(bev_layer_nums=[1, 1], bev_layer_strides=[1, 2], bev_num_filters=[16, 32],
                bev_num_upsample_filters=[16, 16], head_channels=16)


@pytest.fixture(scope="module")
def batch():
    torch.set_num_threads(1)
    ds = DetectionDataset(SyntheticFrames(num_frames=2, seed=3), CLASSES, crop_range=RANGE)
    frames = [ds[0], ds[1]]
    assert all(len(f.boxes) >= 3 for f in frames)
    return collate_detection(frames)


def sparse_model(**kw):
    torch.manual_seed(0)
    args = dict(point_range=RANGE, voxel_size=(0.2, 0.2, 0.16), backbone="VoxelBackBone8x",
                bev_upsample_strides=[2, 4], score_threshold=0.3, **TINY_BEV)
    args.update(kw)
    return CenterPoint(CLASSES, **args)


def test_shapes_and_grid(batch):
    model = sparse_model(with_velocity=True)
    assert model.feature_map_stride == 4 and (model.grid.nx, model.grid.ny) == (24, 24)
    maps = model.forward_features(batch)
    assert maps["heatmap"].shape == (2, 2, 24, 24)
    assert {k: v.shape[1] for k, v in maps.items()} == {"heatmap": 2, "offset": 2, "z": 1, "dims": 3, "rot": 2,
                                                         "vel": 2}
    out = model(batch)
    assert out["loss"].requires_grad and out["num_objects"] == sum(len(b) for b in batch["boxes"])
    model.eval()
    dets = model.predict(batch)
    assert [d["frame_id"] for d in dets] == batch["frame_ids"]
    for d in dets:
        assert d["boxes"].dtype == np.float64 and d["boxes"].shape[1] == 9
        assert len(d["boxes"]) == len(d["scores"]) == len(d["names"])


def test_sst_backbone_and_dynamic_vfe_train(batch):
    torch.manual_seed(0)
    model = CenterPoint(CLASSES, point_range=RANGE, voxel_size=(0.4, 0.4, 4.0), vfe="dynamic_mean", backbone="SST",
                        sst_dim=16, sst_depth=2, sst_num_heads=2, sst_window=(8, 8), bev_upsample_strides=[1, 2],
                        **TINY_BEV)
    assert model.feature_map_stride == 1 and (model.grid.nx, model.grid.ny) == (48, 48)
    out = model(batch)
    out["loss"].backward()
    assert model.backbone_3d.input_proj[0].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="pillars"):
        CenterPoint(CLASSES, point_range=RANGE, voxel_size=(0.4, 0.4, 0.2), backbone="SST")


def test_sparse_backbone_needs_enough_height_layers():
    with pytest.raises(ValueError, match="at least 24 z cells"):
        CenterPoint(CLASSES, point_range=RANGE, voxel_size=(0.2, 0.2, 0.4), **TINY_BEV)


def test_missing_channel_is_a_clear_error(batch):
    model = sparse_model(point_channels=["x", "y", "z", "elongation"])
    with pytest.raises(ValueError, match="elongation"):
        model(batch)


@pytest.mark.parametrize("tasks", [None, [["Pedestrian"], ["Car"]]])
def test_overfit_two_frames_loss_falls_and_boxes_match(batch, tasks):
    model = sparse_model(tasks=tasks)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    losses = []
    for _ in range(60):
        out = model(batch)
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        losses.append(float(out["loss"]))
    assert losses[-1] < 0.15 * losses[0], losses
    recalibrate_batchnorm(model, [batch])
    model.eval()
    for boxes, names, det in zip(batch["boxes"], batch["names"], model.predict(batch)):
        assert len(det["boxes"]) > 0
        iou = ops.box_iou_bev(boxes[:, :7].double(), torch.from_numpy(det["boxes"][:, :7]))
        best = iou.max(dim=1)
        assert torch.all(best.values > 0.5), best.values
        assert list(det["names"][best.indices.numpy()]) == list(names)


def test_same_seed_same_loss(batch):
    a, b = sparse_model()(batch)["loss"], sparse_model()(batch)["loss"]
    assert torch.equal(a, b)


def test_visualize_draws_the_training_step(batch):
    model = sparse_model()
    outputs = model(batch)
    pictures = model.visualize(batch, outputs)
    image = pictures["bev_detections"]
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert (image == [60, 220, 60]).all(axis=2).sum() > 50          # ground-truth boxes drawn in green


def test_hard_voxel_features_match_the_hard_voxelization_kernel(batch):
    """The detector's VFE is the LiDAR MAEs' MeanVFE over the shared voxelization; with capacity limits it
    must average exactly the points pointmae.ops.voxelize (VoxelNet / SECOND hard voxelization) keeps."""
    model = sparse_model(max_points_per_voxel=2, max_voxels=300)
    voxels = model.voxelizer(batch["points"], batch["offsets"], batch["channels"])
    features = model.vfe(voxels.points, voxels.point_to_voxel, voxels.coords)
    hard = ops.voxelize(voxels.points, batch["offsets"], [0.2, 0.2, 0.16], list(RANGE), 2, 300)
    expected = hard.voxels.sum(1) / hard.num_points.clamp(min=1)[:, None].float()
    assert int((hard.coords[:, 0] == 0).sum()) == 300                     # the voxel limit binds
    assert int((hard.num_points == 2).sum()) > 0                          # so does the point limit
    got = {tuple(c.tolist()): f for c, f in zip(voxels.coords, features)}
    want = {tuple(c.tolist()): f for c, f in zip(hard.coords, expected)}
    assert got.keys() == want.keys()
    assert all(torch.allclose(got[k], want[k], atol=1e-5) for k in want)


def _without_points_in_range(batch):
    """The batch with every point moved 1 km ahead: outside point_range, so no voxel at all (like a
    Waymo frame converted with --labels-only, which has zero points)."""
    points = batch["points"].clone()
    points[:, 0] += 1000.0
    return dict(batch, points=points)


@pytest.mark.parametrize("backbone", ["VoxelBackBone8x", "SST"])
def test_a_batch_without_voxels_trains_and_predicts(batch, backbone):
    """spconv refused an empty input ("tensor must not empty") deep in the 3D encoder; the detector
    gives the empty scene's all-zero BEV map to the 2D backbone instead, of the encoder's map size."""
    if backbone == "SST":
        torch.manual_seed(0)
        model = CenterPoint(CLASSES, point_range=RANGE, voxel_size=(0.4, 0.4, 4.0), backbone="SST", sst_dim=16,
                            sst_depth=1, sst_num_heads=2, sst_window=(8, 8), bev_upsample_strides=[1, 2], **TINY_BEV)
    else:
        model = sparse_model()
    seen = []
    handle = model.to_bev.register_forward_hook(lambda m, i, out: seen.append(out.shape))
    model(batch)                                            # with points: the encoder's real BEV size
    handle.remove()
    assert tuple(seen[0][-2:]) == model.bev_size
    empty = _without_points_in_range(batch)
    out = model(empty)
    assert torch.isfinite(out["loss"]) and out["num_objects"] == sum(len(b) for b in batch["boxes"])
    out["loss"].backward()
    # All-zero features stay zero through the convs and train-mode BatchNorm: only the head's biases
    # learn (here: that every cell is background, as the focal loss on an empty map says).
    assert model.dense_head.task_heads[0]["heatmap"][-1].bias.grad.abs().sum() > 0
    model.eval()
    dets = model.predict(empty)
    assert [d["frame_id"] for d in dets] == batch["frame_ids"]
    assert all(np.isfinite(d["boxes"]).all() for d in dets)


def test_task_groups_heatmap_in_class_order_and_own_regression(batch):
    """With groups [[Pedestrian], [Car]] the heatmap channels stay in class order (Car, Pedestrian),
    each group regresses from its own branches, and each object's L1 target is read from its group's."""
    model = sparse_model(tasks=[["Pedestrian"], ["Car"]], with_velocity=True)
    head = model.dense_head
    assert head.tasks == [[1], [0]] and len(head.task_heads) == 2
    with torch.no_grad():
        head.task_heads[0]["heatmap"][-1].bias.fill_(5.0)     # group 0 = Pedestrian, class 1
        head.task_heads[1]["heatmap"][-1].bias.fill_(-5.0)
    maps = model.forward_features(batch)
    assert maps["heatmap"].shape == (2, 2, 24, 24) and maps["offset"].shape == (2, 4, 24, 24)
    assert maps["heatmap"][:, 1].mean() > maps["heatmap"][:, 0].mean() + 5
    assert model.dense_head.codes(maps).shape == (2, 2, 10, 24, 24)
    # With only Car objects, only the Car group's regression branches get a gradient (the heatmap
    # loss does not reach the regression branches).
    car_only = [lb * 0 for lb in batch["labels"]]
    out = model.forward_loss(maps, batch["boxes"], car_only)
    model.zero_grad()
    out["loss"].backward()
    assert head.task_heads[1]["dims"][-1].weight.grad.abs().sum() > 0
    assert head.task_heads[0]["dims"][-1].weight.grad is None or head.task_heads[0]["dims"][-1].weight.grad.abs().sum() == 0


def test_single_group_head_loads_checkpoints_from_before_task_groups():
    # Before task groups the head kept its one group's branches under dense_head.branches.*.
    plain = sparse_model()
    old = {k.replace("dense_head.task_heads.0.", "dense_head.branches."): v for k, v in plain.state_dict().items()}
    assert any(k.startswith("dense_head.branches.") for k in old)
    fresh = sparse_model()
    torch.nn.init.zeros_(fresh.dense_head.task_heads[0]["dims"][-1].weight)
    fresh.load_state_dict(old, strict=True)
    assert torch.equal(fresh.dense_head.task_heads[0]["dims"][-1].weight, plain.dense_head.task_heads[0]["dims"][-1].weight)
    with pytest.raises(RuntimeError, match="branches"):          # a multi-group head cannot take them
        sparse_model(tasks=[["Car"], ["Pedestrian"]]).load_state_dict(old, strict=True)


def test_heatmap_channels_in_class_order_for_any_grouping():
    # flat order [2, 0, 3, 1] is not its own inverse, so only a correct reordering passes.
    head = CenterHead(8, [[2], [0, 3], [1]], head_channels=8)
    with torch.no_grad():
        for i, classes in enumerate(head.tasks):
            head.task_heads[i]["heatmap"][-1].weight.zero_()
            head.task_heads[i]["heatmap"][-1].bias.copy_(torch.tensor([10.0 * c for c in classes]))
    got = head(torch.zeros(1, 8, 4, 4))["heatmap"][0, :, 0, 0]
    assert torch.equal(got, torch.tensor([0.0, 10.0, 20.0, 30.0]))
    assert head.task_of_class.tolist() == [1, 2, 0, 1]


FOUR = ["A", "B", "C", "D"]


def _four_class_model(tasks):
    torch.manual_seed(0)
    return CenterPoint(FOUR, tasks=tasks, point_range=RANGE, voxel_size=(0.2, 0.2, 0.16), backbone="VoxelBackBone8x",
                       bev_upsample_strides=[2, 4], score_threshold=0.0, with_velocity=True, **TINY_BEV)


def _four_class_frames():
    g = torch.Generator().manual_seed(1)
    boxes, labels = [], []
    for lab in ([0, 1, 2, 3, 3, 2], [1, 1, 1], []):
        n = len(lab)
        b = torch.zeros(n, 9)
        if n:
            b[:, 0] = torch.rand(n, generator=g) * 18 + 0.5
            b[:, 1] = torch.rand(n, generator=g) * 18 - 9
            b[:, 2] = -1
            b[:, 3:6] = torch.rand(n, 3, generator=g) * 3 + 0.5
            b[:, 6] = torch.rand(n, generator=g) * 6 - 3
            b[:, 7:9] = torch.randn(n, 2, generator=g)
        boxes.append(b)
        labels.append(torch.tensor(lab, dtype=torch.int64))
    return boxes, labels


@pytest.mark.parametrize("tasks", [None, [["C"], ["A", "D"], ["B"]], [["D"], ["C"], ["B"], ["A"]]])
def test_loss_is_the_sum_of_per_group_losses(tasks):
    """CenterPoint / OpenPCDet: each group's targets from its own boxes (group-local labels), its focal
    loss and L1 loss normalised by its own object count, summed over groups."""
    model = _four_class_model(tasks)
    torch.manual_seed(5)
    maps = model.dense_head(torch.randn(3, model.backbone_2d.num_bev_features, model.grid.ny, model.grid.nx))
    boxes, labels = _four_class_frames()
    out = model.forward_loss(maps, boxes, labels)
    want_hm, want_loc = 0.0, 0.0
    for i, classes in enumerate(model.tasks):
        keep = [torch.isin(lb, torch.tensor(classes)) for lb in labels]
        local = [torch.tensor([classes.index(int(c)) for c in lb[k]], dtype=torch.int64) for lb, k in zip(labels, keep)]
        t = build_targets([b[k] for b, k in zip(boxes, keep)], local, len(classes), model.grid, True,
                          **model.target_args)
        want_hm = want_hm + focal_heatmap_loss(maps["heatmap"][:, classes], t.heatmap)
        pred = gather_at(model.dense_head.codes(maps)[:, i], t.index)
        want_loc = want_loc + masked_l1_loss(pred, t.codes, t.mask, model.code_weights)[0]
    torch.testing.assert_close(out["hm_loss"], want_hm.detach(), rtol=1e-5, atol=0)
    torch.testing.assert_close(out["loc_loss"], want_loc.detach(), rtol=1e-5, atol=0)


def test_decode_reads_each_class_from_its_own_group():
    model = _four_class_model([["C"], ["A", "D"], ["B"]]).eval()
    h, w = model.grid.ny, model.grid.nx
    maps = {k: torch.zeros(1, c, h, w) for k, c in
            {"heatmap": 4, "offset": 6, "z": 3, "dims": 9, "rot": 6, "vel": 6}.items()}
    maps["heatmap"][:] = -20
    cells = {0: (3, 3), 1: (10, 10), 2: (15, 5), 3: (5, 18)}     # one peak per class (row, column)
    for c, (r, col) in cells.items():
        maps["heatmap"][0, c, r, col] = 5.0
    for i in range(3):                                            # group i regresses boxes of length i + 1
        maps["dims"][0, 3 * i:3 * i + 3] = float(np.log(i + 1))
    maps["rot"][:, 1::2] = 1.0
    det = model.decode(maps)[0]
    keep = det["scores"] > 0.5
    got = sorted(zip(det["labels"][keep].tolist(), det["boxes"][keep][:, 3].round(3).tolist()))
    group_of = {2: 0, 0: 1, 3: 1, 1: 2}
    assert got == sorted((c, float(group_of[c] + 1)) for c in cells)


def test_nms_scope_is_checked():
    with pytest.raises(ValueError, match="nms_scope"):
        sparse_model(nms_scope="frame")


@pytest.mark.parametrize("tasks", [[["Car"]], [["Car"], ["Car", "Pedestrian"]], [["Car"], [], ["Pedestrian"]],
                                   [["Car"], ["Truck"]]])
def test_tasks_must_split_the_classes(tasks):
    with pytest.raises(ValueError, match="tasks must split class_names"):
        sparse_model(tasks=tasks)
