"""CenterPoint training targets: Gaussian class heatmaps and the regression targets at object centres.

Yin, Zhou and Krähenbühl, "Center-based 3D Object Detection and Tracking", CVPR 2021, which takes the
heatmap from CenterNet (Zhou, Wang and Krähenbühl, "Objects as Points", 2019): every object puts a 2D
Gaussian on the BEV map of its class, peak 1 at the cell of its centre, standard deviation
sigma = (2 r + 1) / 6 for the radius r of `gaussian_radius`; overlapping Gaussians take the maximum.

Box encoding at the centre cell (ix, iy) = floor of the centre in feature-map cells:
    (x / cell_x - ix, y / cell_y - iy,  z,  log dx, log dy, log dz,  sin h, cos h [, vx, vy])
with x, y measured from the grid corner (x0, y0) and cell = voxel_size * feature_map_stride. `encode`
and `decode_boxes` are exact inverses for box sizes in [MIN_BOX_SIZE, MAX_BOX_SIZE] metres: decoding
clamps the log-size codes to that range, because exp of an untrained (or diverging) head's raw output
overflows float32 above 88.7. Measured on the real samples with configs/detection/{kitti,nuscenes}.yaml:
a randomly initialised head in training mode (and, after one step and BatchNorm re-estimation, in
eval mode) outputs log sizes up to ~250; decoded to inf / 1e33 m boxes, rotated NMS refused them
(KITTI) and drawing the BEV pictures overflowed (nuScenes).

heading="axis" encodes (sin 2h, cos 2h) instead: only the box's axis, h modulo pi, for data whose
objects look the same from the front and the back (the synthetic world's cars, pedestrians). With the
direction encoding such objects get targets cos h = +1 and -1 for the same appearance, the L1 loss
settles between them near 0, and atan2 then turns the box by up to 90 degrees. Box IoU is the same
for h and h + pi, so AP is unaffected by the lost direction (AOS / heading-aware metrics are not).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

# Box sizes (metres) that encode / decode represent: encode floors sizes at MIN_BOX_SIZE (log 0 is
# -inf), decode clamps to both bounds. Road objects are centimetres to ~25 m; 1 km is far beyond.
MIN_BOX_SIZE = 1e-3
MAX_BOX_SIZE = 1e3


def gaussian_radius(height: float, width: float, min_overlap: float = 0.5) -> float:
    """CornerNet's radius (Law and Deng, ECCV 2018) as CenterNet and CenterPoint compute it.

    The largest shift r of a (height x width) box's corners that keeps IoU >= min_overlap with the
    original, taken as the minimum over three cases (both corners inside, both outside, one of each),
    each the root of a quadratic a r^2 - b r + c = 0. CenterNet writes the root as (b + sqrt(b^2 - 4ac))
    / 2 instead of / (2a); CenterPoint kept that formula and its published models were trained with it,
    so it is reproduced here as is (it is the "radius rule" of those detectors, not the exact geometry).
    Sizes in feature-map cells.
    """
    a1 = 1.0
    b1 = height + width
    c1 = width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + math.sqrt(max(b1 * b1 - 4 * a1 * c1, 0.0))) / 2
    a2 = 4.0
    b2 = 2 * (height + width)
    c2 = (1 - min_overlap) * width * height
    r2 = (b2 + math.sqrt(max(b2 * b2 - 4 * a2 * c2, 0.0))) / 2
    a3 = 4 * min_overlap
    b3 = -2 * min_overlap * (height + width)
    c3 = (min_overlap - 1) * width * height
    r3 = (b3 + math.sqrt(max(b3 * b3 - 4 * a3 * c3, 0.0))) / 2
    return min(r1, r2, r3)


def gaussian_2d(radius: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """(2r+1, 2r+1) exp(-(dx^2 + dy^2) / (2 sigma^2)), sigma = (2r+1) / 6; 1 at the centre."""
    sigma = (2 * radius + 1) / 6.0
    d = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    g = torch.exp(-(d[None, :] ** 2 + d[:, None] ** 2) / (2 * sigma * sigma))
    g[g < torch.finfo(dtype).eps * g.max()] = 0   # CenterNet zeroes the negligible tails
    return g


def draw_gaussian(heatmap: torch.Tensor, center_x: int, center_y: int, radius: int) -> None:
    """In place: heatmap (H, W) = max(heatmap, Gaussian of `radius` centred at column x, row y),
    clipped at the borders."""
    h, w = heatmap.shape
    g = gaussian_2d(radius, heatmap.dtype, heatmap.device)
    left, right = min(center_x, radius), min(w - center_x, radius + 1)
    top, bottom = min(center_y, radius), min(h - center_y, radius + 1)
    if left + right <= 0 or top + bottom <= 0:
        return
    region = heatmap[center_y - top:center_y + bottom, center_x - left:center_x + right]
    patch = g[radius - top:radius + bottom, radius - left:radius + right]
    torch.maximum(region, patch, out=region)


@dataclass
class FeatureGrid:
    """Where the head's BEV map sits: corner (x0, y0), cell size (metres), size (W = nx, H = ny)."""
    x0: float
    y0: float
    cell_x: float
    cell_y: float
    nx: int
    ny: int

    def cell_position(self, xy: torch.Tensor) -> torch.Tensor:
        """(M, 2) metres -> (M, 2) continuous (column, row) positions in cells."""
        return torch.stack([(xy[:, 0] - self.x0) / self.cell_x, (xy[:, 1] - self.y0) / self.cell_y], dim=1)


def code_size(with_velocity: bool) -> int:
    return 10 if with_velocity else 8


HEADINGS = ("direction", "axis")


def _heading_factor(heading: str) -> float:
    if heading not in HEADINGS:
        raise ValueError(f"heading must be one of {HEADINGS}, got {heading!r}")
    return 1.0 if heading == "direction" else 2.0


def encode(boxes: torch.Tensor, grid: FeatureGrid, with_velocity: bool,
           heading: str = "direction") -> tuple[torch.Tensor, torch.Tensor]:
    """boxes (M, 7|9) -> (codes (M, 8|10), cells (M, 2) int64 (column, row)). See the module docstring.
    Missing or NaN velocities encode as NaN (the loss skips them)."""
    k = _heading_factor(heading)
    boxes = boxes.to(torch.float64)
    pos = grid.cell_position(boxes[:, :2])
    cells = torch.floor(pos).long()
    parts = [pos - cells, boxes[:, 2:3], torch.log(boxes[:, 3:6].clamp(min=MIN_BOX_SIZE)),
             torch.sin(k * boxes[:, 6:7]), torch.cos(k * boxes[:, 6:7])]
    if with_velocity:
        parts.append(boxes[:, 7:9] if boxes.shape[1] >= 9 else boxes.new_full((len(boxes), 2), float("nan")))
    return torch.cat(parts, dim=1), cells


def decode_boxes(codes: torch.Tensor, cells: torch.Tensor, grid: FeatureGrid, heading: str = "direction") -> torch.Tensor:
    """Inverse of `encode`: codes (M, 8|10) at cells (M, 2) (column, row) -> boxes (M, 7|9); with
    heading="axis" the heading comes back in (-pi/2, pi/2]. Sizes are clamped to [MIN_BOX_SIZE,
    MAX_BOX_SIZE] (module docstring), so finite codes always give finite boxes."""
    x = (cells[:, 0].to(codes.dtype) + codes[:, 0]) * grid.cell_x + grid.x0
    y = (cells[:, 1].to(codes.dtype) + codes[:, 1]) * grid.cell_y + grid.y0
    dims = torch.exp(codes[:, 3:6].clamp(math.log(MIN_BOX_SIZE), math.log(MAX_BOX_SIZE)))
    yaw = torch.atan2(codes[:, 6], codes[:, 7]) / _heading_factor(heading)
    out = [x[:, None], y[:, None], codes[:, 2:3], dims, yaw[:, None]]
    if codes.shape[1] >= 10:
        out.append(codes[:, 8:10])
    return torch.cat(out, dim=1)


@dataclass
class CenterTargets:
    """For a batch of B samples, K slots per sample (max_objects per task group).

    heatmap: (B, num_classes, H, W) in [0, 1];  index: (B, K) int64 flat cell row * W + column;
    codes: (B, K, code_size) regression targets (NaN where unknown, e.g. a velocity);
    mask: (B, K) bool, the slots that hold an object;  labels: (B, K) int64 their class (0 in empty slots).
    """
    heatmap: torch.Tensor
    index: torch.Tensor
    codes: torch.Tensor
    mask: torch.Tensor
    labels: torch.Tensor


def build_targets(boxes: Sequence[torch.Tensor], labels: Sequence[torch.Tensor], num_classes: int,
                  grid: FeatureGrid, with_velocity: bool, max_objects: int = 500, min_overlap: float = 0.1,
                  min_radius: int = 2, device=None, dtype=torch.float32, heading: str = "direction",
                  task_of_class: Optional[Sequence[int]] = None) -> CenterTargets:
    """boxes[b]: (M_b, 7|9) sensor-frame boxes; labels[b]: (M_b,) int64 class index in [0, num_classes).

    Objects whose centre is outside the grid or with a non-positive size get no target; beyond
    max_objects per sample and task group (task_of_class: the group of each class, default one group)
    the rest of that group are ignored (in input order), as OpenPCDet caps each group's objects. The
    slots of all groups share one axis: K = max_objects * number of groups.
    """
    batch = len(boxes)
    cs = code_size(with_velocity)
    task_of_class = [0] * num_classes if task_of_class is None else [int(t) for t in task_of_class]
    if len(task_of_class) != num_classes:
        raise ValueError(f"task_of_class needs one group per class ({num_classes}), got {len(task_of_class)}")
    num_tasks = max(task_of_class) + 1
    slots = max_objects * num_tasks
    heatmap = torch.zeros(batch, num_classes, grid.ny, grid.nx, dtype=dtype, device=device)
    index = torch.zeros(batch, slots, dtype=torch.int64, device=device)
    codes = torch.zeros(batch, slots, cs, dtype=dtype, device=device)
    mask = torch.zeros(batch, slots, dtype=torch.bool, device=device)
    slot_labels = torch.zeros(batch, slots, dtype=torch.int64, device=device)
    for b in range(batch):
        bx = torch.as_tensor(boxes[b]).detach().to("cpu", torch.float64)
        lb = torch.as_tensor(labels[b]).detach().to("cpu", torch.int64)
        if len(bx) != len(lb):
            raise ValueError(f"sample {b}: {len(bx)} boxes but {len(lb)} labels")
        if len(bx) == 0:
            continue
        if lb.min() < 0 or lb.max() >= num_classes:
            raise ValueError(f"sample {b}: labels must be in [0, {num_classes}), got {lb.tolist()}")
        enc, cells = encode(bx, grid, with_velocity, heading)
        slot = 0
        per_task = [0] * num_tasks
        for m in range(len(bx)):
            col, row = int(cells[m, 0]), int(cells[m, 1])
            if not (0 <= col < grid.nx and 0 <= row < grid.ny) or (bx[m, 3:5] <= 0).any():
                continue
            task = task_of_class[int(lb[m])]
            if per_task[task] >= max_objects:
                continue
            per_task[task] += 1
            # Box footprint in cells: dx (length) along x, dy (width) along y, as CenterPoint passes them.
            radius = gaussian_radius(float(bx[m, 3]) / grid.cell_x, float(bx[m, 4]) / grid.cell_y, min_overlap)
            radius = max(min_radius, int(radius))
            draw_gaussian(heatmap[b, int(lb[m])], col, row, radius)
            index[b, slot] = row * grid.nx + col
            codes[b, slot] = enc[m].to(dtype)
            mask[b, slot] = True
            slot_labels[b, slot] = lb[m]
            slot += 1
    return CenterTargets(heatmap, index, codes, mask, slot_labels)
