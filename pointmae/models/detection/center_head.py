"""CenterPoint's detection head (Yin et al., CVPR 2021): a shared 3x3 conv, then for each task group
of classes one small conv branch per output on the BEV map.

Task groups come from CBGS (Zhu et al., "Class-balanced Grouping and Sampling for Point Cloud 3D
Object Detection", 2019), which CenterPoint uses on nuScenes: classes of similar size and shape share
a group ([car], [truck, construction_vehicle], [bus, trailer], [barrier], [motorcycle, bicycle],
[pedestrian, traffic_cone]); each group has its own heatmap and regression branches, its own loss
normalisation and its own top-k at decoding, so rare groups are not drowned by frequent ones. One
group holding every class is the plain CenterNet head.

forward(bev) returns, with T groups and C classes:

    heatmap  (B, C, H, W)     class logits, channels in class order whatever the grouping (bias starts
                              at -2.19: prior 0.1, as in CenterNet)
    offset   (B, T * 2, H, W) sub-cell centre offset (x, y), group by group
    z        (B, T * 1, H, W) centre height (metres)
    dims     (B, T * 3, H, W) log (dx, dy, dz)
    rot      (B, T * 2, H, W) (sin, cos) of the heading
    vel      (B, T * 2, H, W) (vx, vy) m/s, only with_velocity

`codes(maps)` stacks offset..vel in the order of targets.encode: (B, T, 8|10, H, W).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

HEATMAP_PRIOR = 0.1


class CenterHead(nn.Module):
    """tasks: the class indices of each group, together a partition of range(num_classes), e.g.
    [[0], [1, 2], [3, 4], [5], [6, 7], [8, 9]]."""

    def __init__(self, in_channels: int, tasks: Sequence[Sequence[int]], head_channels: int = 64,
                 with_velocity: bool = False):
        super().__init__()
        self.tasks = [list(t) for t in tasks]
        flat = [c for t in self.tasks for c in t]
        if not self.tasks or any(len(t) == 0 for t in self.tasks) or sorted(flat) != list(range(len(flat))):
            raise ValueError(f"tasks must split the class indices 0..C-1 into non-empty groups, each index once, "
                             f"got {self.tasks}")
        self.num_classes = len(flat)
        self.with_velocity = with_velocity
        # The concatenated group heatmaps hold the classes in `flat` order; this puts them back in class order.
        self.register_buffer("class_order", torch.argsort(torch.tensor(flat)), persistent=False)
        task_of_class = torch.empty(self.num_classes, dtype=torch.int64)
        for i, t in enumerate(self.tasks):
            task_of_class[t] = i
        self.register_buffer("task_of_class", task_of_class, persistent=False)
        self.shared_conv = nn.Sequential(nn.Conv2d(in_channels, head_channels, 3, padding=1, bias=False),
                                         nn.BatchNorm2d(head_channels), nn.ReLU())
        self.regression = {"offset": 2, "z": 1, "dims": 3, "rot": 2}
        if with_velocity:
            self.regression["vel"] = 2
        self.task_heads = nn.ModuleList(self._task_branches(head_channels, len(t)) for t in self.tasks)
        # Heads saved before task groups existed had one group's branches under `branches.`.
        self._register_load_state_dict_pre_hook(self._rename_single_group_keys)

    def _task_branches(self, head_channels: int, num_classes: int) -> nn.ModuleDict:
        outputs = {"heatmap": num_classes, **self.regression}
        branches = nn.ModuleDict({
            name: nn.Sequential(nn.Conv2d(head_channels, head_channels, 3, padding=1, bias=False),
                                nn.BatchNorm2d(head_channels), nn.ReLU(),
                                nn.Conv2d(head_channels, channels, 3, padding=1, bias=True))
            for name, channels in outputs.items()})
        nn.init.constant_(branches["heatmap"][-1].bias, -math.log((1 - HEATMAP_PRIOR) / HEATMAP_PRIOR))
        for name, branch in branches.items():
            if name != "heatmap":
                nn.init.kaiming_normal_(branch[-1].weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(branch[-1].bias)
        return branches

    def _rename_single_group_keys(self, state_dict, prefix, *args):
        old = prefix + "branches."
        if len(self.tasks) == 1:
            for key in [k for k in state_dict if k.startswith(old)]:
                state_dict[prefix + "task_heads.0." + key[len(old):]] = state_dict.pop(key)

    def forward(self, bev: torch.Tensor) -> dict[str, torch.Tensor]:
        """bev: (B, in_channels, H, W) -> dict of (B, c, H, W) maps (see the module docstring)."""
        x = self.shared_conv(bev)
        outs = [{name: branch(x) for name, branch in head.items()} for head in self.task_heads]
        maps = {"heatmap": torch.cat([o["heatmap"] for o in outs], 1)[:, self.class_order]}
        for name in self.regression:
            maps[name] = torch.cat([o[name] for o in outs], 1)
        return maps

    def codes(self, maps: dict[str, torch.Tensor]) -> torch.Tensor:
        """The regression maps as (B, T, code_size, H, W), entries in targets.encode's order."""
        b, _, h, w = maps["offset"].shape
        t = len(self.tasks)
        return torch.cat([maps[n].reshape(b, t, c, h, w) for n, c in self.regression.items()], dim=2)
