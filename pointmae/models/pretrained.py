"""Loading pre-trained Point-MAE weights into the fine-tuning model (PointMAEClassifier).

Three sources are understood:
- pointmae's own files: a training checkpoint (`checkpoints/*.pt`, the state under "model") or the
  final weights (`final_model.pt`) of a pre-training or fine-tuning run. Our PointMAE and
  PointMAEClassifier share the encoder's key names (`encoder.*`), so they load by name.
- the official Point-MAE release (Pang et al., ECCV 2022; github.com/Pang-Yatian/Point-MAE): the
  state is under "base_model", keys may carry DDP's `module.` prefix. The pre-training file names the
  encoder `MAE_encoder.*` (mini-PointNet `MAE_encoder.encoder.*`, blocks `MAE_encoder.blocks.blocks.<i>.*`)
  and the decoder `MAE_decoder.*` / `increase_dim.0.*`; the fine-tuned files name the encoder
  without prefix (`encoder.*` = the mini-PointNet, `pos_embed.*`, `blocks.blocks.<i>.*`, `norm.*`)
  and the head `cls_head_finetune.*`. Their block layout (norm1, attn.qkv without bias, attn.proj,
  norm2, mlp.fc1, mlp.fc2) is ours, so only the prefixes are renamed.
- a plain state dict in either naming.

Loading reports matched / missing / unexpected / shape-mismatched keys and refuses a source of
which no key matches the model (a wrong file would otherwise silently fine-tune from scratch).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Union

import torch
from torch import nn


class PretrainedLoadError(ValueError):
    """The checkpoint cannot be used for this model; the message names the file."""


@dataclass
class LoadReport:
    source: str
    format: str
    matched: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)        # in the model, not in the checkpoint
    unexpected: List[str] = field(default_factory=list)     # in the checkpoint, not in the model
    mismatched: List[str] = field(default_factory=list)     # in both, different shapes (not loaded)

    def summary(self) -> str:
        def some(keys):
            return ", ".join(keys[:6]) + (f", ... ({len(keys)} in all)" if len(keys) > 6 else "")
        lines = [f"loaded {self.source} ({self.format}): {len(self.matched)} tensors matched"]
        for name, keys in (("missing (kept as initialised)", self.missing),
                           ("unexpected (ignored)", self.unexpected),
                           ("shape mismatch (kept as initialised)", self.mismatched)):
            if keys:
                lines.append(f"  {len(keys)} {name}: {some(keys)}")
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


def is_official_point_mae(state: Mapping[str, torch.Tensor]) -> bool:
    """True when the keys are in the official Point-MAE naming (after removing `module.`)."""
    keys = [_strip_module(k) for k in state]
    return any(k.startswith(("MAE_encoder.", "blocks.blocks.", "cls_head_finetune.")) for k in keys)


def _strip_module(key: str) -> str:
    return key[len("module."):] if key.startswith("module.") else key


def convert_official_point_mae(state: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Official Point-MAE state dict (pre-training or fine-tuned, with or without `module.`) -> our
    names. Keys with no counterpart (e.g. a future addition) are kept as they are, so the loader
    reports them as unexpected rather than dropping them silently."""
    out = {}
    for key, value in state.items():
        key = _strip_module(key)
        for pattern, repl in _OFFICIAL_RENAMES:
            new, n = re.subn(pattern, repl, key)
            if n:
                key = new
                break
        out[key] = value
    return out


def read_pretrained_state(source: Union[str, Path, Mapping]) -> tuple[Dict[str, torch.Tensor], str, str]:
    """-> (state dict in our naming, format description, source name) from a file or a dict."""
    name = "<state dict>"
    if isinstance(source, (str, Path)):
        name = str(source)
        if not Path(source).is_file():
            raise PretrainedLoadError(f"pretrained checkpoint {name} does not exist")
        try:
            # The official release pickles numpy scalars in its metadata, which weights_only refuses;
            # fall back to a full load only for files the user named explicitly.
            obj = torch.load(source, map_location="cpu", weights_only=True)
        except Exception:
            try:
                obj = torch.load(source, map_location="cpu", weights_only=False)
            except Exception as e:
                raise PretrainedLoadError(f"pretrained checkpoint {name} cannot be read "
                                          f"({type(e).__name__}: {e})") from None
    else:
        obj = source
    if not isinstance(obj, Mapping):
        raise PretrainedLoadError(f"pretrained checkpoint {name}: expected a dict, got {type(obj).__name__}")
    if "base_model" in obj:
        state, fmt = obj["base_model"], "official Point-MAE release"
    elif "model" in obj and isinstance(obj["model"], Mapping):
        state, fmt = obj["model"], f"pointmae {obj.get('format', 'checkpoint')}"
    elif "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        state, fmt = obj["state_dict"], "state_dict"
    else:
        state, fmt = obj, "plain state dict"
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PretrainedLoadError(f"pretrained checkpoint {name} ({fmt}): the state holds non-tensor values")
    if is_official_point_mae(state):
        state = convert_official_point_mae(state)
        fmt = fmt if fmt.startswith("official") else f"{fmt}, official Point-MAE key names"
    else:
        state = {_strip_module(k): v for k, v in state.items()}
    return state, fmt, name


def load_pretrained(model: nn.Module, source: Union[str, Path, Mapping], skip_prefixes=("head.",)) -> LoadReport:
    """Copies the matching tensors of `source` into `model` and reports what matched.

    `skip_prefixes`: checkpoint keys not to load even where they match (by default the classification
    head, whose classes differ between data sets; pass () to resume a fine-tuned model whole).
    Raises PretrainedLoadError when no tensor matches.
    """
    state, fmt, name = read_pretrained_state(source)
    own = model.state_dict()
    report = LoadReport(name, fmt)
    to_load = {}
    for key, value in state.items():
        if key.startswith(tuple(skip_prefixes)) or key not in own:
            report.unexpected.append(key)
        elif own[key].shape != value.shape:
            report.mismatched.append(f"{key} {tuple(value.shape)} vs model {tuple(own[key].shape)}")
        else:
            to_load[key] = value
            report.matched.append(key)
    report.missing = [k for k in own if k not in to_load]
    if not report.matched:
        raise PretrainedLoadError(
            f"pretrained checkpoint {name} ({fmt}): none of its {len(state)} tensors matches the model "
            f"(model keys look like {list(own)[:3]}, the checkpoint's like {list(state)[:3]}"
            + (f"; {len(report.mismatched)} have the right name but another shape" if report.mismatched else "")
            + ")")
    model.load_state_dict(to_load, strict=False)
    return report
