"""The LiDAR pre-training data pipeline: channels, crop, augmentation, sensor origins, and the
previous sweep aligned into the current sensor frame (the contract the temporal models rely on)."""
import numpy as np
import pytest
import torch

from pointmae.config import config_from_dict
from pointmae.data.boxes import rotation_z
from pointmae.data.frame import Frame
from pointmae.data.lidar_pretrain import LidarPretrainDataset, align_to_frame, pretrain_augmentation
from pointmae.engine.builders import build_dataset


def _pose(yaw, tx, ty, tz=0.0):
    pose = np.eye(4)
    pose[:3, :3] = rotation_z(yaw)
    pose[:3, 3] = (tx, ty, tz)
    return pose


class StaticWorldReader:
    """Frames of one static world seen from a moving sensor: frame k sees the same world points."""

    def __init__(self, poses, num_points=500, seed=0):
        rng = np.random.default_rng(seed)
        self.poses = poses
        # World points kept well inside every frame's crop range (a 10 m ball around the path).
        self.world = rng.uniform(-8, 8, size=(num_points, 3)) + np.array([2.0, 1.0, 0.0])
        self.world[:, 2] = rng.uniform(-1.5, 1.5, num_points)
        self.intensity = rng.uniform(0, 1, num_points).astype(np.float32)

    def __len__(self):
        return len(self.poses)

    def __getitem__(self, k):
        inv = np.linalg.inv(self.poses[k])
        xyz = self.world @ inv[:3, :3].T + inv[:3, 3]
        points = np.c_[xyz, self.intensity, np.full(len(xyz), 7.0)].astype(np.float32)
        return Frame(points=points, channels=("x", "y", "z", "intensity", "ring"), pose=self.poses[k],
                     timestamp=float(k), frame_id=f"{k:06d}", sequence_id="s")

    def previous(self, k, gap=1):
        return self[k - gap] if k >= gap else None


POSES = [_pose(0.0, 0.0, 0.0), _pose(0.3, 1.5, -0.7, 0.1), _pose(0.5, 2.5, -0.2, 0.1)]
RANGE = (-30.0, -30.0, -4.0, 30.0, 30.0, 4.0)


def test_align_to_frame_brings_the_previous_sweep_onto_the_current():
    reader = StaticWorldReader(POSES)
    aligned = align_to_frame(reader[0], reader[1])
    np.testing.assert_allclose(aligned.points[:, :3], reader[1].points[:, :3], atol=1e-4)
    np.testing.assert_array_equal(aligned.points[:, 3:], reader[0].points[:, 3:])
    # The previous sensor sits where the current frame sees the previous pose's origin.
    expected = np.linalg.inv(POSES[1]) @ np.r_[POSES[0][:3, 3], 1.0]
    np.testing.assert_allclose(aligned.meta["origin_in_current"], expected[:3], atol=1e-12)
    # Unaligned they differ by metres: the test above can fail.
    assert np.abs(reader[0].points[:, :3] - reader[1].points[:, :3]).max() > 1.0


@pytest.mark.parametrize("augment", [False, True])
def test_previous_sweep_is_aligned_and_augmented_identically(augment):
    torch.manual_seed(0)
    reader = StaticWorldReader(POSES)
    aug = pretrain_augmentation(0.5, 45.0, (0.9, 1.1), (0.5, 0.5, 0.2)) if augment else None
    ds = LidarPretrainDataset(reader, ("x", "y", "z", "intensity"), RANGE, num_previous=1, augment=aug)
    batch = ds.collate_fn([ds[0], ds[1], ds[2]])
    assert batch["points"].shape == (1500, 4) and batch["prev_points"].shape == (1500, 4)
    assert batch["has_prev"].tolist() == [False, True, True]
    for b in (1, 2):
        cur = batch["points"][batch["offsets"][b]:batch["offsets"][b + 1]]
        prev = batch["prev_points"][batch["prev_offsets"][b]:batch["prev_offsets"][b + 1]]
        torch.testing.assert_close(prev, cur, atol=2e-4, rtol=0)
    # Sample 0 has no previous sweep: "current" stands in, the identical points and origin.
    torch.testing.assert_close(batch["prev_points"][:500], batch["points"][:500])
    torch.testing.assert_close(batch["prev_origins"][0], batch["origins"][0])
    if augment:
        assert not torch.allclose(batch["origins"], torch.zeros(3, 3))


def test_origins_follow_the_augmentation():
    """Distances to the sensor are preserved by flip / rotation / translation (scale 1): the origin
    entry is where the augmentation moved the sensor."""
    torch.manual_seed(1)
    reader = StaticWorldReader(POSES[:1])
    aug = pretrain_augmentation(1.0, 180.0, (1.0, 1.0), (3.0, 3.0, 0.5))
    ds = LidarPretrainDataset(reader, ("x", "y", "z", "intensity"), RANGE, augment=aug)
    sample = ds[0]
    raw = reader[0].points[:, :3]
    moved = sample["frame"].points[:, :3] - sample["origin"]
    np.testing.assert_allclose(np.linalg.norm(moved, axis=1), np.linalg.norm(raw, axis=1), atol=1e-4)
    assert np.linalg.norm(sample["origin"]) > 0.1


def test_empty_missing_previous_and_errors():
    reader = StaticWorldReader(POSES)
    ds = LidarPretrainDataset(reader, ("x", "y", "z"), RANGE, num_previous=1, missing_previous="empty")
    batch = ds.collate_fn([ds[0], ds[1]])
    assert batch["prev_offsets"].tolist() == [0, 0, 500] and batch["points"].shape[1] == 3
    with pytest.raises(ValueError, match="elongation"):
        LidarPretrainDataset(reader, ("x", "y", "z", "elongation"), RANGE)[0]
    with pytest.raises(ValueError, match="num_previous"):
        LidarPretrainDataset(reader, ("x", "y", "z"), RANGE, num_previous=2)
    with pytest.raises(ValueError, match="point_range"):
        LidarPretrainDataset(reader, ("x", "y", "z"), (0, 0, 0, -1, 1, 1))
    with pytest.raises(ValueError, match="frame_gap"):
        LidarPretrainDataset(reader, ("x", "y", "z"), RANGE, num_previous=1, frame_gap=0)
    with pytest.raises(ValueError, match="none of the 3 frames"):
        LidarPretrainDataset(reader, ("x", "y", "z"), RANGE, num_previous=1, missing_previous="skip", frame_gap=3)


def test_frame_gap_and_skip_pair_each_frame_with_the_sweep_gap_frames_back():
    reader = StaticWorldReader(POSES)
    ds = LidarPretrainDataset(reader, ("x", "y", "z", "intensity"), RANGE, num_previous=1, frame_gap=2,
                              missing_previous="skip")
    assert len(ds) == 1 and ds.frame_indices == [2]      # frames 0 and 1 have no sweep 2 back
    sample = ds[0]
    assert sample["frame"].frame_id == "000002" and sample["has_prev"]
    # Frame 0 aligned into frame 2's sensor frame lands on frame 2's points (a static world).
    np.testing.assert_allclose(sample["previous"].points[:, :3], sample["frame"].points[:, :3], atol=1e-4)
    expected = np.linalg.inv(POSES[2]) @ np.r_[POSES[0][:3, 3], 1.0]
    np.testing.assert_allclose(sample["prev_origin"], expected[:3], atol=1e-5)


def test_synthetic_config_to_batches_is_deterministic():
    cfg = config_from_dict({"model": {"name": "point_mae"}, "data": {
        "name": "lidar_synthetic", "num_frames": 4, "frames_per_sequence": 2, "sensor": "nuscenes32",
        "azimuth_resolution_deg": 2.0, "point_range": [-20, -20, -3, 20, 20, 1], "num_previous": 1,
        "channels": ["x", "y", "z", "intensity", "ring"], "translate_std": [0.2, 0.2, 0.1]}})
    ds = build_dataset(cfg.data)
    assert len(ds) == 4

    def batch():
        torch.manual_seed(5)
        return ds.collate_fn([ds[i] for i in range(4)])

    a, b = batch(), batch()
    torch.testing.assert_close(a["points"], b["points"], rtol=0, atol=0)
    assert a["points"].shape[1] == 5 and a["has_prev"].tolist() == [False, True, False, True]
    xyz = a["points"][:, :3]
    assert (xyz[:, 0] >= -20).all() and (xyz[:, 0] <= 20).all() and (xyz[:, 2] <= 1).all()
    # Aligned previous sweeps lie on the current one's static scene: closer than unaligned.
    cur = a["points"][a["offsets"][1]:a["offsets"][2], :3]
    prev = a["prev_points"][a["prev_offsets"][1]:a["prev_offsets"][2], :3]
    assert torch.cdist(prev, cur).min(1).values.median() < 0.5
    assert a["poses"].shape == (4, 4, 4) and len(a["boxes"]) == 4


def test_kitti_sample_through_the_config(shared_data):
    cfg = config_from_dict({"model": {"name": "point_mae"}, "data": {
        "name": "lidar_kitti", "root": str(shared_data / "kitti"), "split": None, "repeat": 2}})
    ds = build_dataset(cfg.data)
    assert len(ds) == 10
    torch.manual_seed(0)
    batch = ds.collate_fn([ds[0], ds[6]])
    assert batch["points"].shape[1] == 4 and batch["origins"].shape == (2, 3)
    assert batch["points"][:, 0].min() >= 0 and batch["points"][:, 1].abs().max() <= 40  # the crop


def test_sweeps_folder_with_poses_gives_aligned_previous(tmp_path):
    reader = StaticWorldReader(POSES)
    for k in range(3):
        np.save(tmp_path / f"{k:03d}.npy", reader[k].points[:, :4])
    np.save(tmp_path.parent / "poses.npy", np.stack(POSES))
    cfg = config_from_dict({"model": {"name": "point_mae"}, "data": {
        "name": "lidar_sweeps", "source": str(tmp_path), "poses": str(tmp_path.parent / "poses.npy"),
        "point_range": list(RANGE), "num_previous": 1, "augment": False}})
    ds = build_dataset(cfg.data)
    batch = ds.collate_fn([ds[0], ds[2]])
    assert batch["has_prev"].tolist() == [False, True]
    torch.testing.assert_close(batch["prev_points"][500:], batch["points"][500:], atol=2e-4, rtol=0)


def test_sensor_origin_off_the_frame_origin():
    """Vehicle-frame data (Waymo): the LiDAR sits above the frame's origin; origins and the previous
    sweep's origin follow it through the ego motion."""
    reader = StaticWorldReader(POSES)
    mount = (1.4, 0.0, 2.2)
    ds = LidarPretrainDataset(reader, ("x", "y", "z"), RANGE, num_previous=1, sensor_origin=mount)
    batch = ds.collate_fn([ds[1]])
    torch.testing.assert_close(batch["origins"][0], torch.tensor(mount))
    world_mount_prev = POSES[0] @ np.r_[mount, 1.0]
    expected = (np.linalg.inv(POSES[1]) @ world_mount_prev)[:3]
    torch.testing.assert_close(batch["prev_origins"][0], torch.tensor(expected, dtype=torch.float32))
    with pytest.raises(ValueError, match="sensor_origin"):
        LidarPretrainDataset(reader, ("x", "y", "z"), RANGE, sensor_origin=(0, 0))


def test_nuscenes_previous_sweep_from_the_info_is_aligned(shared_data, tmp_path):
    """lidar_nuscenes with num_previous=1 (configs/t_mae/nuscenes.yaml): the previous sweep is the info's
    newest sweep entry, moved into the keyframe's sensor frame with both poses."""
    import pickle
    info = shared_data / "nuscenes/n015-2018-07-24-11-22-45+0800.pkl"
    if not info.is_file():
        pytest.skip(f"no nuScenes info at {info}")
    raw = pickle.loads(info.read_bytes())
    sample = raw["data_list"][0]
    ego2global = np.array(sample["ego2global"])
    moved = ego2global.copy()
    moved[:3, 3] -= ego2global[:3, :3] @ [3.0, 0.0, 0.0]          # the sweep was taken 3 m further back
    sample["lidar_sweeps"] = [{"lidar_points": {"lidar_path": sample["lidar_points"]["lidar_path"],
                                                "lidar2ego": sample["lidar_points"]["lidar2ego"]},
                               "ego2global": moved.tolist(), "timestamp": sample["timestamp"] - 0.05}]
    path = tmp_path / "with_sweep.pkl"
    path.write_bytes(pickle.dumps(raw))
    cfg = config_from_dict({"model": {"name": "point_mae"}, "data": {
        "name": "lidar_nuscenes", "info_path": str(path), "data_root": str(shared_data / "nuscenes"),
        "point_range": [-200, -200, -20, 200, 200, 20], "num_previous": 1, "augment": False}})
    ds = build_dataset(cfg.data)
    assert ds.reader.has_previous(0, 1) and not ds.reader.has_previous(0, 2)
    s = ds[0]
    assert s["has_prev"] and len(s["previous"].points) == len(s["frame"].points) == 34688
    shift = s["previous"].points[:, :3].astype(np.float64) - s["frame"].points[:, :3]
    np.testing.assert_allclose(np.median(shift, axis=0), [-3.0, 0.0, 0.0], atol=0.1)   # ego pitch: z ~ -0.07
    # The shipped info has no sweeps: T-MAE's nuScenes config then trains with an empty previous sweep.
    cfg.data.info_path = str(info)
    cfg.data.missing_previous = "empty"
    s = build_dataset(cfg.data)[0]
    assert not s["has_prev"] and len(s["previous"].points) == 0


def test_previous_sweep_reads_only_the_previous_point_cloud(tmp_path, monkeypatch):
    # SequentialPrevious decides "is there an earlier sweep" from the reader's timestamps, so a temporal
    # sample reads each point cloud once.
    from pointmae.data.lidar_pretrain import SequentialPrevious
    from pointmae.data.user_sweeps import SweepFolderDataset
    reader = StaticWorldReader(POSES)
    for k in range(3):
        np.save(tmp_path / f"{k:03d}.npy", reader[k].points[:, :4])
    reads = []
    original = SweepFolderDataset.__getitem__
    monkeypatch.setattr(SweepFolderDataset, "__getitem__", lambda self, i: reads.append(i) or original(self, i))
    frames = SequentialPrevious(SweepFolderDataset(tmp_path))
    assert frames.previous(2).frame_id == "001" and reads == [1]
    assert frames.previous(0) is None and reads == [1]


def test_channel_scales_must_name_selected_channels():
    # A misspelt channel would otherwise scale nothing, silently.
    with pytest.raises(ValueError, match="intensty"):
        LidarPretrainDataset(StaticWorldReader(POSES), ("x", "y", "z", "intensity"), RANGE,
                             channel_scales={"intensty": 1 / 255})
    with pytest.raises(ValueError, match="channel_tanh.*intensty"):
        LidarPretrainDataset(StaticWorldReader(POSES), ("x", "y", "z", "intensity"), RANGE, channel_tanh=["intensty"])


def test_channel_tanh_squashes_after_scaling():
    reader = StaticWorldReader(POSES)
    plain = LidarPretrainDataset(reader, ("x", "y", "z", "intensity"), RANGE)[0]
    squashed = LidarPretrainDataset(reader, ("x", "y", "z", "intensity"), RANGE, channel_scales={"intensity": 300.0},
                                    channel_tanh=["intensity"])[0]
    a, b = plain["frame"].points, squashed["frame"].points
    assert np.abs(a[:, 3] * 300.0).max() > 3                      # the squash binds
    np.testing.assert_allclose(b[:, 3], np.tanh(a[:, 3] * np.float32(300.0)), rtol=1e-6)
    np.testing.assert_array_equal(b[:, :3], a[:, :3])
