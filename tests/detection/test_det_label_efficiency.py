"""tools/label_efficiency.py: the full study's plan (commands, schedule) and the whole study at the quick
scale (pre-training both MAEs, fine-tuning from scratch and from each, the table), one label fraction."""
import json
from pathlib import Path

import pytest
import torch

from pointmae.engine.label_efficiency import main, plan

ROOT = Path(__file__).resolve().parents[2]


def test_full_plan_loads_each_pretraining_and_keeps_the_steps(tmp_path):
    pretrains, runs = plan("full", tmp_path)
    assert sorted(pretrains) == ["r_mae", "voxel_mae"]
    assert "model.backbone=VoxelBackBone8x" in pretrains["voxel_mae"]          # what the detector can load
    assert [(r.init, r.fraction) for r in runs][:3] == [("scratch", 0.1), ("r_mae", 0.1), ("voxel_mae", 0.1)]
    assert len(runs) == 9
    for run in runs:
        epochs = [a for a in run.argv if a.startswith("train.epochs=")]
        assert epochs == [f"train.epochs={round(10 / run.fraction)}"]           # same optimizer steps
        pretrained = run.argv[run.argv.index("--pretrained") + 1] if "--pretrained" in run.argv else None
        assert pretrained == (None if run.init == "scratch" else str(tmp_path / run.init / "final_model.pt"))
    _, same_epochs = plan("full", tmp_path, schedule="epochs")
    assert {a for r in same_epochs for a in r.argv if a.startswith("train.epochs=")} == {"train.epochs=10"}
    with pytest.raises(ValueError, match="fractions must be in"):
        plan("full", tmp_path, fractions=[0.0])


@pytest.mark.slow          # ~20 s on one core: two pre-trainings and three fine-tunings
def test_quick_study_end_to_end(tmp_path, capsys):
    torch.set_num_threads(1)
    out = tmp_path / "detection.md"
    assert main(["--quick", "--work-root", str(tmp_path / "runs"), "--out", str(out), "--fractions", "1.0"]) == 0
    table = out.read_text()
    for init in ("scratch", "r_mae", "voxel_mae"):
        assert f"| 100% | {init} |" in table
        assert (tmp_path / "runs" / f"det_{init}_1" / "predictions.pkl").is_file()
    assert "72 matched" in (tmp_path / "runs" / "det_voxel_mae_1" / "pretrained_load.txt").read_text()
    assert "python tools/finetune_det.py configs/detection/synthetic.yaml --label-fraction 1" in table
    results = json.loads((tmp_path / "runs" / "label_efficiency.json").read_text())
    assert all(0.0 <= r["metrics"]["mean/bev_R40/moderate"] <= 100.0 for r in results)
    # A second call reuses every finished run.
    capsys.readouterr()
    assert main(["--quick", "--work-root", str(tmp_path / "runs"), "--out", str(out), "--fractions", "1.0"]) == 0
    assert "finetune_det.py" not in capsys.readouterr().out
