"""A tiny model and a tiny synthetic dataset that exercise the engine without the real models.

The autoencoder has dropout (torch RNG) and the dataset adds noise from the global torch RNG in
__getitem__, so an exact resume is only possible when every RNG state is restored. Test hooks:
`kill_at_forward` sends SIGKILL to its own process on that forward call (an unclean crash at a
known point), `term_at_forward` sends SIGTERM (a polite stop), `nan_at_forwards` makes those forward calls return a NaN loss.
"""
import os
import signal
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from pointmae.config import DATA_CONFIGS, MODEL_CONFIGS, DataConfig, ModelConfig
from pointmae.engine.builders import DATASET_FACTORIES
from pointmae.models import MODEL_FACTORIES


@dataclass
class TinyModelConfig(ModelConfig):
    name: str = "tiny_ae"
    dim: int = 8
    hidden: int = 16
    dropout: float = 0.0
    kill_at_forward: int = -1
    term_at_forward: int = -1
    nan_at_forwards: list[int] = field(default_factory=list)


@dataclass
class TinyDataConfig(DataConfig):
    name: str = "tiny_points"
    size: int = 64
    dim: int = 8
    noise: float = 0.0


class TinyAutoencoder(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float, kill_at_forward: int = -1,
                 nan_at_forwards: tuple = (), term_at_forward: int = -1):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout))
        self.decoder = nn.Linear(hidden, dim)
        self.kill_at_forward = kill_at_forward
        self.term_at_forward = term_at_forward
        self.nan_at_forwards = set(nan_at_forwards)
        self.calls = 0

    def forward(self, batch):
        self.calls += 1
        if self.calls == self.kill_at_forward:
            os.kill(os.getpid(), signal.SIGKILL)
        if self.calls == self.term_at_forward:
            os.kill(os.getpid(), signal.SIGTERM)
        x = batch["points"]                      # (B, dim)
        recon = self.decoder(self.encoder(x))    # (B, dim)
        rec = (recon - x).pow(2).mean()
        reg = 1e-3 * recon.pow(2).mean()
        loss = rec + reg
        if self.calls in self.nan_at_forwards:
            loss = loss * float("nan")
        return {"loss": loss, "recon": rec, "reg": reg}

    def visualize(self, batch, outputs):
        x = batch["points"][:4].detach().float().cpu()
        picture = (x - x.min()) / (x.max() - x.min() + 1e-9)
        return {"inputs": np.repeat(picture.numpy()[:, :, None], 3, axis=2)}


class TinyPoints(Dataset):
    def __init__(self, size: int, dim: int, noise: float):
        self.data = torch.randn(size, dim, generator=torch.Generator().manual_seed(1234))
        self.noise = noise

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        x = self.data[i]
        if self.noise:
            x = x + self.noise * torch.randn(x.shape)  # global RNG on purpose (see module docstring)
        return {"points": x}


def build_tiny_model(cfg: TinyModelConfig) -> nn.Module:
    return TinyAutoencoder(cfg.dim, cfg.hidden, cfg.dropout, cfg.kill_at_forward, tuple(cfg.nan_at_forwards),
                           cfg.term_at_forward)


def build_tiny_data(cfg: TinyDataConfig) -> Dataset:
    return TinyPoints(cfg.size, cfg.dim, cfg.noise)


def register() -> None:
    MODEL_CONFIGS["tiny_ae"] = TinyModelConfig
    DATA_CONFIGS["tiny_points"] = TinyDataConfig
    MODEL_FACTORIES["tiny_ae"] = build_tiny_model
    DATASET_FACTORIES["tiny_points"] = build_tiny_data


def write_config(path, model=None, data=None, optim=None, sched=None, train=None) -> str:
    """A complete tiny run config as YAML; each argument updates that section."""
    import yaml
    cfg = {
        "model": {"name": "tiny_ae", "dim": 8, "hidden": 16, **(model or {})},
        "data": {"name": "tiny_points", "size": 64, "dim": 8, **(data or {})},
        "optim": {"lr": 0.01, **(optim or {})},
        "sched": {"warmup_epochs": 0.5, "min_lr": 0.001, **(sched or {})},
        "train": {"epochs": 2, "batch_size": 4, "log_every": 1, "tensorboard": False,
                  "progress_bar": False, "device": "cpu", "seed": 3, **(train or {})},
        "work_dir": str(path.parent / "run"),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return str(path)
