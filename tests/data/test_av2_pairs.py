"""The real Argoverse 2 sweep pair in ../shared/data: read with its ego poses, aligned into the current
sweep's frame by the LiDAR pre-training pipeline (`lidar_av2`, num_previous=1; nearest-neighbour
distances shrink as SOURCES.md measured), and pre-trained on by T-MAE."""
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("pyarrow")
from scipy.spatial import cKDTree  # noqa: E402

from pointmae.config import load_config  # noqa: E402
from pointmae.data.av2 import Av2SensorLog  # noqa: E402
from pointmae.data.errors import DataError  # noqa: E402
from pointmae.data.lidar_pretrain import collate_lidar_pretrain  # noqa: E402
from pointmae.engine.builders import build_dataset  # noqa: E402
from pointmae.engine.run import train  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
LOG = "sequences/av2_7fab2350-7eaf-3b7e-a39d-6937a4c1bede"


@pytest.fixture(scope="module")
def log_dir(shared_data):
    path = shared_data / LOG
    if not path.is_dir():
        pytest.skip(f"no AV2 log at {path}")
    return path


def test_reads_the_two_sweeps_with_poses_and_the_lidar_position(log_dir):
    log = Av2SensorLog(log_dir)
    assert len(log) == 2
    first, second = log[0], log[1]
    assert first.points.shape == (99229, 5) and second.points.shape == (99466, 5)
    assert first.channels == ("x", "y", "z", "intensity", "ring")
    assert second.timestamp - first.timestamp == pytest.approx(0.100196, abs=1e-6)
    np.testing.assert_allclose(first.pose[:3, :3] @ first.pose[:3, :3].T, np.eye(3), atol=1e-9)
    np.testing.assert_allclose(first.meta["sensor_origin"], [1.35, 0.0, 1.64], atol=0.01)


def test_ego_motion_alignment_brings_the_sweeps_together(log_dir):
    cfg = load_config(REPO / "configs" / "t_mae" / "av2.yaml", overrides=[
        f"data.root={log_dir}", "data.point_range=[-500,-500,-50,500,500,50]"])   # crop nothing
    pairs = build_dataset(cfg.data)
    assert len(pairs) == 1 and pairs.frame_indices == [1]          # missing_previous: skip
    pair = pairs[0]
    current = pair["frame"].points[:, :3]
    raw_previous = pairs.reader[0].points[:, :3]
    rows = np.random.default_rng(0).choice(len(current), 20000, replace=False)
    far = np.linalg.norm(current[rows, :2], axis=1) > 20
    raw, _ = cKDTree(raw_previous).query(current[rows])
    aligned, _ = cKDTree(pair["previous"].points[:, :3]).query(current[rows])
    # SOURCES.md: median 0.0735 m -> 0.0400 m overall, 0.156 m -> 0.073 m beyond 20 m.
    assert np.median(aligned) < 0.6 * np.median(raw)
    assert np.median(aligned[far]) < 0.55 * np.median(raw[far])
    batch = collate_lidar_pretrain([pair])
    assert batch["origins"].shape == (1, 3) and int(batch["prev_offsets"][-1]) == 99229
    np.testing.assert_allclose(batch["origins"][0].numpy(), [1.35, 0.0, 1.64], atol=0.01)   # the roof LiDAR
    # The previous sensor position, moved into the current frame by the ego motion (about 6 cm back in
    # these 0.1 s: the vehicle creeps forward).
    moved = batch["prev_origins"][0].numpy() - batch["origins"][0].numpy()
    assert 0.02 < float(np.linalg.norm(moved)) < 1.0 and moved[0] < 0


def test_missing_log_is_named(tmp_path):
    with pytest.raises(DataError, match="no LiDAR sweeps"):
        Av2SensorLog(tmp_path)


def test_t_mae_pretrains_on_the_real_pair(log_dir, tmp_path):
    torch.set_num_threads(1)
    cfg = load_config(REPO / "configs" / "t_mae" / "av2.yaml", overrides=[
        f"work_dir={tmp_path}", f"data.root={log_dir}", "train.max_steps=2", "train.vis_every=2",
        "train.progress_bar=false", "train.tensorboard=false", "model.embed_dim=32", "model.depth=1",
        "model.num_heads=2", "model.decoder_dim=32", "model.decoder_depth=1", "model.decoder_num_heads=2",
        "model.point_range=[-25.6,-25.6,-2.0,25.6,25.6,4.0]", "model.voxel_size=[0.4,0.4,6.0]"])
    trainer = train(cfg)
    assert trainer.step == 2
    assert sorted((tmp_path / "vis").glob("*t_mae_bev*.png"))
