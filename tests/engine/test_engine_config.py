"""Strict config loading, dotted overrides, the resolved dump, and every shipped config file."""
from pathlib import Path

import pytest
import yaml

from pointmae.config import (Config, ConfigError, config_to_dict, dump_config, load_config,
                             parse_override)

REPO = Path(__file__).resolve().parents[2]
SHIPPED_CONFIGS = sorted((REPO / "configs").glob("**/*.yaml"))


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


BASE = """
model: {name: tiny_ae, hidden: 32}
data: {name: tiny_points, size: 16}
train: {epochs: 3, batch_size: 2}
"""


def test_loads_into_typed_dataclasses(tmp_path):
    cfg = load_config(write(tmp_path, BASE))
    assert isinstance(cfg, Config)
    assert type(cfg.model).__name__ == "TinyModelConfig" and cfg.model.hidden == 32
    assert cfg.train.epochs == 3 and cfg.train.grad_accum == 1       # given, and defaulted
    assert cfg.optim.betas == (0.9, 0.999) and isinstance(cfg.optim.betas, tuple)


@pytest.mark.parametrize("text, key", [
    (BASE + "trian: {epochs: 1}\n", "trian"),                               # unknown section
    (BASE.replace("epochs: 3", "epoch: 3"), "train.epoch"),                  # misspelled key
    (BASE.replace("hidden: 32", "hiden: 32"), "model.hiden"),                # key of a model family
    (BASE + "optim: {lr: 0.1, betas: [0.9, 0.99, 0.5]}\n", "optim.betas"),   # wrong length
])
def test_unknown_or_malformed_keys_name_key_and_file(tmp_path, text, key):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert key in str(e.value) and str(path) in str(e.value)


@pytest.mark.parametrize("section, value, fragment", [
    ("train", "{epochs: five}", "expected an integer"),
    ("train", "{epochs: 2.5}", "expected an integer"),
    ("train", "{compile: 1}", "expected true/false"),
    ("train", "{amp: fp8}", "is not one of"),
    ("optim", "{lr: fast}", "expected a number"),
])
def test_wrong_types_are_errors(tmp_path, section, value, fragment):
    text = BASE.replace("train: {epochs: 3, batch_size: 2}", "") + f"{section}: {value}\n"
    with pytest.raises(ConfigError, match=fragment):
        load_config(write(tmp_path, text))


def test_model_name_selects_the_family_and_unknown_names_list_the_known(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown model 'point_mea'.*tiny_ae"):
        load_config(write(tmp_path, BASE.replace("name: tiny_ae", "name: point_mea")))
    with pytest.raises(ConfigError, match=r"model.name.*needs a 'name'"):
        load_config(write(tmp_path, BASE.replace("name: tiny_ae, ", "")))
    with pytest.raises(ConfigError, match="data: required key is missing"):
        load_config(write(tmp_path, "model: {name: tiny_ae}\n"))


def test_overrides_are_typed_like_yaml_and_strict(tmp_path):
    path = write(tmp_path, BASE)
    cfg = load_config(path, ["train.epochs=5", "optim.lr=3e-4", "optim.betas=[0.9,0.95]",
                             "train.clip_grad=1", "train.amp=bf16", "model.hidden=8", "work_dir=/tmp/x"])
    assert cfg.train.epochs == 5 and cfg.optim.lr == 3e-4 and cfg.optim.betas == (0.9, 0.95)
    assert cfg.train.clip_grad == 1.0 and cfg.train.amp == "bf16" and cfg.model.hidden == 8
    assert load_config(path, ["train.clip_grad=null"]).train.clip_grad is None
    with pytest.raises(ConfigError, match=r"train.epoch.*override 'train.epoch=5'"):
        load_config(path, ["train.epoch=5"])
    with pytest.raises(ConfigError, match=r"train.epochs.*expected an integer.*override"):
        load_config(path, ["train.epochs=many"])
    with pytest.raises(ConfigError, match="not of the form"):
        load_config(path, ["train.epochs"])
    assert parse_override("a.b= true") == ("a.b", True)


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(write(tmp_path, BASE), ["optim.lr=2e-3", "train.amp=bf16"])
    out = tmp_path / "resolved.yaml"
    dump_config(cfg, out)
    again = load_config(out)
    assert again == cfg
    assert yaml.safe_load(out.read_text()) == config_to_dict(cfg)


@pytest.mark.parametrize("path", SHIPPED_CONFIGS or [pytest.param(None, marks=pytest.mark.skip(
    reason="no files under configs/ yet"))], ids=lambda p: str(p.relative_to(REPO)) if p else "none")
def test_every_shipped_config_loads(path):
    load_config(path)
