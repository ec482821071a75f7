"""Frame transforms for training: seeded, exact on points AND boxes (and velocities), composable.

Each transform is a callable object `t(frame, rng) -> frame`; `Compose` chains them and draws every
random number from the one numpy Generator it is given, so a (seed, index) pair reproduces a sample.
Global augmentations follow the common LiDAR recipe (SECOND, Yan et al. 2018): random flip about the
x axis, rotation about z, uniform scaling, translation noise.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from pointmae.data.boxes import rotation_z, wrap_angle
from pointmae.data.frame import Frame


def _points(frame: Frame) -> np.ndarray:
    return frame.to_numpy().points


def _mirror(frame: Frame, axis: int) -> Frame:
    """The frame mirrored across the plane axis = 0 (axis 0: x -> -x, 1: y -> -y): points, box centres
    and velocities negate that coordinate; a heading h becomes pi - h (x) or -h (y)."""
    points = _points(frame).copy()
    points[:, axis] = -points[:, axis]
    boxes = frame.boxes.copy()
    boxes[:, axis] = -boxes[:, axis]
    boxes[:, 6] = wrap_angle((np.pi if axis == 0 else 0.0) - boxes[:, 6])
    if boxes.shape[1] >= 9:
        boxes[:, 7 + axis] = -boxes[:, 7 + axis]
    return replace(frame, points=points, boxes=boxes)


@dataclass
class RandomFlipY:
    """Mirror y -> -y (left/right) with probability p: heading -> -heading, vy -> -vy."""
    p: float = 0.5

    def __call__(self, frame: Frame, rng: np.random.Generator) -> Frame:
        return _mirror(frame, axis=1) if rng.random() < self.p else frame


@dataclass
class RandomFlipX:
    """Mirror x -> -x (front/back) with probability p: heading -> pi - heading, vx -> -vx. For
    360-degree datasets (nuScenes, Waymo); KITTI's labels cover the front camera only."""
    p: float = 0.5

    def __call__(self, frame: Frame, rng: np.random.Generator) -> Frame:
        return _mirror(frame, axis=0) if rng.random() < self.p else frame


@dataclass
class RandomRotateZ:
    """Rotate the scene about the sensor's z axis by U(-max_angle, max_angle) radians."""
    max_angle: float = np.pi / 4

    def __call__(self, frame: Frame, rng: np.random.Generator) -> Frame:
        angle = rng.uniform(-self.max_angle, self.max_angle)
        r = rotation_z(angle)
        points = _points(frame).copy()
        points[:, :3] = (points[:, :3].astype(np.float64) @ r.T).astype(np.float32)
        boxes = frame.boxes.copy()
        boxes[:, :3] = boxes[:, :3] @ r.T
        boxes[:, 6] = wrap_angle(boxes[:, 6] + angle)
        if boxes.shape[1] >= 9:
            boxes[:, 7:9] = boxes[:, 7:9] @ r[:2, :2].T
        return replace(frame, points=points, boxes=boxes)


@dataclass
class RandomScale:
    """Scale positions, sizes and velocities by U(low, high)."""
    low: float = 0.95
    high: float = 1.05

    def __call__(self, frame: Frame, rng: np.random.Generator) -> Frame:
        s = rng.uniform(self.low, self.high)
        points = _points(frame).copy()
        points[:, :3] *= s
        boxes = frame.boxes.copy()
        boxes[:, :6] *= s
        if boxes.shape[1] >= 9:
            boxes[:, 7:9] *= s
        return replace(frame, points=points, boxes=boxes)


@dataclass
class RandomTranslate:
    """Add N(0, std) metres to every coordinate (one offset for the whole frame)."""
    std: tuple[float, float, float] = (0.2, 0.2, 0.2)

    def __call__(self, frame: Frame, rng: np.random.Generator) -> Frame:
        offset = rng.normal(0.0, self.std)
        points = _points(frame).copy()
        points[:, :3] += offset.astype(np.float32)
        boxes = frame.boxes.copy()
        boxes[:, :3] += offset
        return replace(frame, points=points, boxes=boxes)


@dataclass
class CropRange:
    """Keep points inside [x_min, y_min, z_min, x_max, y_max, z_max] and boxes whose centre is inside
    (counts of what was removed go to meta["cropped_points"], meta["cropped_boxes"])."""
    limits: tuple[float, float, float, float, float, float] = (-75.2, -75.2, -2.0, 75.2, 75.2, 4.0)

    def __call__(self, frame: Frame, rng: np.random.Generator | None = None) -> Frame:
        lo, hi = np.array(self.limits[:3]), np.array(self.limits[3:])
        points = _points(frame)
        keep = np.all((points[:, :3] >= lo) & (points[:, :3] <= hi), axis=1)
        keep_boxes = np.all((frame.boxes[:, :3] >= lo) & (frame.boxes[:, :3] <= hi), axis=1)
        out = frame.select_boxes(keep_boxes)
        meta = dict(frame.meta, cropped_points=int((~keep).sum()), cropped_boxes=int((~keep_boxes).sum()))
        return replace(out, points=points[keep], meta=meta)


@dataclass
class SamplePoints:
    """Exactly `num_points` points: a random subset, or all points plus random repeats when fewer."""
    num_points: int = 16384

    def __call__(self, frame: Frame, rng: np.random.Generator) -> Frame:
        points = _points(frame)
        n = len(points)
        if n == 0:
            raise ValueError(f"frame {frame.frame_id}: cannot sample points from an empty frame")
        if n >= self.num_points:
            index = rng.choice(n, self.num_points, replace=False)
        else:
            index = np.concatenate([rng.permutation(n), rng.choice(n, self.num_points - n, replace=True)])
        return replace(frame, points=points[index])


class Compose:
    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, frame: Frame, rng: np.random.Generator) -> Frame:
        for t in self.transforms:
            frame = t(frame, rng)
        return frame
