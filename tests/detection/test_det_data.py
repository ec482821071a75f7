"""Detection data: label-fraction subsets, ground-truth sampling, box-aware flips, collate."""
import numpy as np
import pytest
import torch

from pointmae import ops
from pointmae.data.boxes import count_points_in_boxes, points_in_boxes
from pointmae.data.detection import (DetectionDataset, box_names_of, class_balanced_indices, collate_detection,
                                     detection_augmentation, label_subset)
from pointmae.data.frame import Frame
from pointmae.data.gt_sampling import GTDatabase, GTSampler
from pointmae.data.transforms import RandomFlipX


def test_label_subset_is_seeded_nested_and_sized():
    a = label_subset(100, 0.1, seed=3)
    assert np.array_equal(a, label_subset(100, 0.1, seed=3))
    assert len(a) == 10 and len(np.unique(a)) == 10 and np.all(np.diff(a) > 0)
    assert not np.array_equal(a, label_subset(100, 0.1, seed=4))
    assert set(a) <= set(label_subset(100, 0.4, seed=3))           # 10% is inside 40% for one seed
    assert len(label_subset(100, 1.0, 0)) == 100
    assert len(label_subset(7, 0.01, 0)) == 1                      # never empty
    with pytest.raises(ValueError, match="label_fraction"):
        label_subset(10, 0.0, 0)


def _object_frame(frame_id, boxes, names, rng, per_box=30, background=200):
    """Points: `per_box` inside each box plus background on a ground plane away from the boxes."""
    pts = [np.c_[rng.uniform(-20, 20, background), rng.uniform(-20, 20, background), np.full(background, -1.9),
                 rng.uniform(0, 1, background)]]
    for b in boxes:
        local = rng.uniform(-0.45, 0.45, (per_box, 3)) * b[3:6]
        c, s = np.cos(b[6]), np.sin(b[6])
        xy = local[:, :2] @ np.array([[c, s], [-s, c]]) + b[:2]
        pts.append(np.c_[xy, local[:, 2] + b[2], rng.uniform(0, 1, per_box)])
    return Frame(points=np.concatenate(pts).astype(np.float32), boxes=np.asarray(boxes, np.float64).reshape(-1, 7),
                 names=np.array(names), frame_id=frame_id)


def _database_frames():
    rng = np.random.default_rng(0)
    frames = []
    for i in range(4):
        boxes, names = [], []
        for k in range(6):   # a row of cars and pedestrians, different places in each frame
            x, y = -15 + 6 * k + i, -10 + 5 * i
            boxes.append([x, y, -1.0, 4.0, 1.8, 1.6, 0.3 * k] if k % 2 == 0 else [x, y, -1.0, 0.8, 0.7, 1.7, 0.1 * k])
            names.append("Car" if k % 2 == 0 else "Pedestrian")
        frames.append(_object_frame(f"db{i}", boxes, names, rng))
    return frames


def test_gt_database_keeps_objects_with_enough_points():
    frames = _database_frames()
    db = GTDatabase.build(frames, ["Car", "Pedestrian"], min_points=10)
    assert db.counts() == {"Car": 12, "Pedestrian": 12}
    assert all(len(p) >= 10 for p in db.points["Car"])
    assert GTDatabase.build(frames, ["Car"], min_points=1000).counts() == {"Car": 0}


def test_gt_sampling_pastes_without_collisions_and_is_deterministic(tmp_path):
    db = GTDatabase.build(_database_frames(), ["Car", "Pedestrian"], min_points=10)
    db.save(tmp_path / "db.pt")
    db = GTDatabase.load(tmp_path / "db.pt")
    rng = np.random.default_rng(1)
    # The target frame already has a car and a big truck (not a sampled class) in the database's area.
    target = _object_frame("t", [[-12, -6, -1.0, 4.0, 1.8, 1.6, 0.0], [0, 0, -0.5, 10.0, 2.6, 3.2, 1.2]],
                           ["Car", "Truck"], rng)
    target.box_meta["num_points"] = np.array([30, 30])
    sampler = GTSampler(db, {"Car": 8, "Pedestrian": 6})
    out = sampler(target, np.random.default_rng(7))
    again = sampler(target, np.random.default_rng(7))
    assert np.array_equal(out.boxes, again.boxes) and np.array_equal(out.points, again.points)
    added = out.box_meta["gt_sampled"]
    assert added.sum() > 0 and not added[:2].any() and len(added) == len(out.boxes)
    assert (out.names[added] != "Truck").all()
    assert np.sum(out.names == "Car") <= 8 and np.sum(out.names == "Pedestrian") <= 6
    iou = ops.box_iou_bev(torch.from_numpy(out.boxes), torch.from_numpy(out.boxes)).numpy()
    np.fill_diagonal(iou, 0)
    assert iou.max() == 0, "pasted objects overlap each other or the frame's own boxes"
    # Every pasted object brings its points; the frame keeps its own objects' points.
    counts = count_points_in_boxes(out.points[:, :3], out.boxes)
    assert np.all(counts[added] >= 10) and np.all(counts[:2] >= 30)
    assert np.array_equal(out.box_meta["num_points"][added], counts[added])


def test_gt_sampling_removes_points_inside_pasted_boxes():
    db = GTDatabase.build(_database_frames()[:1], ["Car"], min_points=10)
    rng = np.random.default_rng(3)
    # Background points scattered through the volume where the database's cars sit.
    clutter = np.c_[rng.uniform(-20, 20, (4000, 2)), rng.uniform(-1.8, -0.2, 4000), rng.uniform(0, 1, 4000)]
    target = Frame(points=clutter.astype(np.float32), frame_id="clutter")
    out = GTSampler(db, {"Car": 3})(target, np.random.default_rng(0))
    assert out.box_meta["gt_sampled"].sum() == 3
    inside = points_in_boxes(out.points[:, :3], out.boxes).any(axis=1)
    pasted = sum(len(p) for p in db.points["Car"]) // len(db.points["Car"])   # all database cars hold 30 points
    assert inside.sum() == 3 * pasted


def test_gt_sampler_rejects_unknown_class():
    db = GTDatabase.build(_database_frames()[:1], ["Car"], min_points=10)
    with pytest.raises(ValueError, match="Cyclist"):
        GTSampler(db, {"Cyclist": 2})


def test_flip_x_keeps_points_inside_their_boxes():
    rng = np.random.default_rng(5)
    frame = _object_frame("f", [[5, 2, -1.0, 4.0, 1.8, 1.6, 0.7], [-3, -4, -1.0, 0.8, 0.7, 1.7, -2.5]],
                          ["Car", "Pedestrian"], rng)
    frame.boxes = np.c_[frame.boxes, [[3.0, 1.0], [0.0, -1.0]]]
    flipped = RandomFlipX(p=1.0)(frame, rng)
    assert np.array_equal(count_points_in_boxes(flipped.points, flipped.boxes),
                          count_points_in_boxes(frame.points, frame.boxes))
    assert np.allclose(flipped.boxes[:, 7], -frame.boxes[:, 7]) and np.allclose(flipped.boxes[:, 8], frame.boxes[:, 8])
    assert RandomFlipX(p=0.0)(frame, rng) is frame


def test_detection_dataset_keeps_class_boxes_and_collates_labels():
    frames = _database_frames()
    ds = DetectionDataset(frames, ["Pedestrian", "Car"], indices=[1, 3],
                          transform=detection_augmentation(None, {}, 0.5, 0.5, 0.3, (0.95, 1.05)))
    torch.manual_seed(0)
    a = [ds[0], ds[1]]
    torch.manual_seed(0)
    b = [ds[0], ds[1]]
    assert all(np.array_equal(x.points, y.points) for x, y in zip(a, b))       # same seed, same samples
    batch = collate_detection(a)
    assert batch["offsets"].tolist() == [0, len(a[0].points), len(a[0].points) + len(a[1].points)]
    assert batch["frame_ids"] == ["db1", "db3"]
    for labels, names in zip(batch["labels"], batch["names"]):
        assert labels.dtype == torch.int64
        assert [["Pedestrian", "Car"][k] for k in labels.tolist()] == list(names)
    only_cars = DetectionDataset(frames, ["Car"])[0]
    assert set(only_cars.names) == {"Car"} and only_cars.box_meta["label"].tolist() == [0, 0, 0]


def test_boxes_without_enough_points_are_dropped():
    rng = np.random.default_rng(2)
    frame = _object_frame("f", [[5, 2, -1.0, 4.0, 1.8, 1.6, 0.0]], ["Car"], rng)
    frame.boxes = np.r_[frame.boxes, [[12.0, -6.0, -1.0, 4.0, 1.8, 1.6, 0.0]]]     # nothing inside this one
    frame.names = np.array(["Car", "Car"])
    counted = DetectionDataset([frame], ["Car"], min_points_in_box=1)[0]
    assert counted.boxes[:, 0].tolist() == [5.0]
    frame.box_meta["num_points"] = np.array([0, 40])                                # the reader's counts win
    assert DetectionDataset([frame], ["Car"], min_points_in_box=1)[0].boxes[:, 0].tolist() == [12.0]
    assert len(DetectionDataset([frame], ["Car"], min_points_in_box=0)[0].boxes) == 2


def test_channel_scales_apply_to_every_point_including_gt_samples():
    # nuScenes intensities are 0..255; the MAE pre-training configs scale them to 0..1, and the
    # detector must see the same units, pasted database objects included.
    frames = []
    for f in _database_frames():
        f.points[:, 3] *= 255.0
        frames.append(f)
    db = GTDatabase.build(frames, ["Car", "Pedestrian"], min_points=10)
    transform = detection_augmentation(db, {"Car": 8, "Pedestrian": 6}, 0.0, 0.5, 0.3, (0.95, 1.05))
    raw = DetectionDataset(frames, ["Car", "Pedestrian"], transform=transform)
    scaled = DetectionDataset(frames, ["Car", "Pedestrian"], transform=transform,
                              channel_scales={"intensity": 1 / 255})
    torch.manual_seed(0)
    a = raw[0]
    torch.manual_seed(0)
    b = scaled[0]
    assert a.box_meta["gt_sampled"].any()
    assert a.points[:, 3].max() > 100 and b.points[:, 3].max() <= 1.0
    np.testing.assert_allclose(b.points[:, 3], a.points[:, 3] / 255, rtol=1e-6)
    np.testing.assert_array_equal(b.points[:, :3], a.points[:, :3])
    with pytest.raises(KeyError, match="intensty"):
        DetectionDataset(frames, ["Car"], channel_scales={"intensty": 0.5})[0]
    # Waymo: scaled, then squashed by tanh (every point, pasted objects included).
    torch.manual_seed(0)
    squashed = DetectionDataset(frames, ["Car", "Pedestrian"], transform=transform, channel_scales={"intensity": 1 / 255},
                                channel_tanh=["intensity"])[0]
    np.testing.assert_allclose(squashed.points[:, 3], np.tanh(a.points[:, 3] / 255), rtol=1e-6)
    np.testing.assert_array_equal(squashed.points[:, :3], a.points[:, :3])
    with pytest.raises(KeyError, match="channel_tanh.*intensty"):
        DetectionDataset(frames, ["Car"], channel_tanh=["intensty"])[0]


def test_class_balanced_resampling_gives_every_class_about_the_same_frames():
    # 8 frames with cars only, 2 with a car and a bicycle: S_car = 10, S_bicycle = 2, p = 10/12, 2/12;
    # each class draws |S_c| * (1/2) / p_c = 6 frames (CBGS / OpenPCDet's balanced resampling).
    names = [["car"]] * 8 + [["car", "bicycle"]] * 2
    picks = class_balanced_indices(names, ["car", "bicycle", "bus"], seed=0)
    assert len(picks) == 12 and picks.dtype == np.int64
    # 'bus' is in no frame: no draws; bicycle's 6 draws are all frames 8 or 9 (the last ones drawn)
    assert set(picks[6:].tolist()) <= {8, 9}
    with_bicycle = sum("bicycle" in names[i] for i in picks)
    assert with_bicycle >= 6                                   # was 2 of 10 frames, now at least half
    assert np.array_equal(picks, class_balanced_indices(names, ["car", "bicycle", "bus"], seed=0))
    assert len(class_balanced_indices([["car", "bicycle"]], ["car", "bicycle"], seed=0)) == 2   # never empty
    assert len(class_balanced_indices([[]], ["car"], seed=0)) == 0


def test_box_names_without_reading_points(shared_data):
    from pointmae.data.nuscenes import NuScenesInfoDataset
    reader = NuScenesInfoDataset(shared_data / "nuscenes" / "n015-2018-07-24-11-22-45+0800.pkl")
    assert np.array_equal(box_names_of(reader, 0), reader[0].names) and len(reader[0].names) > 0
    frames = [Frame(points=np.zeros((1, 4), np.float32), names=np.array(["Car", "Van"]),
                    boxes=np.zeros((2, 7)))]
    assert box_names_of(frames, 0).tolist() == ["Car", "Van"]
