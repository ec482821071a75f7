"""Loading a pre-trained 3D encoder into a detector: every key under `vfe.` and `backbone_3d.`.

Accepted files (all read with torch.load(weights_only=True)):
* a pointmae training checkpoint (pointmae/engine/checkpoint.py: {"format": "pointmae-checkpoint",
  "model": state dict, "config": ..., "digest": ...}; verified through load_checkpoint);
* pointmae's final weights ({"format": "pointmae-weights", "model": state dict}, engine/trainer.py);
* an OpenPCDet checkpoint ({"model_state": state dict}, keys "backbone_3d.conv_input.0.weight", ...);
* a bare state dict.

The report lists the keys that matched (same name and shape), the detector's encoder keys the file
lacks (missing), the file's encoder keys the detector lacks (unexpected), and shape mismatches.
Loading refuses (PretrainedLoadError) a file in which no encoder key matches, and any shape
mismatch: half a backbone silently left random is worse than a clear error.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from pointmae.engine.checkpoint import FORMAT as CHECKPOINT_FORMAT
from pointmae.engine.checkpoint import load_checkpoint

ENCODER_PREFIXES = ("vfe.", "backbone_3d.")


class PretrainedLoadError(RuntimeError):
    """The pre-trained file cannot initialise the detector; the message names the file and why."""


@dataclass
class LoadReport:
    path: str
    source_format: str
    matched: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shape_mismatch: list[tuple[str, tuple, tuple]] = field(default_factory=list)
    ignored: int = 0          # keys outside the encoder prefixes (decoders, heads, optimizer-free)

    def summary(self) -> str:
        lines = [f"pre-trained weights {self.path} ({self.source_format}): {len(self.matched)} matched, "
                 f"{len(self.missing)} missing, {len(self.unexpected)} unexpected, "
                 f"{len(self.shape_mismatch)} shape mismatches; {self.ignored} keys outside "
                 f"{'/'.join(ENCODER_PREFIXES)} ignored"]
        for title, keys in (("missing (left as initialised)", self.missing), ("unexpected (not used)", self.unexpected)):
            if keys:
                lines.append(f"  {title}: " + ", ".join(keys[:20]) + (" ..." if len(keys) > 20 else ""))
        for key, want, got in self.shape_mismatch[:20]:
            lines.append(f"  shape mismatch {key}: detector {list(want)} vs file {list(got)}")
        return "\n".join(lines)


def read_state_dict(path) -> tuple[dict, str]:
    """The model state dict in `path` and the name of its format."""
    path = Path(path)
    if not path.is_file():
        raise PretrainedLoadError(f"--pretrained {path}: file not found")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user error
        raise PretrainedLoadError(f"--pretrained {path}: cannot be read as a torch checkpoint "
                                  f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e
    if isinstance(raw, dict) and raw.get("format") == CHECKPOINT_FORMAT:
        return load_checkpoint(path)["model"], "pointmae checkpoint"
    if isinstance(raw, dict) and raw.get("format") == "pointmae-weights":
        return raw["model"], "pointmae final weights"
    if isinstance(raw, dict) and isinstance(raw.get("model_state"), dict):
        return raw["model_state"], "OpenPCDet checkpoint"
    if isinstance(raw, dict) and raw and all(isinstance(v, torch.Tensor) for v in raw.values()):
        return raw, "state dict"
    raise PretrainedLoadError(f"--pretrained {path}: not a pointmae checkpoint, pointmae weights, OpenPCDet "
                              "checkpoint ('model_state') or state dict")


def load_pretrained_encoder(model: nn.Module, path, prefixes: Sequence[str] = ENCODER_PREFIXES) -> LoadReport:
    """Copies every `prefixes` key of the file at `path` into `model` (in place); returns the report.
    Keys wrapped by DistributedDataParallel ("module.") are unwrapped first."""
    state, fmt = read_state_dict(path)
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    prefixes = tuple(prefixes)
    own = {k: v for k, v in model.state_dict().items() if k.startswith(prefixes)}
    theirs = {k: v for k, v in state.items() if k.startswith(prefixes)}
    report = LoadReport(str(path), fmt, ignored=len(state) - len(theirs))
    to_load = {}
    for key, value in theirs.items():
        if key not in own:
            report.unexpected.append(key)
        elif tuple(own[key].shape) != tuple(value.shape):
            report.shape_mismatch.append((key, tuple(own[key].shape), tuple(value.shape)))
        else:
            report.matched.append(key)
            to_load[key] = value
    report.missing = [k for k in own if k not in theirs]
    if report.shape_mismatch:
        raise PretrainedLoadError(report.summary() + "\nrefusing to load: the pre-trained encoder does not have the "
                                  "detector's shapes (check point_channels / in_channels, backbone type and voxel grid)")
    if not report.matched:
        raise PretrainedLoadError(report.summary() + f"\nrefusing to load: no key under {'/'.join(prefixes)} matches "
                                  "the detector (is this the checkpoint of a LiDAR pre-training with the same backbone?)")
    missing_in_model, unexpected_in_model = model.load_state_dict(to_load, strict=False)
    assert not unexpected_in_model, unexpected_in_model  # to_load holds only the model's own keys
    return report
