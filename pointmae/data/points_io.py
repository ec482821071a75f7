"""Raw point files: flat binary .bin with a declared layout, and the non-finite-point policy that
every reader shares."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from pointmae.data.errors import DataError, require_file

NONFINITE_POLICIES = ("error", "drop")


def read_bin_points(path, num_channels: int, dtype=np.float32) -> np.ndarray:
    """(N, num_channels) from a headerless little-endian binary file of records (KITTI velodyne,
    nuScenes .pcd.bin, mmdet3d Waymo .bin). A size that is not a multiple of the record size means a
    truncated or wrongly declared file: that is an error, not something to trim."""
    path = require_file(path)
    dtype = np.dtype(dtype).newbyteorder("<")
    stride = dtype.itemsize * num_channels
    size = path.stat().st_size
    if size % stride:
        raise DataError(path, f"size {size} bytes is not a multiple of the point stride {stride} "
                              f"({num_channels} x {dtype.name}); wrong layout or truncated file")
    data = np.fromfile(path, dtype=dtype).reshape(-1, num_channels)
    return data.astype(np.float32, copy=False)


def handle_nonfinite(points: np.ndarray, path, policy: str = "error", meta: dict | None = None) -> np.ndarray:
    """Apply the NaN/Inf policy to (N, C) points read from `path`.

    "error": raise a DataError naming the file and the first bad row.
    "drop":  remove the rows, record the count in meta["dropped_nonfinite"] and warn, so nothing
             disappears without being counted."""
    if policy not in NONFINITE_POLICIES:
        raise ValueError(f"nonfinite policy must be one of {NONFINITE_POLICIES}; got {policy!r}")
    finite = np.isfinite(points).all(axis=1)
    if finite.all():
        if meta is not None:
            meta.setdefault("dropped_nonfinite", 0)
        return points
    bad = int((~finite).sum())
    if policy == "error":
        first = int(np.flatnonzero(~finite)[0])
        raise DataError(path, f"{bad} point(s) with NaN/Inf values (first at point index {first}: "
                              f"{points[first].tolist()}); pass nonfinite='drop' to drop and count them")
    warnings.warn(f"{path}: dropped {bad} point(s) with NaN/Inf values", stacklevel=2)
    if meta is not None:
        meta["dropped_nonfinite"] = meta.get("dropped_nonfinite", 0) + bad
    return points[finite]


def write_bin_points(path, points: np.ndarray) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    np.ascontiguousarray(points, dtype="<f4").tofile(path)
