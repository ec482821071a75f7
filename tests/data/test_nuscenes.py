import json
import pickle

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from pointmae.data.boxes import count_points_in_boxes, invert_pose, transform_points, wrap_angle
from pointmae.data.errors import DataError
from pointmae.data.nuscenes import (NuScenesInfoDataset, NuScenesTables, ego_to_lidar_boxes, global_to_lidar_boxes,
                                    lidar_to_ego_boxes, lidar_to_global_boxes, pose_matrix, quaternion_to_matrix)
from pointmae.data.sweeps import Sweep, accumulate_sweeps

INFO = "nuscenes/n015-2018-07-24-11-22-45+0800.pkl"
SWEEP_FRAGMENT = "n008-2018-09-18-12-07-26-0400__LIDAR_TOP__1537287083900561.pcd.bin"


@pytest.fixture(scope="module")
def info_frame(shared_data):
    return NuScenesInfoDataset(shared_data / INFO)[0]


def test_info_pickle_sample(info_frame):
    f = info_frame
    assert f.frame_id == "ca9a282c9e77460f8360f564131a8af5"
    assert f.num_points == 34688 and f.channels == ("x", "y", "z", "intensity", "ring")
    assert f.timestamp == pytest.approx(1532402927.647951)
    assert f.boxes.shape == (69, 9) and "car" in f.names
    # Gravity-centre boxes reproduce the info's num_lidar_pts (within a few boundary points).
    counts = count_points_in_boxes(f.points, f.boxes)
    assert np.abs(counts - f.box_meta["num_points"]).sum() <= 0.05 * f.box_meta["num_points"].sum()
    # pointmae axes: the sensor's x is the ego's forward axis.
    sensor_in_ego = invert_pose(f.meta["ego2global"]) @ f.pose
    np.testing.assert_allclose(sensor_in_ego[:3, :3], np.eye(3), atol=0.03)


def test_info_raw_axes_match_mmdet3d(shared_data, info_frame):
    raw = NuScenesInfoDataset(shared_data / INFO, axes="nuscenes")[0]
    np.testing.assert_array_equal(raw.points[:, 0], -info_frame.points[:, 1])
    # (lidar2ego is stored in float32 precision, so it is orthonormal to ~1e-7 only)
    np.testing.assert_allclose(raw.pose @ invert_pose(raw.meta["lidar2ego"]), info_frame.meta["ego2global"], atol=1e-6)
    np.testing.assert_array_equal(count_points_in_boxes(raw.points, raw.boxes),
                                  count_points_in_boxes(info_frame.points, info_frame.boxes))


def test_box_conversions_round_trip_exactly(info_frame):
    lidar2ego, ego2global = info_frame.meta["lidar2ego"], info_frame.meta["ego2global"]
    boxes = np.nan_to_num(info_frame.boxes)
    back = global_to_lidar_boxes(lidar_to_global_boxes(boxes, lidar2ego, ego2global), lidar2ego, ego2global)
    np.testing.assert_allclose(back[:, [0, 1, 2, 3, 4, 5, 7, 8]], boxes[:, [0, 1, 2, 3, 4, 5, 7, 8]], atol=1e-9)
    np.testing.assert_allclose(wrap_angle(back[:, 6] - boxes[:, 6]), 0, atol=1e-12)
    back = ego_to_lidar_boxes(lidar_to_ego_boxes(boxes, lidar2ego), lidar2ego)
    np.testing.assert_allclose(wrap_angle(back[:, 6] - boxes[:, 6]), 0, atol=1e-12)


def test_quaternion_convention():
    q = Rotation.from_euler("xyz", [0.1, -0.2, 0.7])
    x, y, z, w = q.as_quat()
    np.testing.assert_allclose(quaternion_to_matrix([w, x, y, z]), q.as_matrix(), atol=1e-12)


def random_pose(rng):
    pose = np.eye(4)
    pose[:3, :3] = Rotation.from_euler("xyz", [*rng.uniform(-0.05, 0.05, 2), rng.uniform(-np.pi, np.pi)]).as_matrix()
    pose[:3, 3] = rng.normal(size=3) * 50
    return pose


def test_sweep_accumulation_compensates_ego_motion():
    rng = np.random.default_rng(0)
    world = np.c_[rng.uniform(-30, 30, (200, 3)), rng.uniform(0, 1, (200, 1))]
    poses = [random_pose(rng) for _ in range(4)]
    sweeps = [Sweep(transform_points(world, invert_pose(p)).astype(np.float32), p, 10.0 - 0.05 * i)
              for i, p in enumerate(poses)]
    points, counts = accumulate_sweeps(sweeps[0], sweeps[1:])
    assert points.shape == (800, 5) and counts["points_per_sweep"] == [200] * 4
    expected = transform_points(world, invert_pose(poses[0]))
    for i in range(4):
        np.testing.assert_allclose(points[200 * i:200 * (i + 1), :4], expected, atol=1e-3)
        np.testing.assert_allclose(points[200 * i:200 * (i + 1), 4], 0.05 * i, atol=1e-6)


def test_close_points_are_removed_and_counted():
    pts = np.array([[0.5, 0.2, 0, 1], [5, 5, 0, 1]], np.float32)
    points, counts = accumulate_sweeps(Sweep(pts, np.eye(4), 1.0), [Sweep(pts, np.eye(4), 0.5)], close_radius=1.0)
    assert len(points) == 2 and counts["removed_close"] == 2


def test_v1_info_with_sweeps(shared_data, tmp_path):
    """An mmdet3d 1.0-style info whose sweep is the real fragment file; paths as mmdet3d writes them."""
    lidar2ego_q = Rotation.from_euler("z", -np.pi / 2).as_quat()[[3, 0, 1, 2]]
    info = {"infos": [{
        "token": "t0", "timestamp": 2_000_000, "lidar_path": "./data/nuscenes/sweeps/LIDAR_TOP/" + SWEEP_FRAGMENT,
        "lidar2ego_translation": [1.0, 0.0, 1.8], "lidar2ego_rotation": lidar2ego_q,
        "ego2global_translation": [100.0, 50.0, 0.0], "ego2global_rotation": [1.0, 0, 0, 0],
        "sweeps": [{"data_path": "./data/nuscenes/sweeps/LIDAR_TOP/" + SWEEP_FRAGMENT, "timestamp": 1_950_000,
                    "sensor2lidar_rotation": np.eye(3), "sensor2lidar_translation": np.array([2.0, 0, 0])}],
        "gt_boxes": np.array([[1.0, 2.0, 0.0, 4.0, 2.0, 1.5, 0.3]]), "gt_names": np.array(["car"]),
        "gt_velocity": np.array([[1.0, 0.0]]), "num_lidar_pts": np.array([3])}]}
    path = tmp_path / "infos.pkl"
    path.write_bytes(pickle.dumps(info))
    frame = NuScenesInfoDataset(path, data_root=shared_data / "nuscenes", num_sweeps=3, close_radius=0.0)[0]
    assert frame.channels[-1] == "time_lag" and frame.num_points == 800
    assert frame.meta["sweeps_used"] == 1 and frame.meta["sweeps_requested"] == 3
    lag = frame.channel("time_lag")
    np.testing.assert_allclose(np.unique(lag), [0.0, 0.05], atol=1e-6)
    # The sweep is the same points moved 2 m along the LIDAR_TOP x axis (= pointmae -y).
    np.testing.assert_allclose(frame.points[400:, :3] - frame.points[:400, :3], np.tile([0, -2.0, 0], (400, 1)), atol=1e-5)
    np.testing.assert_allclose(frame.boxes[0, :3], [2.0, -1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(frame.boxes[0, 7:], [0.0, -1.0], atol=1e-12)


def test_v2_info_with_sweeps(shared_data, tmp_path):
    """A v1.1 info as mmdet3d's update_infos_to_v2 writes sweeps: top-level ego2global, lidar2ego."""
    raw = pickle.loads((shared_data / INFO).read_bytes())
    sample = raw["data_list"][0]
    ego2global = np.array(sample["ego2global"])
    moved = ego2global.copy()
    moved[:3, 3] -= ego2global[:3, :3] @ [3.0, 0.0, 0.0]          # the ego was 3 m further back
    sample["lidar_sweeps"] = [{"lidar_points": {"lidar_path": sample["lidar_points"]["lidar_path"],
                                                "lidar2ego": sample["lidar_points"]["lidar2ego"]},
                               "ego2global": moved.tolist(), "timestamp": sample["timestamp"] - 0.05}]
    path = tmp_path / "v2.pkl"
    path.write_bytes(pickle.dumps(raw))
    frame = NuScenesInfoDataset(path, data_root=shared_data / "nuscenes", num_sweeps=1, close_radius=0.0)[0]
    n = 34688
    # The same points seen from 3 m further back land 3 m behind (in ego axes ~ sensor axes).
    shift = frame.points[n:, :3].astype(np.float64) - frame.points[:n, :3]
    np.testing.assert_allclose(np.median(shift, axis=0), [-3.0, 0.0, 0.0], atol=0.1)
    del sample["lidar_sweeps"][0]["ego2global"]
    path.write_bytes(pickle.dumps(raw))
    with pytest.raises(DataError, match="neither ego2global"):
        NuScenesInfoDataset(path, data_root=shared_data / "nuscenes")


def test_bad_info_files(tmp_path):
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="bad.pkl: cannot unpickle"):
        NuScenesInfoDataset(bad)
    bad.write_bytes(pickle.dumps({"data_list": [{"token": "x"}]}))
    with pytest.raises(DataError, match=r"data_list\[0\]: malformed entry"):
        NuScenesInfoDataset(bad)
    bad.write_bytes(pickle.dumps({"data_list": [{"timestamp": 1.0, "ego2global": np.eye(4).tolist(),
                                                 "lidar_points": {"lidar_path": "gone.pcd.bin", "lidar2ego": np.eye(4).tolist()}}]}))
    with pytest.raises(DataError, match="gone.pcd.bin: file not found"):
        NuScenesInfoDataset(bad)[0]


# ---------------------------------------------------------------------------- devkit tables
def write_tables(root, rng):
    """A tiny v1.0-test set: one scene, 2 keyframes of LIDAR_TOP with one sweep between them, one
    moving car. Points are a fixed world point cloud seen from each ego pose."""
    world = rng.uniform(-20, 20, (300, 3))
    tables = {k: [] for k in ("sample", "sample_data", "ego_pose", "calibrated_sensor", "sensor",
                              "sample_annotation", "instance", "category", "scene")}
    tables["sensor"].append({"token": "s_lidar", "channel": "LIDAR_TOP", "modality": "lidar"})
    l2e_q = Rotation.from_euler("z", -np.pi / 2).as_quat()[[3, 0, 1, 2]].tolist()
    tables["calibrated_sensor"].append({"token": "cs", "sensor_token": "s_lidar", "translation": [0.9, 0.0, 1.8],
                                        "rotation": l2e_q, "camera_intrinsic": []})
    tables["scene"].append({"token": "scene0", "name": "scene-0001", "first_sample_token": "k0", "last_sample_token": "k1"})
    tables["category"].append({"token": "cat", "name": "vehicle.car"})
    tables["instance"].append({"token": "inst", "category_token": "cat"})
    times = [1_000_000, 1_250_000, 1_500_000]     # k0, sweep, k1 (us)
    tokens = ["sd0", "sd1", "sd2"]
    (root / "samples" / "LIDAR_TOP").mkdir(parents=True)
    (root / "sweeps" / "LIDAR_TOP").mkdir(parents=True)
    poses = []
    for i, (t, tok) in enumerate(zip(times, tokens)):
        yaw = 0.1 * i
        q = Rotation.from_euler("z", yaw).as_quat()[[3, 0, 1, 2]].tolist()
        translation = [10.0 * i, 2.0 * i, 0.0]
        tables["ego_pose"].append({"token": f"ep{i}", "timestamp": t, "translation": translation, "rotation": q})
        sensor_pose = pose_matrix(translation, q) @ pose_matrix([0.9, 0, 1.8], l2e_q)
        poses.append(sensor_pose)
        key = i != 1
        folder = "samples" if key else "sweeps"
        filename = f"{folder}/LIDAR_TOP/{tok}.pcd.bin"
        local = transform_points(world, invert_pose(sensor_pose))
        np.c_[local, np.full((300, 1), 7.0), np.zeros((300, 1))].astype("<f4").tofile(root / filename)
        tables["sample_data"].append({"token": tok, "sample_token": "k0" if i == 0 else "k1", "ego_pose_token": f"ep{i}",
                                      "calibrated_sensor_token": "cs", "timestamp": t, "fileformat": "pcd",
                                      "is_key_frame": key, "filename": filename, "prev": tokens[i - 1] if i else "",
                                      "next": tokens[i + 1] if i < 2 else ""})
    tables["sample"] += [{"token": "k0", "timestamp": times[0], "scene_token": "scene0", "prev": "", "next": "k1"},
                         {"token": "k1", "timestamp": times[2], "scene_token": "scene0", "prev": "k0", "next": ""}]
    car_q = Rotation.from_euler("z", 0.5).as_quat()[[3, 0, 1, 2]].tolist()
    tables["sample_annotation"] += [
        {"token": "a0", "sample_token": "k0", "instance_token": "inst", "translation": [15.0, 5.0, 1.0],
         "size": [1.8, 4.5, 1.6], "rotation": car_q, "num_lidar_pts": 12, "prev": "", "next": "a1"},
        {"token": "a1", "sample_token": "k1", "instance_token": "inst", "translation": [20.0, 5.0, 1.0],
         "size": [1.8, 4.5, 1.6], "rotation": car_q, "num_lidar_pts": 10, "prev": "a0", "next": ""}]
    (root / "v1.0-test").mkdir()
    for name, rows in tables.items():
        (root / "v1.0-test" / f"{name}.json").write_text(json.dumps(rows))
    return world, poses


def test_tables_reader(tmp_path):
    world, poses = write_tables(tmp_path, np.random.default_rng(0))
    nusc = NuScenesTables(tmp_path, "v1.0-test")
    assert nusc.sample_tokens == ["k0", "k1"]
    frame = nusc.frame("k1", num_sweeps=5, close_radius=0.0)
    assert frame.meta["sweeps_used"] == 2 and frame.meta["points_per_sweep"] == [300, 300, 300]
    # Ego-motion compensation: the three sweeps of the static world coincide.
    xyz = frame.points[:, :3].reshape(3, 300, 3)
    np.testing.assert_allclose(xyz[1], xyz[0], atol=1e-3)
    np.testing.assert_allclose(xyz[2], xyz[0], atol=1e-3)
    np.testing.assert_allclose(np.unique(frame.channel("time_lag")), [0.0, 0.25, 0.5], atol=1e-6)
    # pointmae axes: sensor x = ego forward
    np.testing.assert_allclose((invert_pose(frame.meta["ego2global"]) @ frame.pose)[:3, :3], np.eye(3), atol=1e-12)
    # The annotation: global box -> sensor frame, the devkit's velocity (5 m over 0.5 s, +x global).
    assert frame.names.tolist() == ["vehicle.car"]
    box = frame.boxes[0]
    centre_world = frame.pose @ np.r_[box[:3], 1]
    np.testing.assert_allclose(centre_world[:3], [20.0, 5.0, 1.0], atol=1e-9)
    np.testing.assert_allclose(frame.pose[:2, :2] @ box[7:9], [10.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(box[3:6], [4.5, 1.8, 1.6])
    assert wrap_angle(box[6] + 0.2 - 0.5) == pytest.approx(0.0, abs=1e-9)   # ego yaw 0.2 at k1
    previous, current = nusc.temporal_pair(1)
    assert previous.frame_id == "k0" and current.frame_id == "k1"
    assert nusc.temporal_pair(0)[0] is None


def test_tables_bad_json(tmp_path):
    write_tables(tmp_path, np.random.default_rng(0))
    (tmp_path / "v1.0-test" / "sample.json").write_text('[{"token": "k0",\n oops}]')
    with pytest.raises(DataError, match=r"sample.json:2: invalid JSON"):
        NuScenesTables(tmp_path, "v1.0-test")
    with pytest.raises(DataError, match="v1.0-trainval"):
        NuScenesTables(tmp_path, "v1.0-trainval")


def test_accumulate_frames_on_synthetic_sequence():
    from pointmae.data.lidar_datasets import SyntheticFrames
    from pointmae.data.sweeps import accumulate_frames
    from pointmae.data.synthetic import sensor_preset
    frames = SyntheticFrames(3, seed=1, sensor=sensor_preset("nuscenes32").with_(azimuth_resolution_deg=2.0),
                             frames_per_sequence=3)
    current, previous = frames[2], [frames[1], frames[0]]
    stacked = accumulate_frames(current, previous, close_radius=0.0)
    assert stacked.channels[-1] == "time_lag" and stacked.num_points == sum(f.num_points for f in [current, *previous])
    np.testing.assert_allclose(np.unique(stacked.channel("time_lag")), [0.0, 0.1, 0.2], atol=1e-6)
    # The static world lines up: each previous sweep's points moved into the current frame sit on the
    # same world positions as before.
    old = stacked.points[current.num_points:current.num_points + previous[0].num_points, :3].astype(np.float64)
    world_old = previous[0].points[:, :3].astype(np.float64) @ previous[0].pose[:3, :3].T + previous[0].pose[:3, 3]
    np.testing.assert_allclose(old @ current.pose[:3, :3].T + current.pose[:3, 3], world_old, atol=1e-3)
