"""tools/finetune_det.py end to end on a tiny synthetic setup: pre-trained encoder in, trained detector,
predictions in the shared format, BEV pictures and metrics out."""
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pointmae.engine.checkpoint import CheckpointManager
from pointmae.engine.finetune_det import main as finetune_main
from pointmae.models.backbones.sparse_conv import VoxelBackBone8x
from pointmae.submission import load_predictions

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "detection" / "synthetic.yaml"
RANGE = "[0.0, -9.6, -3.0, 19.2, 9.6, 2.0]"
TINY = [f"model.point_range={RANGE}", f"data.crop_range={RANGE}", "model.bev_layer_nums=[1,1]",
        "model.bev_num_filters=[16,32]", "model.bev_num_upsample_filters=[16,16]", "model.head_channels=16",
        "data.train_args={num_frames: 4, seed: 0}", "data.val_args={num_frames: 2, seed: 5}",
        "data.gt_database_frames=2", "train.batch_size=2", "train.epochs=1", "train.tensorboard=false", "train.vis_every=1"]


class Pretrainer(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone_3d = VoxelBackBone8x(4, (96, 96, 25))
        self.decoder = nn.Linear(4, 4)


def test_finetune_cli_end_to_end(tmp_path, capsys):
    torch.set_num_threads(1)
    pre = CheckpointManager(tmp_path / "pre", keep_last=1).save({"model": Pretrainer().state_dict()}, step=1)
    work = tmp_path / "run"
    code = finetune_main([str(CONFIG), "--pretrained", str(pre), "--backbone-lr-mult", "0.5", "--label-fraction",
                          "0.5", "--precise-bn", "1", "--work-dir", str(work)] + TINY)
    out = capsys.readouterr().out
    assert code == 0
    assert "72 matched, 0 missing, 0 unexpected" in out and "training frames: 2 of 4" in out
    assert "72 matched" in (work / "pretrained_load.txt").read_text()
    predictions = load_predictions(work / "predictions.pkl")
    assert [p["frame_id"] for p in predictions] == ["0000_0000", "0000_0001"]
    for p in predictions:
        assert p["boxes"].dtype == np.float64 and p["boxes"].shape[1] == 7
        assert len(p["boxes"]) == len(p["scores"]) == len(p["names"])
        assert set(p["names"]) <= {"Car", "Pedestrian", "Cyclist", "Van", "Truck"}
    pictures = sorted((work / "bev").glob("*.png"))
    assert len(pictures) == 2 and pictures[0].stat().st_size > 1000
    assert (work / "final_model.pt").is_file()
    metrics = json.loads((work / "metrics.json").read_text())         # the KITTI protocol on the synthetic world
    assert metrics["num_frames"] == 2
    assert {"Car/3d_R40/moderate", "mean/bev_R40/moderate", "Cyclist/bev_R40/moderate"} <= set(metrics)
    assert list((work / "vis").glob("*bev_detections*.png"))          # the engine's training pictures
    # Inference only, from the written weights, gives the same predictions.
    code = finetune_main([str(CONFIG), "--no-train", "--weights", str(work / "final_model.pt"), "--work-dir",
                          str(tmp_path / "again")] + TINY)
    assert code == 0
    again = load_predictions(tmp_path / "again" / "predictions.pkl")
    for a, b in zip(predictions, again):
        assert np.array_equal(a["boxes"], b["boxes"]) and list(a["names"]) == list(b["names"])
    assert np.isfinite(np.concatenate([p["scores"] for p in predictions])).all()
