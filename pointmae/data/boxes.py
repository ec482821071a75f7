"""Box geometry in the pointmae convention (see frame.py): (x, y, z, dx, dy, dz, heading[, vx, vy]),
geometric centre, heading counter-clockwise from +x about +z.

Moving boxes between frames
---------------------------
A 7-DoF box is upright in the frame it is written in. A rigid transform with a little pitch/roll (a
LiDAR mounted slightly tilted, a car on a slope) tilts it; the box written in the target frame keeps
the transformed centre and the heading of the *projected* forward axis:

    heading' = atan2 of (R @ [cos h, sin h, 0])[:2]                       (rotate_heading)

That map is a bijection of the circle for any tilt under 90 degrees, and `unrotate_heading` is its
exact inverse (not the same formula with R.T, which is only inverse to second order in the tilt):
the h whose rotated forward axis has zero component along the target's normal n' = (-sin h', cos h', 0)
solves  cos h * a + sin h * b = 0  with  (a, b) = (R.T @ n')[:2].
So `untransform_boxes(transform_boxes(b, T), T) == b` to float64 rounding, which the tests check.
"""
from __future__ import annotations

import numpy as np


def wrap_angle(angle):
    """Angles into [-pi, pi)."""
    return (np.asarray(angle) + np.pi) % (2.0 * np.pi) - np.pi


def rotation_z(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def rotate_heading(heading, rotation: np.ndarray) -> np.ndarray:
    """Heading(s) (M,) after rotating the forward axis by the 3x3 `rotation` and projecting to xy."""
    heading = np.asarray(heading, dtype=np.float64)
    forward = np.stack([np.cos(heading), np.sin(heading), np.zeros_like(heading)], axis=-1)
    rotated = forward @ np.asarray(rotation, dtype=np.float64).T
    return np.arctan2(rotated[..., 1], rotated[..., 0])


def unrotate_heading(heading, rotation: np.ndarray) -> np.ndarray:
    """Exact inverse of `rotate_heading` for the same `rotation` (see the module docstring)."""
    heading = np.asarray(heading, dtype=np.float64)
    rotation = np.asarray(rotation, dtype=np.float64)
    normal = np.stack([-np.sin(heading), np.cos(heading), np.zeros_like(heading)], axis=-1)
    target = np.stack([np.cos(heading), np.sin(heading), np.zeros_like(heading)], axis=-1)
    ab = normal @ rotation            # rows: (R.T @ n')  ==  n' @ R
    source = np.arctan2(-ab[..., 0], ab[..., 1])
    # Of the two solutions h and h + pi, keep the one whose rotated forward axis points along target.
    forward = np.stack([np.cos(source), np.sin(source), np.zeros_like(source)], axis=-1)
    flip = np.einsum("...i,...i->...", forward @ rotation.T, target) < 0
    return wrap_angle(np.where(flip, source + np.pi, source))


def transform_boxes(boxes: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """Boxes (M, 7|9) written in frame A -> frame B, for the 4x4 rigid `transform` A -> B.

    Centre: full rigid transform. Heading: `rotate_heading`. Velocity (vx, vy): the 2x2 upper-left
    block of the rotation (a velocity in the horizontal plane stays horizontal)."""
    boxes = np.asarray(boxes, dtype=np.float64)
    transform = np.asarray(transform, dtype=np.float64)
    out = boxes.copy()
    rotation = transform[:3, :3]
    out[:, :3] = boxes[:, :3] @ rotation.T + transform[:3, 3]
    out[:, 6] = rotate_heading(boxes[:, 6], rotation)
    if boxes.shape[1] >= 9:
        out[:, 7:9] = boxes[:, 7:9] @ rotation[:2, :2].T
    return out


def untransform_boxes(boxes: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """Exact inverse of `transform_boxes(., transform)`: boxes in frame B -> frame A."""
    boxes = np.asarray(boxes, dtype=np.float64)
    transform = np.asarray(transform, dtype=np.float64)
    out = boxes.copy()
    rotation = transform[:3, :3]
    # Solve R x = p - t instead of using R.T: exact also for calibration matrices that are only
    # orthonormal to the printed precision (KITTI's R0_rect @ Tr_velo_to_cam).
    out[:, :3] = np.linalg.solve(rotation, (boxes[:, :3] - transform[:3, 3]).T).T
    out[:, 6] = unrotate_heading(boxes[:, 6], rotation)
    if boxes.shape[1] >= 9:
        out[:, 7:9] = np.linalg.solve(rotation[:2, :2], boxes[:, 7:9].T).T
    return out


def box_corners(boxes: np.ndarray) -> np.ndarray:
    """(M, 8, 3) corners. Order: bottom face counter-clockwise from (+dx/2, +dy/2), then top face
    in the same order."""
    boxes = np.asarray(boxes, dtype=np.float64)
    signs = np.array([[1, 1, -1], [-1, 1, -1], [-1, -1, -1], [1, -1, -1],
                      [1, 1, 1], [-1, 1, 1], [-1, -1, 1], [1, -1, 1]], dtype=np.float64) * 0.5
    local = signs[None] * boxes[:, None, 3:6]                                  # (M, 8, 3)
    c, s = np.cos(boxes[:, 6])[:, None], np.sin(boxes[:, 6])[:, None]
    x = local[..., 0] * c - local[..., 1] * s
    y = local[..., 0] * s + local[..., 1] * c
    return np.stack([x, y, local[..., 2]], axis=-1) + boxes[:, None, :3]


def points_in_boxes(points_xyz: np.ndarray, boxes: np.ndarray, margin: float = 0.0) -> np.ndarray:
    """(N, M) bool: point n lies inside box m (faces included), boxes upright in the points' frame.

    `margin` enlarges every half extent (metres). Each box first keeps only the points inside its
    bounding circle, so the cost is N * M cheap comparisons plus work on nearby points."""
    points_xyz = np.asarray(points_xyz, dtype=np.float64)[:, :3]
    boxes = np.asarray(boxes, dtype=np.float64)
    inside = np.zeros((len(points_xyz), len(boxes)), dtype=bool)
    for m, box in enumerate(boxes):
        half = box[3:6] / 2.0 + margin
        d = points_xyz - box[:3]
        near = np.flatnonzero((np.abs(d[:, 2]) <= half[2]) &
                              (d[:, 0] ** 2 + d[:, 1] ** 2 <= half[0] ** 2 + half[1] ** 2))
        c, s = np.cos(box[6]), np.sin(box[6])
        local_x = d[near, 0] * c + d[near, 1] * s
        local_y = -d[near, 0] * s + d[near, 1] * c
        inside[near, m] = (np.abs(local_x) <= half[0]) & (np.abs(local_y) <= half[1])
    return inside


def count_points_in_boxes(points_xyz: np.ndarray, boxes: np.ndarray, margin: float = 0.0) -> np.ndarray:
    """(M,) int64 number of points inside each box (a point in two boxes counts for both)."""
    return points_in_boxes(points_xyz, boxes, margin).sum(axis=0).astype(np.int64)


def invert_pose(pose: np.ndarray) -> np.ndarray:
    """Inverse of a 4x4 rigid transform, computed as [R.T, -R.T t] (exact for rigid transforms)."""
    pose = np.asarray(pose, dtype=np.float64)
    out = np.eye(4)
    out[:3, :3] = pose[:3, :3].T
    out[:3, 3] = -pose[:3, :3].T @ pose[:3, 3]
    return out


def transform_points(points: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """(N, C) points with xyz moved by the 4x4 transform; other channels kept; dtype kept."""
    transform = np.asarray(transform, dtype=np.float64)
    out = np.array(points, copy=True)
    xyz = np.asarray(points[:, :3], dtype=np.float64)
    out[:, :3] = xyz @ transform[:3, :3].T + transform[:3, 3]
    return out
