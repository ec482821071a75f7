"""Waymo mAP / mAPH (pointmae.eval.waymo): known values, difficulty rules, matching, real labels, and a
cross-check against the official waymo-open-dataset metrics where that environment exists."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pointmae.data.frame import Frame
from pointmae.data.waymo import read_tfrecord_frames
from pointmae.eval.waymo import (SCORE_CUTOFFS, average_precision, evaluate_waymo, heading_accuracy,
                                 hungarian_match)

ROOT = Path(__file__).resolve().parents[2]
SMALL = "waymo/tfrecord/mmdet3d_val.tfrecord"
BIG = "waymo/tfrecord/pvps_data_one_frame.tfrecord"      # 75 labels of all four types, 2 with no point
SIZES = {"Vehicle": (4.5, 2.0, 1.6), "Pedestrian": (0.8, 0.8, 1.8), "Cyclist": (1.8, 0.7, 1.7)}


def gt_frame(boxes, names, num_points, difficulty=None, frame_id="seg_1000", timestamp=1000):
    boxes = np.asarray(boxes, np.float64).reshape(-1, 7)
    meta = {"num_points": np.asarray(num_points, np.int64)}
    if difficulty is not None:
        meta["difficulty"] = np.asarray(difficulty, np.int64)
    return Frame(points=np.zeros((0, 3), np.float32), channels=("x", "y", "z"), frame_id=frame_id, boxes=boxes,
                 names=np.asarray(names, str), box_meta=meta,
                 meta={"context_name": frame_id.rsplit("_", 1)[0], "timestamp_micros": timestamp})


def pred(frame_id, boxes, scores, names):
    return {"frame_id": frame_id, "boxes": np.asarray(boxes, np.float64).reshape(-1, 7),
            "scores": np.asarray(scores, np.float64), "names": np.asarray(names, str)}


def box(x, y, cls="Vehicle", heading=0.0, z=0.0):
    return [x, y, z, *SIZES[cls], heading]


# ------------------------------------------------------------------------------ AP integral
def test_average_precision_hand_values():
    assert average_precision([1.0], [1.0]) == pytest.approx(1.0)
    assert average_precision([], []) == 0.0
    assert average_precision([1.0], [0.0]) == 0.0                  # nothing found
    # precision 1 up to recall 0.5, then 0.5 up to recall 1. The monotone curve has a step at 0.5
    # that the official code does not keep sharp: it fills recall gaps > 0.05 with points carrying
    # the precision of the higher recall, so the step becomes a ramp between recall 0.5 and 0.55:
    # 0.5 * 1 + 0.05 * (1 + 0.5) / 2 + 0.45 * 0.5 = 0.7625 (a sharp step would give 0.75).
    assert average_precision([1.0, 0.5], [0.5, 1.0]) == pytest.approx(0.7625, abs=1e-6)
    # a point with lower recall and lower precision is dominated (interpolation keeps the max)
    assert average_precision([1.0, 0.5, 0.2], [0.5, 1.0, 0.3]) == pytest.approx(0.7625, abs=1e-6)
    # recall gaps <= 0.05 are integrated as straight trapezoids: (1, 0.96) -> (0.5, 1.0)
    two_close = average_precision([1.0, 0.5], [0.96, 1.0])
    assert two_close == pytest.approx(0.96 + 0.04 * 0.75, abs=1e-6)
    with pytest.raises(ValueError, match="same length"):
        average_precision([1.0, 0.5], [1.0])
    with pytest.raises(ValueError, match="recall_delta"):
        average_precision([1.0], [1.0], recall_delta=0.0)


def test_heading_accuracy_values():
    np.testing.assert_allclose(heading_accuracy([0.0, np.pi / 2, np.pi, -np.pi, 3.0], [0.0, 0.0, 0.0, np.pi, -3.0]),
                               [1.0, 0.5, 0.0, 1.0, 1 - (2 * np.pi - 6.0) / np.pi], atol=1e-12)


def test_hungarian_maximises_the_sum_of_ious_not_the_score_order():
    # the official matcher test's IoU matrix (prediction x ground truth), threshold 0.5:
    # best total IoU is p1-g0 (1.0) + p2-g1 (0.71), although p1-g1 and p0-g0 are also valid pairs
    iou = np.array([[0.60, 0], [1.0, 0.70], [0.65, 0.71], [0, 0]])
    np.testing.assert_array_equal(hungarian_match(iou >= 0.5, np.round(iou * 1e6)), [-1, 0, 1, -1])
    assert (hungarian_match(np.zeros((3, 0), bool), np.zeros((3, 0))) == -1).all()


# ------------------------------------------------------------------------------ whole evaluation
def test_ground_truth_as_predictions_and_flipped_heading():
    rng = np.random.default_rng(0)
    frames, preds, flipped = [], [], []
    for f in range(3):
        names = rng.choice(list(SIZES), 12)
        boxes = np.array([box(*rng.uniform(-50, 50, 2), c, rng.uniform(-np.pi, np.pi)) for c in names])
        frame = gt_frame(boxes, names, rng.integers(1, 30, 12), frame_id=f"seg_{f}", timestamp=f)
        frames.append(frame)
        preds.append(pred(frame.frame_id, boxes, rng.uniform(0.1, 1, 12), names))
        turned = boxes.copy()
        turned[:, 6] += np.pi
        flipped.append(pred(frame.frame_id, turned, preds[-1]["scores"], names))
    perfect = evaluate_waymo(preds, frames)
    reverse = evaluate_waymo(flipped, frames)
    for cls in SIZES:
        for level in (1, 2):
            assert perfect.per_class[cls][level].ap == pytest.approx(1.0, abs=1e-6)
            assert perfect.per_class[cls][level].aph == pytest.approx(1.0, abs=1e-6)
            assert reverse.per_class[cls][level].ap == pytest.approx(1.0, abs=1e-6)   # IoU ignores direction
            assert reverse.per_class[cls][level].aph == pytest.approx(0.0, abs=1e-6)
    assert perfect.mean[2] == pytest.approx({"mAP": 1.0, "mAPH": 1.0}, abs=1e-6)
    assert "Vehicle" in perfect.table() and "LEVEL_2" in perfect.table()


def test_known_detection_scenario():
    # two vehicles; detections: an exact one (0.9), a far false positive (0.8), one shifted by 1 m
    # along its length: IoU (4.5 - 1) / (4.5 + 1) = 0.636 < 0.7, so a false positive for a vehicle
    gt = gt_frame([box(0, 0), box(20, 0)], ["Vehicle", "Vehicle"], [50, 50])
    dets = pred(gt.frame_id, [box(0, 0), box(-40, 10), box(21, 0)], [0.9, 0.8, 0.7], ["Vehicle"] * 3)
    m = evaluate_waymo([dets], [gt]).per_class["Vehicle"][1]
    # cutoffs <= 0.7: TP 1, FP 2 -> (1/3, 0.5); (0.7, 0.8]: (0.5, 0.5); (0.8, 0.9]: (1, 0.5); above: r = 0
    k = np.searchsorted(SCORE_CUTOFFS, np.float32([0.5, 0.75, 0.85, 0.95]))
    np.testing.assert_allclose(m.precisions[k], [1 / 3, 0.5, 1.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(m.recalls[k], [0.5, 0.5, 0.5, 0.0], atol=1e-6)
    assert m.ap == pytest.approx(0.5, abs=1e-6)
    # the same geometry for cyclists (threshold 0.5) with cyclist-sized boxes shifted by 0.5 m:
    # IoU (1.8 - 0.5) / (1.8 + 0.5) = 0.565 >= 0.5, so both are found
    gt_c = gt_frame([box(0, 0, "Cyclist"), box(20, 0, "Cyclist")], ["Cyclist"] * 2, [50, 50])
    dets_c = pred(gt_c.frame_id, [box(0, 0, "Cyclist"), box(20.5, 0, "Cyclist")], [0.9, 0.7], ["Cyclist"] * 2)
    assert evaluate_waymo([dets_c], [gt_c]).per_class["Cyclist"][1].ap == pytest.approx(1.0, abs=1e-6)
    # heading off by 90 degrees on a perfect match: APH = AP / 2
    dets_h = pred(gt.frame_id, [box(0, 0, heading=np.pi / 2)], [0.9], ["Vehicle"])
    square = gt_frame([[0, 0, 0, 3, 3, 1.5, 0.0]], ["Vehicle"], [50])     # square, so IoU stays 1
    dets_h["boxes"][:, 3:6] = [3, 3, 1.5]
    m_h = evaluate_waymo([dets_h], [square]).per_class["Vehicle"][1]
    assert (m_h.ap, m_h.aph) == pytest.approx((1.0, 0.5), abs=1e-6)


def test_difficulty_levels_and_zero_point_boxes():
    # A: 20 points, unset -> LEVEL_1; B: 3 points, unset -> LEVEL_2; C: 100 points but labelled LEVEL_2;
    # D: 0 points -> dropped, so a detection on it is a false positive
    boxes = [box(0, 0), box(20, 0), box(40, 0), box(60, 0)]
    gt = gt_frame(boxes, ["Vehicle"] * 4, [20, 3, 100, 0], difficulty=[0, 0, 2, 0])
    only_a = evaluate_waymo([pred(gt.frame_id, [boxes[0]], [0.9], ["Vehicle"])], [gt]).per_class["Vehicle"]
    assert (only_a[1].num_gt, only_a[2].num_gt) == (1, 3)
    assert only_a[1].ap == pytest.approx(1.0, abs=1e-6)
    assert only_a[2].ap == pytest.approx(1 / 3, abs=1e-6)
    # a match to a LEVEL_2 box is a TP at LEVEL_1 too (the official rule), unmatched LEVEL_2 boxes
    # are not LEVEL_1 misses: B and C found, A missed -> LEVEL_1 recall 2 / 3
    b_and_c = evaluate_waymo([pred(gt.frame_id, boxes[1:3], [0.9, 0.9], ["Vehicle"] * 2)], [gt]).per_class["Vehicle"]
    assert b_and_c[1].recalls[0] == pytest.approx(2 / 3, abs=1e-6)
    assert b_and_c[2].recalls[0] == pytest.approx(2 / 3, abs=1e-6)
    on_d = evaluate_waymo([pred(gt.frame_id, [boxes[0], boxes[3]], [0.9, 0.8], ["Vehicle"] * 2)], [gt])
    np.testing.assert_allclose(on_d.per_class["Vehicle"][1].precisions[0], 0.5, atol=1e-6)
    assert on_d.averaged_classes[1] == ["Vehicle"]         # no pedestrian / cyclist ground truth


def test_order_invariance_and_aph_bound():
    rng = np.random.default_rng(3)
    frames, preds = _random_scene(rng, num_frames=4)
    base = evaluate_waymo(preds, frames)
    order = rng.permutation(len(preds))
    shuffled = []
    for i in order:
        p = preds[i]
        perm = rng.permutation(len(p["scores"]))
        shuffled.append({k: (v[perm] if k != "frame_id" else v) for k, v in p.items()})
    again = evaluate_waymo(shuffled, frames[::-1])
    for cls in SIZES:
        for level in (1, 2):
            a, b = base.per_class[cls][level], again.per_class[cls][level]
            assert (a.ap, a.aph) == pytest.approx((b.ap, b.aph), abs=1e-6)
            assert 0.0 <= a.aph <= a.ap + 1e-6 <= 1.0 + 1e-6
            assert a.num_gt > 0
    # determinism: the same input twice gives identical numbers
    assert evaluate_waymo(preds, frames).mean == base.mean


def test_more_noise_lowers_ap_on_real_labels(shared_data):
    frames = read_tfrecord_frames(shared_data / SMALL)          # 1 vehicle, 17 signs, real difficulties
    frame = frames[0]
    rng = np.random.default_rng(1)
    aps = []
    for sigma in (0.0, 0.1, 0.3, 1.0):
        boxes = frame.boxes[:, :7].copy()
        boxes[:, :2] += rng.normal(0, sigma, (len(boxes), 2))
        result = evaluate_waymo([pred(frame.frame_id, boxes, np.linspace(1, 0.5, len(boxes)), frame.names)], frames,
                                classes=("Vehicle", "Sign"))
        aps.append(result.per_class["Sign"][2].ap)
        assert result.per_class["Sign"][2].num_gt == int((frame.names == "Sign").sum())
    assert aps[0] == pytest.approx(1.0, abs=1e-6)
    assert aps[0] >= aps[1] >= aps[2] >= aps[3] and aps[3] < 0.5


@pytest.mark.slow
def test_real_frame_with_all_types(shared_data):
    (frame,) = read_tfrecord_frames(shared_data / BIG)          # ~1.5 s of pure-Python CRC
    points = frame.box_meta["num_points"]
    seen = points > 0
    classes = ("Vehicle", "Pedestrian", "Cyclist", "Sign")
    perfect = evaluate_waymo([pred(frame.frame_id, frame.boxes[seen, :7], np.full(seen.sum(), 0.9), frame.names[seen])],
                             [frame], classes=classes)
    for cls in classes:
        has = (frame.names == cls) & seen
        for level in (1, 2):
            m = perfect.per_class[cls][level]
            assert m.num_gt == int((has & (frame.box_meta["difficulty"] <= level)).sum())
            if m.num_gt:
                assert (m.ap, m.aph) == pytest.approx((1.0, 1.0), abs=1e-6)
    # the two boxes without points are not ground truth: predicting them too costs precision
    assert (~seen).sum() == 2
    everything = evaluate_waymo([pred(frame.frame_id, frame.boxes[:, :7], np.full(len(seen), 0.9), frame.names)],
                                [frame], classes=classes)
    assert min(everything.per_class[c][2].ap for c in set(frame.names[~seen])) < 1.0


def test_bad_input_is_named():
    gt = gt_frame([box(0, 0)], ["Vehicle"], [10])
    with pytest.raises(ValueError, match="not in the ground truth"):
        evaluate_waymo([pred("other_1", [box(0, 0)], [0.5], ["Vehicle"])], [gt])
    with pytest.raises(ValueError, match=r"1 boxes, 2 scores"):
        evaluate_waymo([pred(gt.frame_id, [box(0, 0)], [0.5, 0.2], ["Vehicle"])], [gt])
    with pytest.raises(ValueError, match="finite"):
        evaluate_waymo([pred(gt.frame_id, [box(np.nan, 0)], [0.5], ["Vehicle"])], [gt])
    with pytest.raises(ValueError, match="appears twice"):
        evaluate_waymo([pred(gt.frame_id, [], [], [])] * 2, [gt])
    with pytest.raises(ValueError, match="num_points"):
        evaluate_waymo([], [Frame(points=np.zeros((0, 3), np.float32), channels=("x", "y", "z"), frame_id="a_1",
                                  boxes=np.array([box(0, 0)]), names=np.array(["Vehicle"]))])
    with pytest.raises(ValueError, match=r"names \['Car'\] are not Waymo types"):
        evaluate_waymo([pred(gt.frame_id, [box(0, 0)], [0.5], ["Car"])], [gt])
    with pytest.raises(ValueError, match="IoU threshold"):
        evaluate_waymo([], [gt], classes=("Truck",))


# ------------------------------------------------------------------------------ official cross-check
def _official_python():
    """An interpreter that can import waymo_open_dataset: $POINTMAE_WAYMO_PYTHON, or this one."""
    candidate = os.environ.get("POINTMAE_WAYMO_PYTHON")
    if candidate:
        return candidate
    return sys.executable if importlib.util.find_spec("waymo_open_dataset") else None


def _random_scene(rng, num_frames=5):
    frames, preds = [], []
    for f in range(num_frames):
        n = int(rng.integers(4, 25))
        names = rng.choice(list(SIZES), n)
        boxes = np.array([box(*rng.uniform(-60, 60, 2), c, rng.uniform(-np.pi, np.pi), rng.uniform(-1, 2)) for c in names])
        frames.append(gt_frame(boxes, names, rng.integers(0, 40, n), rng.choice([0, 0, 0, 1, 2], n),
                               frame_id=f"seg{f % 2}_{1000 + f}", timestamp=1000 + f))
        keep = rng.random(n) < 0.8
        found, kinds = boxes[keep].copy(), names[keep]
        found[:, :3] += rng.normal(0, 0.1, (len(found), 3))
        found[:, 3:6] *= rng.uniform(0.93, 1.07, (len(found), 3))
        found[:, 6] += rng.choice([0, 0, 0, np.pi / 2, np.pi], len(found)) + rng.normal(0, 0.1, len(found))
        doubles = found[: len(found) // 4] + np.r_[rng.normal(0, 0.3, 2), np.zeros(5)]
        false = np.array([box(*rng.uniform(-60, 60, 2)) for _ in range(int(rng.integers(0, 6)))]).reshape(-1, 7)
        all_boxes = np.concatenate([found, doubles, false])
        all_names = np.concatenate([kinds, kinds[: len(doubles)], ["Vehicle"] * len(false)])
        preds.append(pred(frames[-1].frame_id, all_boxes, np.round(rng.random(len(all_boxes)), 3), all_names))
    return frames, preds


def test_matches_official_waymo_metrics(tmp_path, shared_data):
    python = _official_python()
    if python is None:
        pytest.skip("waymo_open_dataset is not importable here and POINTMAE_WAYMO_PYTHON is unset: create the "
                    "waymo environment (docs/waymo.md) and set POINTMAE_WAYMO_PYTHON=<that env>/bin/python")
    from pointmae.submission.waymo import encode_ground_truth_objects, encode_prediction_objects, write_objects_file
    rng = np.random.default_rng(7)
    frames, preds = _random_scene(rng)
    for real in read_tfrecord_frames(shared_data / SMALL) + read_tfrecord_frames(shared_data / BIG):
        # real labels, difficulties and point counts; detections: all labels, jittered, random scores
        found = real.boxes[:, :7] + np.c_[rng.normal(0, 0.1, (len(real.boxes), 3)), np.zeros((len(real.boxes), 4))]
        frames.append(real)
        preds.append(pred(real.frame_id, found, np.round(rng.random(len(found)), 3), real.names))
    write_objects_file(tmp_path / "pd.bin", encode_prediction_objects(preds, frames, (*SIZES, "Sign"), min_score=0.0))
    (tmp_path / "gt.bin").write_bytes(encode_ground_truth_objects(frames))
    run = subprocess.run([python, str(ROOT / "tools" / "waymo_official_metrics.py"), str(tmp_path / "pd.bin"),
                          str(tmp_path / "gt.bin")], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    official = json.loads(run.stdout)
    ours = evaluate_waymo(preds, frames, classes=(*SIZES, "Sign"))
    compared = 0
    for cls in (*SIZES, "Sign"):
        for level in (1, 2):
            theirs = official[f"OBJECT_TYPE_TYPE_{cls.upper()}_LEVEL_{level}"]
            mine = ours.per_class[cls][level]
            assert mine.ap == pytest.approx(theirs["AP"], abs=1e-5), (cls, level)
            assert mine.aph == pytest.approx(theirs["APH"], abs=1e-5), (cls, level)
            compared += mine.ap > 0.05
    assert compared >= 6          # the scene is not degenerate: most APs are far from 0
