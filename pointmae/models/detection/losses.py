"""CenterPoint's two losses.

* `focal_heatmap_loss`: the penalty-reduced pixel-wise focal loss of CenterNet (Zhou et al., "Objects
  as Points", 2019; Lin et al.'s focal loss, ICCV 2017, with alpha = 2, beta = 4): at the centre cells
  (target == 1) -(1 - p)^alpha log p, elsewhere -(1 - y)^beta p^alpha log(1 - p), summed and divided by
  the number of centres (at least 1).
* `masked_l1_loss`: L1 between the predicted and target codes at the object cells, per code entry
  weighted by `code_weights` and divided by the number of objects; NaN targets (unknown velocities)
  contribute nothing.
"""
from __future__ import annotations

import torch


def focal_heatmap_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 2.0, beta: float = 4.0,
                       eps: float = 1e-4) -> torch.Tensor:
    """logits, target: (B, C, H, W); target in [0, 1] with exact 1 at the centres. Returns a scalar."""
    p = torch.sigmoid(logits.float()).clamp(eps, 1 - eps)
    target = target.float()
    positive = target.eq(1).float()
    negative = 1.0 - positive
    pos_loss = torch.log(p) * (1 - p) ** alpha * positive
    neg_loss = torch.log(1 - p) * p ** alpha * (1 - target) ** beta * negative
    num_pos = positive.sum()
    return -(pos_loss.sum() + neg_loss.sum()) / num_pos.clamp(min=1.0)


def gather_at(feature_map: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) map, (B, K) flat indices -> (B, K, C) values."""
    b, c, h, w = feature_map.shape
    flat = feature_map.reshape(b, c, h * w)
    return torch.gather(flat, 2, index[:, None, :].expand(b, c, index.shape[1])).transpose(1, 2)


def masked_l1_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                   code_weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """pred, target: (B, K, D); mask: (B, K) bool; code_weights: (D,).
    Returns (weighted total, per-entry loss (D,)), both divided by the number of objects."""
    valid = mask[..., None] & torch.isfinite(target)
    diff = torch.where(valid, (pred.float() - torch.nan_to_num(target.float())).abs(), torch.zeros_like(pred.float()))
    num = mask.sum().float().clamp(min=1.0)
    per_entry = diff.sum(dim=(0, 1)) / num
    return (per_entry * code_weights.to(per_entry)).sum(), per_entry
