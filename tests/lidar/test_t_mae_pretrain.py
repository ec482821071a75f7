"""configs/t_mae/*.yaml: every file builds its model; the synthetic one pre-trains end to end through
the engine (a few steps, tiny overrides) and leaves a BEV picture and a checkpoint with backbone_3d."""
from pathlib import Path

import pytest
import torch

from pointmae.config import load_config
from pointmae.engine.builders import build_model
from pointmae.engine.checkpoint import load_checkpoint
from pointmae.engine.run import train
from pointmae.models.temporal_mae import TemporalMAE

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["synthetic", "waymo", "nuscenes", "av2"])
def test_config_builds_the_t_mae_model(name):
    cfg = load_config(REPO / "configs" / "t_mae" / f"{name}.yaml")
    assert cfg.model.mask_ratio == 0.75 and cfg.model.mask_type == "random"  # the paper's masking
    model = build_model(cfg.model)
    assert isinstance(model, TemporalMAE)
    assert model.voxel_size == list(cfg.model.voxel_size)


def test_synthetic_config_pretrains_through_the_engine(tmp_path):
    torch.set_num_threads(1)
    cfg = load_config(REPO / "configs" / "t_mae" / "synthetic.yaml", overrides=[
        f"work_dir={tmp_path}", "train.max_steps=2", "train.batch_size=2", "train.vis_every=2",
        "train.progress_bar=false", "train.tensorboard=false", "data.num_frames=8", "data.frames_per_sequence=4",
        "data.azimuth_resolution_deg=3.0", "model.embed_dim=32", "model.depth=2", "model.decoder_dim=32",
        "model.decoder_depth=1"])
    trainer = train(cfg)
    assert trainer.step == 2
    pictures = sorted((tmp_path / "vis").glob("*t_mae_bev*.png"))
    assert pictures, list(tmp_path.rglob("*"))
    checkpoint = load_checkpoint(sorted((tmp_path / "checkpoints").glob("*.pt"))[-1])
    keys = checkpoint["model"].keys()
    assert any(k.startswith("backbone_3d.") for k in keys) and checkpoint["config"]["model"]["name"] == "t_mae"
