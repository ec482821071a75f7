"""CenterPoint targets, losses and decoding on hand-built inputs (no network)."""
import math

import numpy as np
import pytest
import torch

from pointmae import ops
from pointmae.models.detection.losses import focal_heatmap_loss, gather_at, masked_l1_loss
from pointmae.models.detection.postprocess import circle_nms, local_maxima, postprocess, topk_candidates
from pointmae.models.detection.targets import (MAX_BOX_SIZE, MIN_BOX_SIZE, FeatureGrid, build_targets, decode_boxes,
                                               draw_gaussian, encode, gaussian_2d, gaussian_radius)

GRID = FeatureGrid(x0=-10.0, y0=-8.0, cell_x=0.5, cell_y=0.4, nx=40, ny=40)


def random_boxes(n, seed, velocity=True):
    rng = np.random.default_rng(seed)
    boxes = np.c_[rng.uniform(-9.5, 9.5, n), rng.uniform(-7.5, 7.5, n), rng.uniform(-2, 1, n),
                  rng.uniform(0.5, 5, n), rng.uniform(0.5, 2.5, n), rng.uniform(1, 3, n), rng.uniform(-np.pi, np.pi, n)]
    if velocity:
        boxes = np.c_[boxes, rng.normal(0, 5, (n, 2))]
    return torch.from_numpy(boxes)


def test_gaussian_radius_hand_computed_and_monotone():
    # 4 x 4 cells, min_overlap 0.1, worked by hand from CenterNet's formulas:
    # r1 = (8 + sqrt(64 - 4 * 13.09)) / 2 = 5.706, r2 = (16 + sqrt(256 - 16 * 14.4)) / 2 = 10.53,
    # r3 = (-1.6 + sqrt(2.56 + 1.6 * 14.4)) / 2 = 1.730 (the smallest).
    assert gaussian_radius(4, 4, 0.1) == pytest.approx(1.7298, abs=1e-3)
    assert gaussian_radius(8, 8, 0.1) > gaussian_radius(4, 4, 0.1)
    assert gaussian_radius(8, 8, 0.7) < gaussian_radius(8, 8, 0.1)


def test_gaussian_peak_at_centre_and_sigma_rule():
    r = 3
    g = gaussian_2d(r, torch.float64)
    assert g.shape == (7, 7) and g[r, r] == 1 and g.max() == 1
    sigma = (2 * r + 1) / 6
    assert g[r, r + 1].item() == pytest.approx(math.exp(-1 / (2 * sigma ** 2)))
    assert torch.equal(g, g.t()) and torch.equal(g, g.flip(0))
    heat = torch.zeros(10, 12)
    draw_gaussian(heat, 0, 9, 3)              # a corner: clipped, no error
    assert heat[9, 0] == 1 and heat.max() == 1
    draw_gaussian(heat, 1, 8, 3)              # overlapping Gaussians take the maximum
    assert heat[9, 0] == 1 and heat[8, 1] == 1


def test_targets_peak_at_centre_cell_with_radius_rule():
    boxes = torch.tensor([[0.1, 0.1, 0.0, 8.0, 6.0, 1.5, 0.3], [5.2, -4.1, 0.0, 0.6, 0.6, 1.7, 0.0]], dtype=torch.float64)
    labels = torch.tensor([0, 1])
    t = build_targets([boxes], [labels], 2, GRID, with_velocity=False, min_overlap=0.1, min_radius=2)
    for m, (col, row) in enumerate([(20, 20), (30, 9)]):   # floor((x - x0) / cell), floor((y - y0) / cell)
        heat = t.heatmap[0, labels[m]]
        assert heat[row, col] == 1
        assert torch.nonzero(heat == 1).tolist() == [[row, col]]
        assert t.index[0, m] == row * GRID.nx + col and t.mask[0, m]
    # The small box gets the minimum radius 2 -> 5 non-zero cells along its row; the large one more.
    r_big = max(2, int(gaussian_radius(8.0 / GRID.cell_x, 6.0 / GRID.cell_y, 0.1)))
    assert r_big > 2
    assert int((t.heatmap[0, 1, 9] > 0).sum()) == 5
    assert int((t.heatmap[0, 0, 20] > 0).sum()) == 2 * r_big + 1
    assert t.mask.sum() == 2


def test_targets_skip_boxes_outside_the_grid_and_check_labels():
    boxes = torch.tensor([[100.0, 0, 0, 4, 2, 1.5, 0], [0, 0, 0, 4, 2, 1.5, 0]], dtype=torch.float64)
    t = build_targets([boxes], [torch.tensor([0, 0])], 1, GRID, with_velocity=False)
    assert t.mask.sum() == 1 and t.heatmap.max() == 1
    with pytest.raises(ValueError, match="labels must be in"):
        build_targets([boxes], [torch.tensor([0, 3])], 1, GRID, with_velocity=False)


def test_max_objects_caps_each_task_group_separately():
    # 5 boxes of class 0 first, then 2 of class 1: with one group and max_objects=3 only class 0 gets
    # targets; with the classes in two groups each group keeps its own 3 (OpenPCDet's per-group cap).
    boxes = random_boxes(7, 4, velocity=False)
    labels = torch.tensor([0, 0, 0, 0, 0, 1, 1])
    one = build_targets([boxes], [labels], 2, GRID, with_velocity=False, max_objects=3)
    assert one.mask.shape == (1, 3) and one.labels[one.mask].tolist() == [0, 0, 0]
    assert one.heatmap[0, 1].max() == 0                     # the capped objects get no heatmap peak either
    two = build_targets([boxes], [labels], 2, GRID, with_velocity=False, max_objects=3, task_of_class=[0, 1])
    assert two.mask.shape == (1, 6) and sorted(two.labels[two.mask].tolist()) == [0, 0, 0, 1, 1]
    assert two.heatmap[0, 1].max() == 1
    with pytest.raises(ValueError, match="task_of_class"):
        build_targets([boxes], [labels], 2, GRID, with_velocity=False, task_of_class=[0])


@pytest.mark.parametrize("velocity", [False, True])
def test_decode_of_encode_recovers_boxes(velocity):
    boxes = random_boxes(50, 1, velocity)
    codes, cells = encode(boxes, GRID, velocity)
    back = decode_boxes(codes, cells, GRID)
    assert back.shape == boxes.shape
    torch.testing.assert_close(back[:, :6], boxes[:, :6], rtol=0, atol=1e-9)
    dh = torch.remainder(back[:, 6] - boxes[:, 6] + math.pi, 2 * math.pi) - math.pi
    assert dh.abs().max() < 1e-9
    if velocity:
        torch.testing.assert_close(back[:, 7:], boxes[:, 7:])


def test_targets_through_topk_decoding_give_back_the_boxes():
    """Perfect maps built from the targets decode (top-k, threshold, rotated NMS) to the ground truth."""
    boxes = torch.tensor([[-5.0, 3.0, -1.0, 4.0, 1.8, 1.5, 0.4, 2.0, -1.0],
                          [4.0, -2.0, -0.8, 0.8, 0.6, 1.7, -2.0, 0.5, 0.5],
                          [6.0, 5.0, -1.2, 4.5, 2.0, 1.6, 3.0, 0.0, 0.0]], dtype=torch.float64)
    labels = torch.tensor([0, 1, 0])
    t = build_targets([boxes], [labels], 2, GRID, with_velocity=True, dtype=torch.float64)
    codes_map = torch.zeros(1, 10, GRID.ny, GRID.nx, dtype=torch.float64)
    for m in range(3):
        row, col = divmod(int(t.index[0, m]), GRID.nx)
        codes_map[0, :, row, col] = t.codes[0, m]
    torch.testing.assert_close(gather_at(codes_map, t.index)[0, :3], t.codes[0, :3])
    heat = local_maxima(t.heatmap)
    (cand_boxes, scores, cand_labels), = topk_candidates(heat, codes_map, GRID, k=20)
    out_boxes, out_scores, out_labels = postprocess(cand_boxes, scores, cand_labels, 2, 0.5, "rotated", 0.01,
                                                    [2.0, 2.0], 10, None)
    assert len(out_boxes) == 3 and torch.all(out_scores == 1)
    iou = ops.box_iou_bev(boxes[:, :7], out_boxes[:, :7])
    match = iou.argmax(1)
    assert torch.all(iou.max(1).values > 0.999)
    assert torch.equal(out_labels[match], labels)
    torch.testing.assert_close(out_boxes[match][:, 7:], boxes[:, 7:])


def test_focal_loss_small_for_right_and_large_for_wrong_maps():
    boxes = random_boxes(5, 2, velocity=False)
    t = build_targets([boxes], [torch.zeros(5, dtype=torch.int64)], 1, GRID, with_velocity=False)
    target = t.heatmap
    good = torch.logit(target.clamp(1e-4, 1 - 1e-4))
    bad = torch.logit((1 - target).clamp(1e-4, 1 - 1e-4))
    neutral = focal_heatmap_loss(torch.zeros_like(target), target)     # p = 0.5 everywhere
    assert focal_heatmap_loss(good, target) < 0.1 * neutral < focal_heatmap_loss(bad, target)


def test_masked_l1_skips_unknown_velocities_and_empty_slots():
    pred = torch.ones(1, 3, 4)
    target = torch.zeros(1, 3, 4)
    target[0, 0, 3] = float("nan")
    mask = torch.tensor([[True, True, False]])
    total, per_entry = masked_l1_loss(pred, target, mask, torch.tensor([1.0, 1.0, 1.0, 0.5]))
    torch.testing.assert_close(per_entry, torch.tensor([1.0, 1.0, 1.0, 0.5]))   # 2 objects; the NaN one skipped
    assert total.item() == pytest.approx(3.25)


def test_circle_nms_keeps_the_best_of_close_centres():
    centers = torch.tensor([[0.0, 0.0], [0.5, 0.0], [3.0, 0.0], [3.2, 0.1]])
    scores = torch.tensor([0.5, 0.9, 0.3, 0.8])
    assert circle_nms(centers, scores, 1.0).tolist() == [1, 3]
    assert circle_nms(centers, scores, 0.1).tolist() == [1, 3, 0, 2]
    # A radius per box: the kept box's own radius decides (box 1 reaches box 0, box 3 does not reach box 2).
    assert circle_nms(centers, scores, torch.tensor([1.0, 1.0, 0.1, 0.1])).tolist() == [1, 3, 2]


def test_nms_groups_suppress_across_the_classes_of_a_group():
    # Two near-identical boxes of classes 0 and 1, a third of class 2 on the same spot.
    boxes = torch.tensor([[5.0, 0.0, 0.0, 4.0, 2.0, 1.5, 0.0], [5.1, 0.0, 0.0, 4.0, 2.0, 1.5, 0.0],
                          [5.0, 0.1, 0.0, 4.0, 2.0, 1.5, 0.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    labels = torch.tensor([0, 1, 2])
    args = (3, 0.1, "rotated", 0.2, [1.0] * 3, 10)
    per_class = postprocess(boxes, scores, labels, *args)
    assert per_class[2].tolist() == [0, 1, 2]
    grouped = postprocess(boxes, scores, labels, *args, nms_groups=[[0, 1], [2]])
    assert grouped[2].tolist() == [0, 2]
    circle = postprocess(boxes, scores, labels, 3, 0.1, "circle", 0.2, [1.0] * 3, 10, nms_groups=[[0, 1, 2]])
    assert circle[2].tolist() == [0]


def test_axis_heading_recovers_the_heading_modulo_pi():
    boxes = random_boxes(50, 3, velocity=False)
    codes, cells = encode(boxes, GRID, False, heading="axis")
    flipped, _ = encode(boxes + torch.tensor([0, 0, 0, 0, 0, 0, math.pi]), GRID, False, heading="axis")
    torch.testing.assert_close(codes, flipped, rtol=0, atol=1e-6)   # front and back give one target
    back = decode_boxes(codes, cells, GRID, heading="axis")
    assert back[:, 6].abs().max() <= math.pi / 2 + 1e-12
    dh = torch.remainder(back[:, 6] - boxes[:, 6] + math.pi / 2, math.pi) - math.pi / 2
    assert dh.abs().max() < 1e-9
    iou = ops.box_iou_bev(boxes, back)
    assert torch.all(iou.diagonal() > 1 - 1e-9)
    with pytest.raises(ValueError, match="heading"):
        encode(boxes, GRID, False, heading="sideways")


def test_decode_of_untrained_size_codes_gives_finite_boxes_that_nms_accepts():
    """An untrained head's raw log-size outputs reach ~250 on the real KITTI sample (kitti.yaml, one step
    then BatchNorm re-estimation); exp overflowed float32 to inf and ops.nms_bev refused the boxes.
    Decoding clamps sizes to [MIN_BOX_SIZE, MAX_BOX_SIZE] metres."""
    codes = torch.zeros(4, 8)
    codes[:, 7] = 1.0                                                   # cos h = 1
    codes[:, 3:6] = torch.tensor([[255.0, 120.0, 90.0], [-300.0, 0.0, 1.0], [1.0, 2.0, 0.5], [89.0, -89.0, 3.0]])
    boxes = decode_boxes(codes, torch.tensor([[1, 1], [5, 5], [10, 10], [20, 20]]), GRID)
    assert torch.isfinite(boxes).all()
    torch.testing.assert_close(boxes[0, 3:6], torch.full((3,), MAX_BOX_SIZE), rtol=1e-5, atol=0)
    assert boxes[1, 3] == pytest.approx(MIN_BOX_SIZE, rel=1e-5)
    torch.testing.assert_close(boxes[2, 3:6], torch.exp(codes[2, 3:6]))   # ordinary sizes are untouched
    keep = ops.nms_bev(boxes[:, :7].contiguous(), torch.tensor([0.9, 0.8, 0.7, 0.6]), 0.01)
    assert keep[0] == 0
