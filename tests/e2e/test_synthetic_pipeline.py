"""The whole LiDAR pipeline on the synthetic world, at toy sizes, through the command-line tools:

    tools/pretrain.py (R-MAE, Voxel-MAE with the detector's sparse backbone)
      -> tools/finetune_det.py --pretrained (vfe./backbone_3d. loaded, trained, validation predictions,
         KITTI-protocol metrics)
      -> tools/submit.py kitti | nuscenes | waymo (write, then validate each benchmark's format).

Any stage that breaks fails the test; the numbers are not a measurement (one training step)."""
import json
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch

from pointmae.data.kitti import write_calibration
from pointmae.data.lidar_datasets import SyntheticFrames
from pointmae.data.nuscenes_export import CATEGORY_OF, write_nuscenes_dataroot
from pointmae.data.synthetic.kitti_writer import synthetic_calibration
from pointmae.submission import load_predictions, save_predictions
from pointmae.submission.nuscenes import detection_name_of_category
from pointmae.submission.waymo import as_waymo_frames, as_waymo_predictions

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / "tools"
# One grid for pre-training and detection: 96 x 96 x 25 cells (the 8x sparse encoder needs >= 24 z layers).
RANGE = "[-9.6, -9.6, -3.0, 9.6, 9.6, 2.0]"
DET_RANGE = "[0.0, -9.6, -3.0, 19.2, 9.6, 2.0]"
VOXEL = "[0.2, 0.2, 0.2]"
PRETRAIN_DATA = ["data.num_frames=2", "data.frames_per_sequence=2", "data.azimuth_resolution_deg=2.0",
                 f"data.point_range={RANGE}", "train.batch_size=2", "train.epochs=1", "train.tensorboard=false",
                 "train.vis_every=0", "train.device=cpu", f"model.point_range={RANGE}", f"model.voxel_size={VOXEL}"]
DETECTOR = [f"model.point_range={DET_RANGE}", f"data.crop_range={DET_RANGE}", f"model.voxel_size={VOXEL}",
            "model.bev_layer_nums=[1,1]", "model.bev_num_filters=[16,32]", "model.bev_num_upsample_filters=[16,16]",
            "model.head_channels=16", "data.train_args={num_frames: 4, seed: 0}",
            "data.val_args={num_frames: 2, seed: 5}", "data.gt_database_frames=2", "train.batch_size=2",
            "train.epochs=1", "train.tensorboard=false", "train.vis_every=0", "train.device=cpu"]
VAL = dict(num_frames=2, seed=5)        # the detector's validation frames (data.val_args above)


def tool(name):
    return runpy.run_path(str(TOOLS / f"{name}.py"))["main"]


def pretrain(tmp_path, method, extra):
    work = tmp_path / method
    code = tool("pretrain")([str(ROOT / "configs" / method / "synthetic.yaml"), "--work-dir", str(work)]
                            + PRETRAIN_DATA + extra)
    assert code == 0, f"tools/pretrain.py {method} failed"
    checkpoint = work / "final_model.pt"
    assert checkpoint.is_file(), sorted(p.name for p in work.iterdir())
    return checkpoint


@pytest.mark.slow          # ~10 s on one core
def test_pretrain_finetune_evaluate_submit(tmp_path, capsys):
    torch.set_num_threads(1)
    r_mae = pretrain(tmp_path, "r_mae", [])
    voxel_mae = pretrain(tmp_path, "voxel_mae", ["model.backbone=VoxelBackBone8x"])
    capsys.readouterr()

    # --- fine-tune from each pre-training: every encoder key of the detector must load --------------------
    runs = {}
    for name, checkpoint in (("r_mae", r_mae), ("voxel_mae", voxel_mae)):
        work = tmp_path / f"det_{name}"
        code = tool("finetune_det")([str(ROOT / "configs" / "detection" / "synthetic.yaml"), "--pretrained",
                                     str(checkpoint), "--precise-bn", "1", "--work-dir", str(work)] + DETECTOR)
        assert code == 0, f"finetune from {name} failed"
        report = (work / "pretrained_load.txt").read_text()
        assert "72 matched, 0 missing" in report, report          # all of VoxelBackBone8x's backbone_3d. keys
        runs[name] = work
    work = runs["r_mae"]
    metrics = json.loads((work / "metrics.json").read_text())
    assert metrics["num_frames"] == 2
    for key in ("Car/bev_R40/moderate", "Car/3d_R40/moderate", "mean/3d_R40/moderate"):
        assert 0.0 <= metrics[key] <= 100.0, (key, metrics)
    predictions = load_predictions(work / "predictions.pkl")
    frames = [SyntheticFrames(**VAL)[i] for i in range(VAL["num_frames"])]
    assert [p["frame_id"] for p in predictions] == [f.frame_id for f in frames]
    submit = tool("submit")

    # --- KITTI: a KITTI-shaped root for these frames (the synthetic rig's calibration), zip, validate ----
    kitti_root = tmp_path / "kitti"
    for frame in frames:
        write_calibration(kitti_root / "testing" / "calib" / f"{frame.frame_id}.txt", synthetic_calibration())
    (tmp_path / "ids.txt").write_text("".join(f"{f.frame_id}\n" for f in frames))
    ids = ["--kitti-root", str(kitti_root), "--ids-file", str(tmp_path / "ids.txt")]
    assert submit(["kitti", "--predictions", str(work / "predictions.pkl"), "--out", str(tmp_path / "kitti.zip")]
                  + ids) == 0
    assert submit(["kitti", "--validate-only", str(tmp_path / "kitti.zip")] + ids) == 0

    # --- nuScenes: the frames exported as a dataroot; predictions keyed by sample token, nuScenes names --
    nus = write_nuscenes_dataroot(frames, tmp_path / "nuscenes")
    to_detection = {n: detection_name_of_category(CATEGORY_OF[n]) for n in CATEGORY_OF}
    # The synthetic detector config predicts no velocities: nuScenes wants (M, 9), so zeros are appended.
    nus_predictions = [dict(p, frame_id=nus["sample_token_of"][p["frame_id"]],
                            boxes=np.c_[p["boxes"], np.zeros((len(p["boxes"]), 2))],
                            names=np.array([to_detection[str(n)] for n in p["names"]])) for p in predictions]
    save_predictions(tmp_path / "nus_predictions.pkl", nus_predictions)
    common = ["--dataroot", str(nus["dataroot"]), "--version", str(nus["version"]), "--split", str(nus["split"]),
              "--out", str(tmp_path / "results_nusc.json")]
    assert submit(["nuscenes", "--predictions", str(tmp_path / "nus_predictions.pkl"), "--evaluate",
                   "--eval-dir", str(tmp_path / "nus_eval")] + common) == 0, capsys.readouterr().err
    assert submit(["nuscenes", "--validate-only"] + common) == 0       # SystemExit on a rule violation
    out = capsys.readouterr().out
    assert "2 samples of split" in out and "is valid" in out and "mAP" in out

    # --- Waymo: context / timestamp split list from the frames, Waymo class names, tar.gz, validate ------
    waymo_frames = as_waymo_frames(frames)
    (tmp_path / "split.txt").write_text("".join(f"{f.meta['context_name']} {f.meta['timestamp_micros']} "
                                                f"{f.frame_id}\n" for f in waymo_frames))
    save_predictions(tmp_path / "waymo_predictions.pkl", as_waymo_predictions(predictions))
    split = ["waymo", "--split-list", str(tmp_path / "split.txt")]
    assert submit(split + ["--predictions", str(tmp_path / "waymo_predictions.pkl"), "--out",
                           str(tmp_path / "waymo"), "--account-name", "e2e@example.com", "--method-name", "e2e",
                           "--num-shards", "1"]) == 0
    archive = tmp_path / "waymo" / "e2e.tar.gz"
    assert archive.is_file() and submit(split + ["--validate", str(archive)]) == 0
