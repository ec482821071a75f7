"""Fine-tuning of Point-MAE: pre-trained weight loading (ours and the official release's key names),
test-time voting, the fine-tuning loop, few-shot folds, the CLI and the paper configs."""
import dataclasses
import glob
import json
import os

import numpy as np
import pytest
import torch

from pointmae.config import FinetuneClsConfig, load_config
from pointmae.data.objects import SyntheticShapes
from pointmae.engine.builders import build_model
from pointmae.engine.finetune_cls import (RelabelledSubset, dataset_labels, evaluate, few_shot_finetune, finetune,
                                          predict_logits, sample_fold)
from pointmae.models.point_mae import PointMAE, PointMAEClassifier
from pointmae.models.pretrained import (PretrainedLoadError, convert_official_point_mae, is_official_point_mae,
                                        load_pretrained)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = dict(num_groups=8, group_size=8, embed_dim=24, depth=2, num_heads=2, patch_embed_width=16)


def tiny_mae(**kw):
    return PointMAE(decoder_depth=1, decoder_num_heads=2, **TINY, **kw)


def tiny_classifier(num_classes=3):
    return PointMAEClassifier(num_classes=num_classes, **TINY)


# The official Point-MAE release's names (github.com/Pang-Yatian/Point-MAE, models/Point_MAE.py), written
# out here independently of the converter: pre-training model `Point_MAE` and fine-tuning model
# `PointTransformer`, saved under "base_model" by a DDP-wrapped model (hence `module.`).
def official_pretrain_name(ours: str) -> str:
    for mine, theirs in [("encoder.patch_embed.", "MAE_encoder.encoder."), ("encoder.pos_embed.", "MAE_encoder.pos_embed."),
                         ("encoder.blocks.", "MAE_encoder.blocks.blocks."), ("encoder.norm.", "MAE_encoder.norm."),
                         ("decoder_blocks.", "MAE_decoder.blocks."), ("decoder_norm.", "MAE_decoder.norm."),
                         ("decoder_pred.", "increase_dim.0.")]:
        if ours.startswith(mine):
            return "module." + theirs + ours[len(mine):]
    return "module." + ours                      # mask_token, decoder_pos_embed.*


def official_finetune_name(ours: str) -> str:
    for mine, theirs in [("encoder.patch_embed.", "encoder."), ("encoder.pos_embed.", "pos_embed."),
                         ("encoder.blocks.", "blocks.blocks."), ("encoder.norm.", "norm."), ("head.", "cls_head_finetune.")]:
        if ours.startswith(mine):
            return "module." + theirs + ours[len(mine):]
    return "module." + ours                      # cls_token, cls_pos


def encoder_keys(model):
    return [k for k in model.state_dict() if k.startswith("encoder.")]


def test_official_pretraining_checkpoint_loads_every_encoder_tensor(tmp_path):
    torch.manual_seed(0)
    mae = tiny_mae()
    official = {official_pretrain_name(k): v.clone() for k, v in mae.state_dict().items()}
    assert "module.MAE_encoder.blocks.blocks.1.attn.qkv.weight" in official      # sanity of the layout
    assert "module.MAE_encoder.encoder.second_conv.3.weight" in official
    assert is_official_point_mae(official)
    path = tmp_path / "pretrain.pth"
    torch.save({"base_model": official, "epoch": 300, "metrics": {}}, path)

    model = tiny_classifier()
    report = load_pretrained(model, path)
    assert report.format == "official Point-MAE release"
    assert sorted(report.matched) == sorted(encoder_keys(model))
    assert set(report.missing) == {k for k in model.state_dict() if not k.startswith("encoder.")}
    assert {"mask_token", "decoder_pred.weight", "decoder_blocks.0.attn.qkv.weight"} <= set(report.unexpected)
    assert not report.mismatched
    for k in encoder_keys(model):
        assert torch.equal(model.state_dict()[k], mae.state_dict()[k]), k
    text = report.summary()
    assert f"{len(report.matched)} matched, {len(report.missing)} missing, {len(report.unexpected)} unexpected" in text


def test_official_finetuned_checkpoint_loads_with_its_head():
    torch.manual_seed(1)
    src = tiny_classifier()
    official = {official_finetune_name(k): v.clone() for k, v in src.state_dict().items()}
    assert "module.cls_head_finetune.8.weight" in official and "module.blocks.blocks.0.norm1.weight" in official
    converted = convert_official_point_mae(official)
    assert set(converted) == set(src.state_dict())
    model = tiny_classifier()
    report = load_pretrained(model, {"base_model": official}, skip_prefixes=())
    assert not report.missing and not report.unexpected
    for k, v in src.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    # By default the head is not taken: classes differ between data sets.
    report = load_pretrained(tiny_classifier(), {"base_model": official})
    assert "head.8.weight" in report.missing and "head.8.weight" in report.unexpected


def test_our_pretraining_weights_load_by_name(tmp_path):
    mae = tiny_mae()
    path = tmp_path / "final_model.pt"
    torch.save({"format": "pointmae-weights", "format_version": 1, "model": mae.state_dict()}, path)
    model = tiny_classifier()
    report = load_pretrained(model, path)
    assert sorted(report.matched) == sorted(encoder_keys(model))
    assert report.format.startswith("pointmae")


def test_openpcdet_style_model_state_file_loads(tmp_path):
    # The reader is shared with the detector's loader, so an OpenPCDet-style {"model_state": ...} file
    # (here with DDP's `module.` prefix) is understood too.
    mae = tiny_mae()
    path = tmp_path / "pcdet_style.pth"
    torch.save({"model_state": {"module." + k: v for k, v in mae.state_dict().items()}, "epoch": 3}, path)
    model = tiny_classifier()
    report = load_pretrained(model, path)
    assert report.format == "OpenPCDet checkpoint" and report.source == str(path)
    assert sorted(report.matched) == sorted(encoder_keys(model)) and report.ignored == 0
    for k in encoder_keys(model):
        assert torch.equal(model.state_dict()[k], mae.state_dict()[k]), k


def test_refuses_a_checkpoint_that_matches_nothing(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"model": {"backbone.conv1.weight": torch.zeros(3, 3)}}, path)
    with pytest.raises(PretrainedLoadError, match="other.pt.*none of its 1 tensors"):
        load_pretrained(tiny_classifier(), path)
    # Right names, other widths: nothing can be loaded either, and the message says why.
    with pytest.raises(PretrainedLoadError, match="2 have the right name but another shape"):
        load_pretrained(tiny_classifier(), {"encoder.norm.weight": torch.ones(5), "cls_token": torch.ones(1, 1, 5)})
    # A wider model of the same family: what matches by name and shape loads, the rest is reported.
    wide = PointMAE(decoder_depth=1, decoder_num_heads=2, **{**TINY, "embed_dim": 32})
    report = load_pretrained(tiny_classifier(), wide.state_dict())
    assert ("encoder.norm.weight", (24,), (32,)) in report.mismatched
    key, want, got = report.mismatched[0]
    assert f"shape mismatch {key}: model {list(want)} vs file {list(got)}" in report.summary()
    assert "encoder.norm.weight" in report.missing
    with pytest.raises(PretrainedLoadError, match="does not exist"):
        load_pretrained(tiny_classifier(), tmp_path / "missing.pth")
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(PretrainedLoadError, match="garbage.pth cannot be read"):
        load_pretrained(tiny_classifier(), tmp_path / "garbage.pth")


def test_voting_averages_augmented_copies_and_is_repeatable():
    torch.manual_seed(0)
    model = tiny_classifier().eval()
    points = torch.rand(4, 64, 3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(predict_logits(model, points, votes=1), model(points))
    a = predict_logits(model, points, 5, torch.Generator().manual_seed(3))
    b = predict_logits(model, points, 5, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and not torch.allclose(a, model(points))
    with pytest.raises(ValueError, match="votes"):
        predict_logits(model, points, 0)


def _tiny_cfg(tmp_path, **finetune):
    cfg = load_config(os.path.join(ROOT, "configs/point_mae/finetune_synthetic.yaml"), [
        "model.num_classes=3", "model.num_groups=8", "model.group_size=8", "model.embed_dim=24", "model.depth=2",
        "model.num_heads=2", "model.patch_embed_width=16", "data.num_points=64", "train.batch_size=6",
        "train.tensorboard=false", f"work_dir={tmp_path}"], schema=FinetuneClsConfig)
    return dataclasses.replace(cfg, finetune=dataclasses.replace(cfg.finetune, **finetune))


def _three_classes(split, n):
    return SyntheticShapes(split, num_points=64, samples_per_class=n, seed=5, classes=["sphere", "box", "torus"])


def test_finetune_learns_tests_every_epoch_and_keeps_the_best(tmp_path):
    mae_path = tmp_path / "mae.pt"
    torch.save({"model": tiny_mae().state_dict()}, mae_path)
    cfg = _tiny_cfg(tmp_path / "run", pretrained=str(mae_path), votes=2)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=6),
                              optim=dataclasses.replace(cfg.optim, lr=3e-3))
    result = finetune(cfg, _three_classes("train", 6), _three_classes("test", 4))
    assert result.load_report is not None and len(result.load_report.matched) > 0
    assert len(result.history) == 6 and [h["epoch"] for h in result.history] == list(range(6))
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.best_acc == max(h["test_acc"] for h in result.history)
    assert result.final["votes"] == 2
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["best_epoch"] == result.best_epoch and saved["matched_keys"] == len(result.load_report.matched)
    best = torch.load(tmp_path / "run" / "checkpoints" / "best.pt", weights_only=True)
    assert best["epoch"] == result.best_epoch and best["test_acc"] == result.best_acc
    # The best checkpoint reloads into a fresh classifier and reproduces its accuracy (no voting).
    fresh = build_model(cfg.model)
    fresh.load_state_dict(best["model"])
    assert evaluate(fresh, _three_classes("test", 4), votes=1)["acc"] == pytest.approx(result.best_acc)


def test_finetune_is_deterministic(tmp_path):
    runs = []
    for name in ("a", "b"):
        cfg = _tiny_cfg(tmp_path / name)
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=1))
        finetune(cfg, _three_classes("train", 4), _three_classes("test", 2))
        runs.append(torch.load(tmp_path / name / "checkpoints" / "last.pt", weights_only=True)["model"])
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


def test_few_shot_folds():
    train_labels, test_labels = np.repeat(np.arange(6), 12), np.repeat(np.arange(6), 25)
    rng = np.random.default_rng(0)
    tr, te, label_map = sample_fold(train_labels, test_labels, 4, 10, 20, rng)
    assert len(tr) == 40 and len(te) == 80 and sorted(label_map.values()) == [0, 1, 2, 3]
    assert sorted(np.unique(train_labels[tr])) == sorted(label_map) == sorted(np.unique(test_labels[te]))
    assert len(set(tr)) == 40 and len(set(te)) == 80
    tr2, _, _ = sample_fold(train_labels, test_labels, 4, 10, 20, np.random.default_rng(0))
    assert tr == tr2
    with pytest.raises(ValueError, match="few_shot_way=4: only 0 classes"):
        sample_fold(train_labels, test_labels, 4, 13, 20, rng)
    ds = _three_classes("train", 3)
    sub = RelabelledSubset(ds, [1, 4], {1: 0})                   # two boxes -> label 0
    assert [sub[i][1] for i in range(2)] == [0, 0] and list(dataset_labels(sub)) == [0, 0]


def test_few_shot_finetune_runs_folds(tmp_path):
    cfg = _tiny_cfg(tmp_path, few_shot_way=2, few_shot_shot=3, few_shot_folds=2, few_shot_queries=2)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=1),
                              data=dataclasses.replace(cfg.data, samples_per_class=3))
    out = few_shot_finetune(cfg)
    assert len(out.accuracies) == 2 and all(0 <= a <= 100 for a in out.accuracies)
    saved = json.loads((tmp_path / "few_shot.json").read_text())
    assert saved["accuracies"] == out.accuracies and (tmp_path / "fold_1" / "checkpoints" / "last.pt").exists()


def test_cli_reports_errors(tmp_path, capsys):
    from tools.finetune_cls import main
    cfg = os.path.join(ROOT, "configs/point_mae/finetune_synthetic.yaml")
    assert main([cfg, "--work-dir", str(tmp_path), "train.epoch=3"]) == 2
    assert "train.epoch" in capsys.readouterr().err
    (tmp_path / "bad.pt").write_bytes(b"xx")
    assert main([cfg, "--work-dir", str(tmp_path), "--pretrained", str(tmp_path / "bad.pt")]) == 1
    assert "bad.pt cannot be read" in capsys.readouterr().err


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "configs/point_mae/finetune_*.yaml"))))
def test_finetune_configs_load(path):
    cfg = load_config(path, schema=FinetuneClsConfig)
    assert cfg.model.name == "point_mae_cls"
    if "modelnet40" in path or "scanobjectnn" in path:
        # the paper's recipe (Pang et al. 2022 and its released configs)
        assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.train.batch_size, cfg.train.clip_grad) == (5e-4, 0.05, 32, 10.0)
        assert cfg.sched.warmup_epochs == 10 and (cfg.model.embed_dim, cfg.model.depth) == (384, 12)
    if "scanobjectnn" in path:
        assert cfg.model.num_classes == 15 and cfg.model.num_groups == 128 and cfg.data.num_points == 2048
        assert cfg.train.epochs == (200 if "hardest" in path else 300)


def test_modelnet40_classifier_has_the_published_size():
    cfg = load_config(os.path.join(ROOT, "configs/point_mae/finetune_modelnet40.yaml"), schema=FinetuneClsConfig)
    assert sum(p.numel() for p in build_model(cfg.model).parameters()) == 22_099_752


@pytest.mark.parametrize("pretrain", ["synthetic.yaml", "synthetic_scan.yaml"])
def test_synthetic_finetune_config_takes_every_encoder_tensor_of_the_pretraining_config(pretrain):
    pre = load_config(os.path.join(ROOT, "configs/point_mae", pretrain))
    fine = load_config(os.path.join(ROOT, "configs/point_mae/finetune_synthetic.yaml"))
    classifier = build_model(fine.model)
    report = load_pretrained(classifier, build_model(pre.model).state_dict())
    assert sorted(report.matched) == sorted(encoder_keys(classifier)) and not report.mismatched
