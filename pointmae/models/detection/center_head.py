"""CenterPoint's detection head (Yin et al., CVPR 2021): a shared 3x3 conv, then one small conv
branch per output on the BEV map:

    heatmap  (B, num_classes, H, W)  class logits (bias starts at -2.19: prior 0.1, as in CenterNet)
    offset   (B, 2, H, W)            sub-cell centre offset (x, y)
    z        (B, 1, H, W)            centre height (metres)
    dims     (B, 3, H, W)            log (dx, dy, dz)
    rot      (B, 2, H, W)            (sin, cos) of the heading
    vel      (B, 2, H, W)            (vx, vy) m/s, only with_velocity

`codes(preds)` stacks offset..vel in the order of targets.encode: (B, 8|10, H, W).
One head serves all classes (CenterPoint splits nuScenes' classes into six task groups; a single
group is the simpler special case with the same losses and decoding).
"""
from __future__ import annotations

import math

import torch
from torch import nn

HEATMAP_PRIOR = 0.1


class CenterHead(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, head_channels: int = 64, with_velocity: bool = False):
        super().__init__()
        self.num_classes = num_classes
        self.with_velocity = with_velocity
        self.shared_conv = nn.Sequential(nn.Conv2d(in_channels, head_channels, 3, padding=1, bias=False),
                                         nn.BatchNorm2d(head_channels), nn.ReLU())
        outputs = {"heatmap": num_classes, "offset": 2, "z": 1, "dims": 3, "rot": 2}
        if with_velocity:
            outputs["vel"] = 2
        self.branches = nn.ModuleDict({
            name: nn.Sequential(nn.Conv2d(head_channels, head_channels, 3, padding=1, bias=False),
                                nn.BatchNorm2d(head_channels), nn.ReLU(),
                                nn.Conv2d(head_channels, channels, 3, padding=1, bias=True))
            for name, channels in outputs.items()})
        nn.init.constant_(self.branches["heatmap"][-1].bias, -math.log((1 - HEATMAP_PRIOR) / HEATMAP_PRIOR))
        for name, branch in self.branches.items():
            if name != "heatmap":
                nn.init.kaiming_normal_(branch[-1].weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(branch[-1].bias)

    def forward(self, bev: torch.Tensor) -> dict[str, torch.Tensor]:
        """bev: (B, in_channels, H, W) -> dict of (B, c, H, W) maps (see the module docstring)."""
        x = self.shared_conv(bev)
        return {name: branch(x) for name, branch in self.branches.items()}

    def codes(self, preds: dict[str, torch.Tensor]) -> torch.Tensor:
        names = ["offset", "z", "dims", "rot"] + (["vel"] if self.with_velocity else [])
        return torch.cat([preds[n] for n in names], dim=1)
