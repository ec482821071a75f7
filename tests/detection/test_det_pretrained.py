"""Loading pre-trained encoders into the detector: the matched / missing / unexpected report, the
refusals, the checkpoint formats, freezing and the backbone learning-rate multiplier."""
from pathlib import Path

import pytest
import torch
from torch import nn

from pointmae.config import OptimConfig
from pointmae.engine.builders import build_optimizer
from pointmae.engine.checkpoint import CheckpointManager
from pointmae.engine.finetune_det import main as finetune_main
from pointmae.models.backbones.sparse_conv import VoxelBackBone8x
from pointmae.models.detection import CenterPoint
from pointmae.models.pretrained import PretrainedLoadError, load_pretrained_encoder
from pointmae.models.voxel_features import MeanVFE

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "detection" / "synthetic.yaml"
RANGE = (0.0, -9.6, -3.0, 19.2, 9.6, 1.0)
VOXEL = (0.2, 0.2, 0.16)
GRID = (96, 96, 25)


def detector(in_channels=4):
    torch.manual_seed(0)
    channels = ["x", "y", "z", "intensity", "ring"][:in_channels]
    return CenterPoint(["Car"], point_channels=channels, point_range=RANGE, voxel_size=VOXEL,
                       bev_layer_nums=[1], bev_layer_strides=[1], bev_num_filters=[16], bev_upsample_strides=[1],
                       bev_num_upsample_filters=[16], head_channels=16)


class TinyPretrainer(nn.Module):
    """Stands in for a LiDAR MAE: the contract's `vfe` / `backbone_3d` plus a decoder of its own."""

    def __init__(self, in_channels=4, seed=1):
        super().__init__()
        torch.manual_seed(seed)
        self.vfe = MeanVFE(in_channels, VOXEL, RANGE, centre_offset=False)
        self.backbone_3d = VoxelBackBone8x(in_channels, GRID)
        self.decoder = nn.Linear(128, 3)
        with torch.no_grad():
            for p in self.backbone_3d.parameters():
                p.add_(1.0)                          # distinguishable from a fresh initialisation


def save_pointmae_checkpoint(model, directory):
    return CheckpointManager(directory, keep_last=1).save({"model": model.state_dict(), "config": {"x": 1}}, step=5)


def test_pointmae_checkpoint_loads_every_encoder_key(tmp_path):
    pre = TinyPretrainer()
    path = save_pointmae_checkpoint(pre, tmp_path / "ckpts")
    det = detector()
    report = load_pretrained_encoder(det, path)
    encoder_keys = [k for k in det.state_dict() if k.startswith("backbone_3d.")]
    assert sorted(report.matched) == sorted(encoder_keys) and len(encoder_keys) == 72
    assert report.missing == [] and report.unexpected == []
    assert report.ignored == 2                                   # decoder.weight, decoder.bias
    assert report.format == "pointmae checkpoint"
    for key, value in pre.backbone_3d.state_dict().items():
        assert torch.equal(det.state_dict()["backbone_3d." + key], value), key
    assert "72 matched, 0 missing, 0 unexpected" in report.summary()


def test_openpcdet_checkpoint_and_partial_match_are_reported(tmp_path):
    state = {k: v for k, v in TinyPretrainer().state_dict().items() if not k.startswith("backbone_3d.conv_out")}
    state["backbone_3d.extra_layer.weight"] = torch.zeros(3)
    state["dense_head.anything"] = torch.zeros(1)
    torch.save({"model_state": state, "epoch": 80}, tmp_path / "pcdet.pth")
    det = detector()
    before = det.state_dict()["backbone_3d.conv_out.0.weight"].clone()
    report = load_pretrained_encoder(det, tmp_path / "pcdet.pth")
    assert report.format == "OpenPCDet checkpoint"
    assert sorted(report.missing) == sorted(k for k in det.state_dict() if k.startswith("backbone_3d.conv_out"))
    assert report.unexpected == ["backbone_3d.extra_layer.weight"]
    assert len(report.matched) == 72 - len(report.missing)
    assert torch.equal(det.state_dict()["backbone_3d.conv_out.0.weight"], before)   # missing: left as it was


def test_state_dict_wrapper_loads(tmp_path):
    # The reader is shared with the classifier's loader, so a {"state_dict": ...} file is understood too.
    pre = TinyPretrainer()
    torch.save({"state_dict": pre.state_dict(), "epoch": 1}, tmp_path / "wrapped.ckpt")
    det = detector()
    report = load_pretrained_encoder(det, tmp_path / "wrapped.ckpt")
    assert report.format == "'state_dict' wrapper" and len(report.matched) == 72 and report.ignored == 2
    for key, value in pre.backbone_3d.state_dict().items():
        assert torch.equal(det.state_dict()["backbone_3d." + key], value), key


def test_corrupted_pointmae_checkpoint_is_refused(tmp_path):
    # A file that says it is a pointmae checkpoint is verified (digest) before any tensor is taken.
    path = save_pointmae_checkpoint(TinyPretrainer(), tmp_path / "ckpts")
    raw = torch.load(path, weights_only=True)
    raw["model"]["backbone_3d.conv_input.0.weight"].add_(1.0)
    torch.save(raw, path)
    with pytest.raises(PretrainedLoadError, match="corrupted"):
        load_pretrained_encoder(detector(), path)


def test_checkpoint_without_matching_keys_is_refused(tmp_path):
    torch.save({"model_state": {"encoder.blocks.0.weight": torch.zeros(2)}}, tmp_path / "other.pth")
    with pytest.raises(PretrainedLoadError, match="no key under vfe./backbone_3d. matches"):
        load_pretrained_encoder(detector(), tmp_path / "other.pth")


def test_shape_mismatch_is_refused_and_named(tmp_path):
    path = save_pointmae_checkpoint(TinyPretrainer(in_channels=5), tmp_path / "c5")
    with pytest.raises(PretrainedLoadError, match=r"shape mismatch backbone_3d.conv_input.0.weight"):
        load_pretrained_encoder(detector(in_channels=4), path)


def test_unreadable_and_missing_files_are_clear_errors(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(PretrainedLoadError, match="cannot be read"):
        load_pretrained_encoder(detector(), tmp_path / "junk.pt")
    with pytest.raises(PretrainedLoadError, match="absent.pt does not exist"):
        load_pretrained_encoder(detector(), tmp_path / "absent.pt")
    torch.save({"epoch": 3, "note": "no weights"}, tmp_path / "meta.pt")
    with pytest.raises(PretrainedLoadError, match="meta.pt .*key 'epoch' holds int, not a tensor"):
        load_pretrained_encoder(detector(), tmp_path / "meta.pt")


def test_cli_refuses_a_checkpoint_that_matches_nothing(tmp_path, capsys):
    torch.save({"model_state": {"encoder.weight": torch.zeros(2)}}, tmp_path / "other.pth")
    code = finetune_main([str(CONFIG), "--pretrained", str(tmp_path / "other.pth"),
                          "--work-dir", str(tmp_path / "run")])
    assert code == 1
    assert "PretrainedLoadError" in capsys.readouterr().err


def test_freeze_and_backbone_lr_multiplier():
    det = detector()
    frozen = det.freeze(("vfe.", "backbone_3d."))
    assert frozen and all(name.startswith("backbone_3d.") for name in frozen)
    assert not det.backbone_3d.conv_input[1].training and det.dense_head.training   # frozen BN stays in eval
    optimizer = build_optimizer(det, OptimConfig(lr=1e-3))
    trainable = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert not any(id(p) in trainable for p in det.backbone_3d.parameters())

    det = detector()
    optimizer = build_optimizer(det, OptimConfig(lr=1e-3), lr_mults={"backbone_3d.": 0.1})
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    assert all(lr_of[id(p)] == pytest.approx(1e-4) for p in det.backbone_3d.parameters())
    assert all(lr_of[id(p)] == pytest.approx(1e-3) for p in det.dense_head.parameters())
    assert len(lr_of) == sum(1 for _ in det.parameters())


def test_cli_argument_errors(tmp_path, capsys):
    assert finetune_main([str(CONFIG), "--no-train", "--work-dir", str(tmp_path)]) == 2
    assert "--no-train needs --weights" in capsys.readouterr().err
    assert finetune_main([str(CONFIG), "--backbone-lr-mult", "0", "--work-dir", str(tmp_path)]) == 2
    assert finetune_main([str(CONFIG), "--label-fraction", "1.5", "--work-dir", str(tmp_path)]) == 2
    assert "must be in (0, 1], got 1.5" in capsys.readouterr().err


def test_other_channel_units_in_the_pre_training_run_are_warned(tmp_path):
    from pointmae.config import DetectionDataConfig
    from pointmae.engine.finetune_det import channel_units_warning
    path = tmp_path / "final_model.pt"
    config = {"data": {"name": "lidar_waymo", "channel_scales": {}}}      # before channel_tanh existed
    torch.save({"format": "pointmae-weights", "model": {"vfe.x": torch.zeros(1)}, "config": config}, path)
    warning = channel_units_warning(str(path), DetectionDataConfig(channel_tanh=["intensity"]))
    assert warning is not None and "channel_tanh=[]" in warning and "['intensity']" in warning
    assert channel_units_warning(str(path), DetectionDataConfig()) is None
    config["data"]["channel_tanh"] = ["intensity"]
    torch.save({"format": "pointmae-weights", "model": {}, "config": config}, path)
    assert channel_units_warning(str(path), DetectionDataConfig(channel_tanh=["intensity"])) is None
    torch.save({"vfe.x": torch.zeros(1)}, path)                            # a plain state dict records nothing
    assert channel_units_warning(str(path), DetectionDataConfig(channel_tanh=["intensity"])) is None
