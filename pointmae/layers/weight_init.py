"""The transformer initialisation of the MAE family (MAE's models_mae.py / timm's ViT): every Linear
weight from a normal truncated at two standard deviations, std 0.02, biases zero, LayerNorms the identity."""
from __future__ import annotations

from torch import nn


def init_linear_and_layernorm(model: nn.Module, std: float = 0.02) -> None:
    """Initialise every nn.Linear and nn.LayerNorm of `model` in place, in model.modules() order (so a
    seeded run draws the same numbers as before this was shared)."""
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
