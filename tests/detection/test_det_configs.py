"""Every detection config loads strictly and builds its detector; the KITTI one reads the real sample
frames (shared data) through the detection dataset with its class list."""
from pathlib import Path

import numpy as np
import pytest
import torch

from pointmae.config import load_config
from pointmae.engine.builders import build_model
from pointmae.engine.finetune_det import build_detection_datasets
from pointmae.models.pretrained import load_pretrained_encoder

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "detection"
EXPECTED_CLASSES = {
    "kitti": ["Car", "Pedestrian", "Cyclist"],
    "nuscenes": ["car", "truck", "construction_vehicle", "bus", "trailer", "barrier", "motorcycle", "bicycle",
                 "pedestrian", "traffic_cone"],
    "waymo": ["Vehicle", "Pedestrian", "Cyclist"],
    "synthetic": ["Car", "Pedestrian", "Cyclist", "Van", "Truck"],
}


@pytest.mark.parametrize("name", sorted(EXPECTED_CLASSES))
def test_config_builds_its_detector(name):
    cfg = load_config(CONFIGS / f"{name}.yaml")
    assert cfg.model.class_names == cfg.data.class_names == EXPECTED_CLASSES[name]
    model = build_model(cfg.model)
    assert model.feature_map_stride in (4, 8)
    assert model.with_velocity == (name == "nuscenes")
    # The head's grid covers the point range.
    assert model.grid.nx * model.grid.cell_x == pytest.approx(cfg.model.point_range[3] - cfg.model.point_range[0])
    assert model.grid.ny * model.grid.cell_y == pytest.approx(cfg.model.point_range[4] - cfg.model.point_range[1])


def test_kitti_config_reads_the_sample_frames(shared_data, tmp_path):
    root = str(shared_data / "kitti")
    cfg = load_config(CONFIGS / "kitti.yaml", [f"data.train_args={{root: {root}, split: null, fov_only: true}}",
                                               f"data.val_args={{root: {root}, split: null, fov_only: true}}",
                                               "data.gt_sample_counts={Car: 3}", "data.gt_min_points=1"])
    train, val = build_detection_datasets(cfg.data, tmp_path, log=lambda *_: None)
    assert len(train) == len(val) == 5
    names = set()
    for i in range(len(val)):
        frame = val[i]
        assert set(frame.names) <= {"Car", "Pedestrian", "Cyclist"}
        assert frame.box_meta["label"].tolist() == [["Car", "Pedestrian", "Cyclist"].index(n) for n in frame.names]
        names |= set(frame.names)
    assert {"Car", "Pedestrian", "Cyclist"} <= names          # Truck / Misc / DontCare are not classes here
    assert (tmp_path / "gt_database.pt").is_file()
    sampled = train[0]
    assert np.all(sampled.points[:, 0] >= 0)                 # cropped to the front range


def test_bad_data_args_name_the_config_entry_and_fail_before_the_gt_database(tmp_path, capsys):
    """The configs ship placeholder roots; pointing one at a folder without ImageSets/val.txt (the real
    KITTI sample's layout) or misspelling a key must say which file and which config entry, without a
    traceback, and before the GT database's pass over every training frame."""
    from pointmae.engine.finetune_det import main as finetune_main
    root = tmp_path / "kitti"
    (root / "training" / "velodyne").mkdir(parents=True)
    (root / "training" / "velodyne" / "000000.bin").write_bytes(b"")   # readers only list files up front
    common = [str(CONFIGS / "kitti.yaml"), "--work-dir", str(tmp_path / "run"), "train.device=cpu",
              f"data.train_args.root={root}"]
    assert finetune_main(common + [f"data.val_args.root={root}"]) == 1
    err = capsys.readouterr().err
    assert "ImageSets/val.txt: split file for 'val' not found" in err and "data.val_args" in err
    assert "Traceback" not in err
    assert not (tmp_path / "run" / "gt_database.pt").exists()
    assert finetune_main(common + [f"data.val_args.roots={root}"]) == 2
    err = capsys.readouterr().err
    assert "data.val_args" in err and "'roots'" in err and "KittiObjectDataset" in err


@pytest.mark.parametrize("name", ["kitti", "nuscenes", "waymo"])
def test_detector_sees_the_channel_units_of_the_pre_training_configs(name):
    # A pre-trained encoder must get the input units it was trained on (nuScenes: intensity / 255).
    # Waymo: tanh(intensity), as OpenPCDet.
    detection = load_config(CONFIGS / f"{name}.yaml").data
    for method in ("voxel_mae", "r_mae", "t_mae"):
        path = CONFIGS.parent / method / f"{name}.yaml"
        if path.is_file():
            data = load_config(path).data
            assert data.channel_scales == detection.channel_scales, (method, name)
            assert data.channel_tanh == detection.channel_tanh, (method, name)


# The overrides that make each dataset's R-MAE pre-training and its detection config share an encoder
# (docs/detection.md, "Which pre-training fits which detector"): the configs follow their papers' and
# OpenPCDet's recipes, which differ in input channels and backbone.
ENCODER_PAIRS = {
    "kitti": ([], []),
    "nuscenes": (["model.in_channels=5", "data.channels=[x, y, z, intensity, time_lag]", "data.num_sweeps=9"], []),
    "waymo": ([], ["model.backbone=VoxelBackBone8x", "model.point_channels=[x, y, z, intensity]"]),
}


@pytest.mark.parametrize("name", sorted(ENCODER_PAIRS))
def test_r_mae_encoder_of_each_dataset_loads_into_its_detector(name, tmp_path):
    pretrain_overrides, detection_overrides = ENCODER_PAIRS[name]
    torch.manual_seed(0)
    mae = build_model(load_config(CONFIGS.parent / "r_mae" / f"{name}.yaml", pretrain_overrides).model)
    torch.save(mae.state_dict(), tmp_path / "r_mae.pt")
    detector = build_model(load_config(CONFIGS / f"{name}.yaml", detection_overrides).model)
    report = load_pretrained_encoder(detector, tmp_path / "r_mae.pt")      # refuses any shape mismatch
    assert report.matched and not report.missing, report.summary()
