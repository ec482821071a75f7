"""Multi-sweep accumulation with ego-motion compensation and a time-lag channel.

Sparse single sweeps (nuScenes' 32 beams) are densified by stacking the previous sweeps, each moved
into the reference sweep's sensor frame through the world:

    p_ref = inv(pose_ref) @ pose_sweep @ p_sweep          (poses are sensor -> world)

and tagged with time_lag = t_ref - t_sweep (seconds, >= 0), so a model can tell old from new points
(Caesar et al., "nuScenes", CVPR 2020, sec. 4: 10 sweeps, time lag as an extra channel). Moving
objects leave trails; the time lag is what lets a model handle them.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from pointmae.data.boxes import invert_pose, transform_points
from pointmae.data.frame import TIME_LAG, Frame


@dataclass
class Sweep:
    points: np.ndarray      # (N, C) in its own sensor frame
    pose: np.ndarray        # (4, 4) sensor -> world at its timestamp
    timestamp: float        # seconds


def remove_close_points(points: np.ndarray, radius: float) -> tuple[np.ndarray, int]:
    """Drop points within `radius` metres (in xy) of the sensor: returns off the ego vehicle's own
    roof and body. Returns the kept points and how many were removed (to be counted, not lost)."""
    if radius <= 0:
        return points, 0
    close = (np.abs(points[:, 0]) < radius) & (np.abs(points[:, 1]) < radius)
    return points[~close], int(close.sum())


def accumulate_sweeps(reference: Sweep, previous: list[Sweep], close_radius: float = 0.0
                      ) -> tuple[np.ndarray, dict]:
    """Stack `reference` and `previous` sweeps in the reference sensor frame.

    Returns (N_total, C + 1) float32 points, the last column the time lag in seconds (0 for the
    reference sweep), and counts: {"points_per_sweep": [...], "removed_close": n}. Sweeps may come
    in any order; they are kept in the given order."""
    world_to_ref = invert_pose(reference.pose)
    out, per_sweep, removed = [], [], 0
    for sweep in [reference, *previous]:
        points, n_close = remove_close_points(np.asarray(sweep.points, np.float32), close_radius)
        removed += n_close
        moved = transform_points(points, world_to_ref @ np.asarray(sweep.pose, np.float64))
        lag = np.full((len(points), 1), reference.timestamp - sweep.timestamp, dtype=np.float32)
        out.append(np.concatenate([moved.astype(np.float32), lag], axis=1))
        per_sweep.append(len(points))
    return np.concatenate(out, axis=0), {"points_per_sweep": per_sweep, "removed_close": removed}


def accumulate_frames(reference: Frame, previous: list[Frame], close_radius: float = 0.0) -> Frame:
    """`accumulate_sweeps` on Frames: the reference frame's labels, points with a time_lag channel."""
    points, counts = accumulate_sweeps(Sweep(reference.to_numpy().points, reference.pose, reference.timestamp),
                                       [Sweep(f.to_numpy().points, f.pose, f.timestamp) for f in previous],
                                       close_radius)
    meta = dict(reference.meta, **counts)
    return replace(reference, points=points, channels=reference.channels + (TIME_LAG,), meta=meta)
