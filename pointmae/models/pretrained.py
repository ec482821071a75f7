"""Reading pre-trained weights and matching them to a model, for both fine-tuning entry points:
`load_pretrained` (Point-MAE classifier: lenient, shape mismatches are reported and skipped) and
`load_pretrained_encoder` (detector: only `vfe.` / `backbone_3d.`, any shape mismatch refuses).

Formats understood by `read_pretrained_state` (any key may carry DDP's `module.` prefix; it is removed):
- pointmae training checkpoint (`checkpoints/*.pt`, pointmae/engine/checkpoint.py):
  {"format": "pointmae-checkpoint", "format_version", "model": state, "config", "digest", ...};
  read through load_checkpoint, which verifies version and digest.
- pointmae final weights (`final_model.pt`, engine/trainer.py): {"format": "pointmae-weights", "model": state};
  any other dict with a "model" state is taken the same way.
- the official Point-MAE release (Pang et al., ECCV 2022; github.com/Pang-Yatian/Point-MAE):
  {"base_model": state, "optimizer", "epoch", "metrics", ...}, saved from a DDP model. The pre-training
  file names the encoder `MAE_encoder.*` (mini-PointNet `MAE_encoder.encoder.*`, blocks
  `MAE_encoder.blocks.blocks.<i>.*`) and the decoder `MAE_decoder.*` / `increase_dim.0.*`; fine-tuned
  files name the encoder without prefix (`encoder.*` = the mini-PointNet, `pos_embed.*`,
  `blocks.blocks.<i>.*`, `norm.*`) and the head `cls_head_finetune.*`. Their block layout (norm1,
  attn.qkv without bias, attn.proj, norm2, mlp.fc1, mlp.fc2) is ours, so only prefixes are renamed
  (in any of these wrappers, whenever the keys are in that naming).
- an OpenPCDet checkpoint: {"model_state": state, "optimizer_state", "epoch", "it", "version"}, keys
  named after the detector's modules (`vfe.*`, `backbone_3d.conv_input.0.weight`, `dense_head.*`, ...).
- {"state_dict": state} (the common Lightning / mmcv wrapper), or a plain state dict.

The report lists matched (same name and shape), missing (the model's keys left as initialised),
unexpected (the file's keys the model lacks or that were skipped) and shape-mismatched keys, and
counts the file's keys outside the requested prefixes (ignored). Both loaders refuse a file of which
nothing matches: a wrong file would otherwise silently fine-tune from scratch.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from pointmae.engine.checkpoint import FORMAT as CHECKPOINT_FORMAT
from pointmae.engine.checkpoint import CheckpointError, load_checkpoint

ENCODER_PREFIXES = ("vfe.", "backbone_3d.")
Source = Union[str, Path, Mapping]


class PretrainedLoadError(ValueError):
    """The pre-trained file cannot be used for this model; the message names the file and why."""


@dataclass
class LoadReport:
    source: str
    format: str
    prefixes: Tuple[str, ...] = ()                           # scope of the load; () = every key
    matched: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)         # the model's keys left as initialised
    unexpected: List[str] = field(default_factory=list)      # the file's keys not loaded (absent or skipped)
    mismatched: List[Tuple[str, tuple, tuple]] = field(default_factory=list)  # (key, model shape, file shape)
    ignored: int = 0                                         # the file's keys outside `prefixes`

    def summary(self) -> str:
        def some(items):
            return ", ".join(items[:10]) + (f", ... ({len(items)} in all)" if len(items) > 10 else "")
        scope = f"; {self.ignored} keys outside {'/'.join(self.prefixes)} ignored" if self.prefixes else ""
        lines = [f"pre-trained weights {self.source} ({self.format}): {len(self.matched)} matched, "
                 f"{len(self.missing)} missing, {len(self.unexpected)} unexpected, "
                 f"{len(self.mismatched)} shape mismatches{scope}"]
        for title, keys in (("missing (kept as initialised)", self.missing),
                            ("unexpected (not loaded)", self.unexpected)):
            if keys:
                lines.append(f"  {title}: {some(keys)}")
        for key, want, got in self.mismatched[:10]:            # long lines: one each
            lines.append(f"  shape mismatch {key}: model {list(want)} vs file {list(got)}")
        if len(self.mismatched) > 10:
            lines.append(f"  ... ({len(self.mismatched)} shape mismatches in all)")
        return "\n".join(lines)


# Official Point-MAE key prefixes -> ours, tried in order (first match wins).
_OFFICIAL_RENAMES = [
    # pre-training model (Point_MAE)
    (r"^MAE_encoder\.encoder\.", "encoder.patch_embed."),
    (r"^MAE_encoder\.pos_embed\.", "encoder.pos_embed."),
    (r"^MAE_encoder\.blocks\.blocks\.", "encoder.blocks."),
    (r"^MAE_encoder\.norm\.", "encoder.norm."),
    (r"^MAE_decoder\.blocks\.", "decoder_blocks."),
    (r"^MAE_decoder\.norm\.", "decoder_norm."),
    (r"^increase_dim\.0\.", "decoder_pred."),
    # fine-tuning model (PointTransformer)
    (r"^encoder\.(first_conv|second_conv)\.", r"encoder.patch_embed.\1."),
    (r"^pos_embed\.", "encoder.pos_embed."),
    (r"^blocks\.blocks\.", "encoder.blocks."),
    (r"^norm\.", "encoder.norm."),
    (r"^cls_head_finetune\.", "head."),
]


def _strip_module(key: str) -> str:
    return key[len("module."):] if key.startswith("module.") else key


def is_official_point_mae(state: Mapping[str, torch.Tensor]) -> bool:
    """True when the keys are in the official Point-MAE naming (after removing `module.`)."""
    return any(_strip_module(k).startswith(("MAE_encoder.", "blocks.blocks.", "cls_head_finetune.")) for k in state)


def convert_official_point_mae(state: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Official Point-MAE state dict (pre-training or fine-tuned, with or without `module.`) -> our
    names. Keys with no counterpart are kept as they are, so the loader reports them as unexpected
    rather than dropping them silently."""
    out = {}
    for key, value in state.items():
        key = _strip_module(key)
        for pattern, repl in _OFFICIAL_RENAMES:
            key, n = re.subn(pattern, repl, key)
            if n:
                break
        out[key] = value
    return out


def _read_file(path: Path, name: str):
    if not path.is_file():
        raise PretrainedLoadError(f"pretrained checkpoint {name} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - retried below; the second error is the one reported
        pass
    # The official release pickles numpy scalars in its metadata, which weights_only refuses; fall back
    # to a full load, only for a file the user named explicitly.
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - garbage, truncated, foreign pickle: the same user error
        first = str(e).splitlines()[0] if str(e) else ""
        raise PretrainedLoadError(f"pretrained checkpoint {name} cannot be read as a torch checkpoint "
                                  f"({type(e).__name__}: {first})") from None


def read_pretrained_state(source: Source) -> tuple[Dict[str, torch.Tensor], str, str]:
    """-> (state dict in our naming without `module.`, format description, source name) from a file or a dict."""
    name = str(source) if isinstance(source, (str, Path)) else "<state dict>"
    obj = _read_file(Path(source), name) if isinstance(source, (str, Path)) else source
    if not isinstance(obj, Mapping):
        raise PretrainedLoadError(f"pretrained checkpoint {name}: expected a dict, got {type(obj).__name__}")

    def wrapped(key):  # the state under `key`, if it is one
        return isinstance(obj.get(key), Mapping)

    if wrapped("base_model"):
        state, fmt = obj["base_model"], "official Point-MAE release"
    elif obj.get("format") == CHECKPOINT_FORMAT and isinstance(source, (str, Path)):
        try:  # re-read through the engine so version and digest are checked like on resume
            state, fmt = load_checkpoint(Path(source))["model"], "pointmae checkpoint"
        except CheckpointError as e:
            raise PretrainedLoadError(str(e)) from None
    elif wrapped("model"):  # final weights, or a checkpoint handed over in memory (no file to verify)
        fmt = {"pointmae-weights": "pointmae final weights", CHECKPOINT_FORMAT: "pointmae checkpoint"}.get(
            obj.get("format"), "'model' wrapper")
        state = obj["model"]
    elif wrapped("model_state"):
        state, fmt = obj["model_state"], "OpenPCDet checkpoint"
    elif wrapped("state_dict"):
        state, fmt = obj["state_dict"], "'state_dict' wrapper"
    else:
        state, fmt = obj, "state dict"
    bad = next((k for k, v in state.items() if not isinstance(v, torch.Tensor)), None)
    if bad is not None or not state:
        why = (f"its key {bad!r} holds {type(state[bad]).__name__}, not a tensor" if bad is not None
               else "it holds no tensors")
        raise PretrainedLoadError(
            f"pretrained checkpoint {name} ({fmt}): {why}; expected a pointmae checkpoint or weights file, the "
            "official Point-MAE release ('base_model'), an OpenPCDet checkpoint ('model_state'), a 'state_dict' "
            "wrapper or a plain state dict")
    if is_official_point_mae(state):
        state = convert_official_point_mae(state)
        fmt = fmt if fmt.startswith("official") else f"{fmt}, official Point-MAE key names"
    else:
        state = {_strip_module(k): v for k, v in state.items()}
    return state, fmt, name


def _match(model: nn.Module, state: Mapping[str, torch.Tensor], report: LoadReport,
           skip: Sequence[str] = ()) -> Dict[str, torch.Tensor]:
    """Fills `report` and returns the tensors that can be loaded (same name and shape). Only keys
    under report.prefixes take part (all when empty); file keys under `skip` are not loaded."""
    def in_scope(key):
        return not report.prefixes or key.startswith(report.prefixes)
    own = {k: v for k, v in model.state_dict().items() if in_scope(k)}
    to_load = {}
    for key, value in state.items():
        if not in_scope(key):
            report.ignored += 1
        elif key.startswith(tuple(skip)) or key not in own:
            report.unexpected.append(key)
        elif own[key].shape != value.shape:
            report.mismatched.append((key, tuple(own[key].shape), tuple(value.shape)))
        else:
            to_load[key] = value
            report.matched.append(key)
    report.missing = [k for k in own if k not in to_load]
    return to_load


def load_pretrained(model: nn.Module, source: Source, skip_prefixes=("head.",)) -> LoadReport:
    """Copies the matching tensors of `source` into `model` and reports what matched.

    `skip_prefixes`: keys not to load even where they match (by default the classification head,
    whose classes differ between data sets; pass () to resume a fine-tuned model whole). Shape
    mismatches are reported and left as initialised (a wider or narrower model of the same family
    still takes what fits). Raises PretrainedLoadError when no tensor matches.
    """
    state, fmt, name = read_pretrained_state(source)
    report = LoadReport(name, fmt)
    to_load = _match(model, state, report, skip=skip_prefixes)
    if not report.matched:
        raise PretrainedLoadError(
            f"pretrained checkpoint {name} ({fmt}): none of its {len(state)} tensors matches the model "
            f"(model keys look like {list(model.state_dict())[:3]}, the checkpoint's like {list(state)[:3]}"
            + (f"; {len(report.mismatched)} have the right name but another shape" if report.mismatched else "")
            + ")")
    model.load_state_dict(to_load, strict=False)
    return report


def load_pretrained_encoder(model: nn.Module, source: Source, prefixes: Sequence[str] = ENCODER_PREFIXES) -> LoadReport:
    """Copies every `prefixes` key of `source` into the detector `model` (in place); returns the report.

    Strict where the classifier is lenient: any shape mismatch refuses (half a backbone silently left
    random is worse than a clear error), and so does a file with no key under `prefixes`.
    """
    state, fmt, name = read_pretrained_state(source)
    report = LoadReport(name, fmt, prefixes=tuple(prefixes))
    to_load = _match(model, state, report)
    if report.mismatched:
        raise PretrainedLoadError(report.summary() + "\nrefusing to load: the pre-trained encoder does not have "
                                  "the detector's shapes (check point_channels / in_channels, backbone type and "
                                  "voxel grid)")
    if not report.matched:
        raise PretrainedLoadError(report.summary() + f"\nrefusing to load: no key under {'/'.join(report.prefixes)} "
                                  "matches the detector (is this the checkpoint of a LiDAR pre-training with the same "
                                  "backbone?)")
    model.load_state_dict(to_load, strict=False)
    return report
