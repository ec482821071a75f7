"""configs/detection/{kitti,nuscenes,waymo}.yaml run as a user with the real dataset runs them
(tools/finetune_det.py's main: config file -> detector -> training -> BatchNorm re-estimation ->
predictions, pictures, metrics), on the real sample frames of shared data, then through each
benchmark's submission writer.

Only what points the configs at the sample is overridden: the data roots / info paths, batch size 1,
one optimizer step, one BatchNorm batch, per-step logging, no TensorBoard, CPU. The architecture
(backbone, channels, voxel size, point range, head, classes) and the augmentation, including GT
sampling with a database built from the sample's own training frames, stay as the configs have them:
the full-size grids fit the budget, so no range is shrunk (measured on one CPU thread of the busy
2-core machine, one test per pytest process: KITTI 17-18 s / 2.1 GB peak RSS, nuScenes 9-10 s /
1.8 GB, Waymo 19 s / 2.3 GB; with two optimizer steps Waymo took 26 s, hence one).

What the sample offers (shared/data/SOURCES.md):
* KITTI: training frames 000000-000004 with labels and calib; an ImageSets/ split is written here
  (train 000000-000002, val 000003-000004) around a link to the real training/ folder.
* nuScenes: one v1.1 mmdet3d info pickle with one annotated keyframe, no sweeps (the config's
  num_sweeps: 9 then accumulates none); that keyframe is both the training and the validation set.
  No devkit JSON tables: the submission is built with the library from the info pickle's poses (the
  CLI needs <version>/ tables for the split's tokens).
* Waymo: no frame with both LiDAR points and labels exists in the sample. The converted folders the
  config reads (tools/convert_waymo.py's format) get the real points of OpenPCDet's extracted frame
  0004.npy (no labels were published with it; training and validation) and the real labels of
  mmdet3d_val.tfrecord converted with the tool's --labels-only (no points, since that record carries
  no LiDAR data; validation only, where it gives the quick metric ground truth and the submission a
  real context name and timestamp). So the training step sees real Waymo points but no object.
"""
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from pointmae.config import load_config
from pointmae.engine.finetune_det import main as finetune_main
from pointmae.submission import load_predictions
from pointmae.submission.predictions import check_predictions

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs" / "detection"
# One optimizer step on a batch of one frame, then --precise-bn 1 (the CLI default, 8 batches, is 8
# more full-grid forwards): the predictions come from updated weights with re-estimated BatchNorm
# statistics, which is what exposed the overflow of untrained size codes (models/detection/targets.py).
# A second step would add ~5-7 s per config. log_every=1: the step's loss lands in metrics.jsonl.
FAST = ["train.batch_size=1", "train.max_steps=1", "train.log_every=1", "train.tensorboard=false",
        "train.progress_bar=false", "train.device=cpu", "train.num_workers=0"]

KITTI_FILES = [f"kitti/training/{kind}/{i:06d}.{ext}" for i in range(5)
               for kind, ext in (("velodyne", "bin"), ("label_2", "txt"), ("calib", "txt"))]
NUSCENES_INFO = "nuscenes/n015-2018-07-24-11-22-45+0800.pkl"
NUSCENES_FILES = [NUSCENES_INFO,
                  "nuscenes/samples/LIDAR_TOP/n015-2018-07-24-11-22-45+0800__LIDAR_TOP__1532402927647951.pcd.bin"]
WAYMO_POINTS = "waymo/openpcdet_processed/0004.npy"
WAYMO_LABELS = "waymo/tfrecord/mmdet3d_val.tfrecord"


def require(shared_data: Path, files) -> None:
    missing = [f for f in files if not (shared_data / f).is_file()]
    if missing:
        pytest.skip(f"sample data missing under {shared_data}: {', '.join(missing[:3])}"
                    + (f" (+{len(missing) - 3} more)" if len(missing) > 3 else ""))


def load_tool(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_config(name: str, work: Path, data_overrides: list[str]) -> None:
    torch.set_num_threads(1)
    code = finetune_main([str(CONFIGS / f"{name}.yaml"), "--work-dir", str(work), "--precise-bn", "1",
                          *FAST, *data_overrides])
    assert code == 0, f"finetune_det.py exited with {code} (see {work / 'train.log'})"


def check_run(name: str, work: Path, val_frame_ids: list[str], box_columns: int) -> list[dict]:
    """The run's artefacts: a finite loss and gradient norm, the config's architecture unchanged,
    predictions for exactly the validation frames in the shared format, metrics.json. Returns the
    predictions."""
    original = load_config(CONFIGS / f"{name}.yaml")
    resolved = load_config(work / "config.yaml")
    assert resolved.model == original.model          # the data overrides did not touch the detector
    steps = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps] == [1]
    assert all(math.isfinite(s["loss"]) and math.isfinite(s["grad_norm"]) for s in steps), steps
    assert (work / "final_model.pt").is_file()

    predictions = load_predictions(work / "predictions.pkl")
    check_predictions(predictions)                   # raises on a broken contract
    assert [p["frame_id"] for p in predictions] == val_frame_ids
    for p in predictions:
        assert p["boxes"].shape[1] == box_columns
        assert np.isfinite(p["boxes"]).all() and (p["boxes"][:, 3:6] > 0).all()
        assert ((p["scores"] >= original.model.score_threshold) & (p["scores"] <= 1)).all()
        assert set(p["names"]) <= set(original.model.class_names)
    assert sum(len(p["boxes"]) for p in predictions) > 0     # an untrained head still scores above 0.1 somewhere
    assert json.loads((work / "metrics.json").read_text())   # non-empty
    assert len(list((work / "bev").glob("*.png"))) == len(val_frame_ids)
    return predictions


# ----------------------------------------------------------------------------------------- KITTI
def test_kitti_config_on_the_real_sample(shared_data, tmp_path):
    require(shared_data, KITTI_FILES)
    # The KITTI layout the config expects (ROOT/ImageSets/{train,val}.txt next to ROOT/training/),
    # with the real training/ folder linked in.
    root = tmp_path / "kitti"
    (root / "ImageSets").mkdir(parents=True)
    (root / "training").symlink_to(shared_data / "kitti" / "training", target_is_directory=True)
    train_ids, val_ids = ["000000", "000001", "000002"], ["000003", "000004"]
    (root / "ImageSets" / "train.txt").write_text("\n".join(train_ids) + "\n")
    (root / "ImageSets" / "val.txt").write_text("\n".join(val_ids) + "\n")
    work = tmp_path / "run"
    run_config("kitti", work, [f"data.train_args.root={root}", f"data.val_args.root={root}"])
    predictions = check_run("kitti", work, val_ids, box_columns=7)

    database = json.loads((work / "gt_database.json").read_text())
    assert database["frames"] == [0, 1, 2]           # GT sampling from the three training frames only
    metrics = json.loads((work / "metrics.json").read_text())
    # The KITTI protocol (val 000003 / 000004 hold Cars only: the other classes have no ground truth).
    assert metrics["num_frames"] == 2
    assert metrics["Car/3d_R40/moderate"] is not None and metrics["Pedestrian/3d_R40/moderate"] is None

    # tools/submit.py kitti on the validation frames of the training subset (calib is all it needs;
    # without image_2 the image size is KITTI's usual 1242 x 375).
    from pointmae.submission.kitti import read_frame_info, validate_kitti_submission
    zip_path = tmp_path / "kitti_val.zip"
    assert load_tool("submit").main(["kitti", "--predictions", str(work / "predictions.pkl"), "--kitti-root",
                                     str(root), "--subset", "training", "--split", "val", "--out",
                                     str(zip_path)]) == 0
    _, sizes = read_frame_info(root, val_ids, "training")
    validation = validate_kitti_submission(zip_path, val_ids, sizes)
    assert validation.ok, validation.violations[:5]
    # Boxes whose projection misses the image are not written, so at most the predicted ones.
    assert 0 < validation.boxes <= sum(len(p["boxes"]) for p in predictions)


# -------------------------------------------------------------------------------------- nuScenes
def test_nuscenes_config_on_the_real_sample(shared_data, tmp_path):
    require(shared_data, NUSCENES_FILES)
    info, data_root = shared_data / NUSCENES_INFO, shared_data / "nuscenes"
    work = tmp_path / "run"
    run_config("nuscenes", work, [f"data.train_args.info_path={info}", f"data.train_args.data_root={data_root}",
                                  f"data.val_args.info_path={info}", f"data.val_args.data_root={data_root}"])
    token = "ca9a282c9e77460f8360f564131a8af5"
    predictions = check_run("nuscenes", work, [token], box_columns=9)       # with velocities
    steps = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]
    assert steps[0]["num_objects"] > 10       # the keyframe's annotated objects reach the targets
    metrics = json.loads((work / "metrics.json").read_text())
    assert "car/bev_ap_r40@0.5" in metrics and "pedestrian/bev_ap_r40@0.5" in metrics   # quick BEV AP

    # The nuScenes results writer, library path: the sample has no devkit tables, from which
    # tools/submit.py nuscenes takes the split's sample tokens; poses come from the info pickle.
    from pointmae.submission import nuscenes as nus
    poses = nus.sensor_poses_from_info(info)
    results = nus.build_results(predictions, poses, [token])
    path = nus.write_results(tmp_path / "results_nusc.json", results, [token])     # validates
    written = nus.load_results(path)["results"][token]
    assert 0 < len(written) <= min(len(predictions[0]["boxes"]), nus.MAX_BOXES_PER_SAMPLE)
    nus.validate_results(nus.load_results(path), [token])


# ----------------------------------------------------------------------------------------- Waymo
def test_waymo_config_on_the_real_sample(shared_data, tmp_path):
    require(shared_data, [WAYMO_POINTS, WAYMO_LABELS])
    convert = load_tool("convert_waymo")
    # The real points (x, y, z, intensity, elongation, NLZ with -1 = outside every no-label zone) in
    # the converter's layout (nlz 0/1, return index unknown: 0); no labels exist for this frame.
    points = np.load(shared_data / WAYMO_POINTS)
    converted = np.c_[points[:, :5], points[:, 5] != -1, np.zeros(len(points))].astype(np.float32)
    training, validation = tmp_path / "converted" / "training", tmp_path / "converted" / "validation"
    for root in (training, validation):
        convert.save_frame(root, "openpcdet_0004", 0, converted, np.zeros(len(points)), np.zeros((0, 9)), [], [],
                           [], [], [], np.eye(4), 0)
    # Validation also gets the real labels: the record has no LiDAR data, so the converter writes zero
    # points (the detector then sees an empty batch, see CenterPoint.forward_features) and the quick
    # metric and the submission get a real context name and timestamp.
    convert.main([str(shared_data / WAYMO_LABELS), "--out", str(validation), "--labels-only"])
    context = "1071392229495085036_1844_790_1864_790"
    val_ids = [f"{context}_0000", "openpcdet_0004_0000"]       # the reader's order (sorted paths)
    work = tmp_path / "run"
    run_config("waymo", work, [f"data.train_args.root={training}", f"data.val_args.root={validation}"])
    predictions = check_run("waymo", work, val_ids, box_columns=7)
    metrics = json.loads((work / "metrics.json").read_text())
    assert "Vehicle/bev_ap_r40@0.5" in metrics                # quick BEV AP over the labelled frame

    # tools/submit.py waymo with the converted validation folder as the split, then its validator.
    from pointmae.submission.waymo import split_frames_from_converted, validate_waymo_submission
    out = tmp_path / "submission"
    assert load_tool("submit").main(["waymo", "--predictions", str(work / "predictions.pkl"), "--split-converted",
                                     str(validation), "--out", str(out), "--account-name", "test@example.com",
                                     "--method-name", "pointmae-real-sample", "--num-shards", "1"]) == 0
    archive = out / "pointmae-real-sample.tar.gz"
    assert archive.is_file()
    report = validate_waymo_submission(archive, split_frames_from_converted(validation))
    assert report["num_objects"] > 0, report
