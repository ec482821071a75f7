"""The one frame type every reader and the synthetic world produce.

Coordinate convention (used everywhere in pointmae, documented once here)
-------------------------------------------------------------------------
* Points and boxes of a Frame live in the **sensor (LiDAR) frame**: right-handed, x forward, y left,
  z up, metres.  (KITTI's Velodyne frame and nuScenes' LIDAR_TOP frame after its fixed rotation are
  converted to this; Waymo's points are in the vehicle frame, which has the same axes.)
* A box is ``(x, y, z, dx, dy, dz, heading)`` (+ ``vx, vy`` where the dataset has velocities):
  ``(x, y, z)`` is the **geometric centre** (not the bottom centre), ``dx`` is the extent along the
  box's own forward axis (length), ``dy`` along its left axis (width), ``dz`` vertical (height), and
  ``heading`` is the yaw of the forward axis, counter-clockwise from +x seen from above (+z), radians.
  Velocities are the object's velocity in metres/second expressed in the sensor frame's axes.
* ``pose`` is the 4x4 rigid transform sensor -> world, so ``p_world = pose @ [p_sensor, 1]``.
* ``timestamp`` is in seconds (float64; Waymo/nuScenes microseconds are divided by 1e6).

Conversions from each dataset's own convention live next to its reader (kitti.py, nuscenes.py,
waymo.py) and are round-trip tested in tests/data.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

try:  # torch is a hard dependency of pointmae, but the data layer only needs it for .to_torch()
    import torch
except ImportError:  # pragma: no cover
    torch = None

# Well-known channel names. Readers use these spellings so that models can ask for channels by name.
XYZ = ("x", "y", "z")
INTENSITY = "intensity"     # dataset scale kept (KITTI 0..1, nuScenes 0..255, Waymo raw); see reader
ELONGATION = "elongation"   # Waymo pulse elongation
RING = "ring"               # laser (beam) index
TIME_LAG = "time_lag"       # seconds between this point's sweep and the frame's timestamp (>= 0)
NLZ = "nlz"                 # Waymo "no label zone" flag
RETURN_INDEX = "return_index"  # Waymo 0 = first return, 1 = second return

BOX_FIELDS = ("x", "y", "z", "dx", "dy", "dz", "heading")
BOX_FIELDS_WITH_VELOCITY = BOX_FIELDS + ("vx", "vy")


@dataclass
class Frame:
    """One LiDAR sweep (possibly several accumulated) with its labels.

    points:    (N, C) float32 numpy array or torch tensor, columns named by ``channels``.
    channels:  C channel names; the first three are always ("x", "y", "z").
    pose:      (4, 4) float64, sensor -> world.
    timestamp: seconds.
    frame_id / sequence_id: dataset identifiers (KITTI "000123"; nuScenes sample token; Waymo
               context name + frame index).
    boxes:     (M, 7) or (M, 9) float64 in the convention above.
    names:     (M,) class names (str).
    box_meta:  per-box arrays of length M, e.g. "num_points", "difficulty", "truncated",
               "occluded", "track_id".
    meta:      anything else (source paths, calibration, counts of dropped points).
    """

    points: Any
    channels: tuple[str, ...] = ("x", "y", "z", "intensity")
    pose: np.ndarray = field(default_factory=lambda: np.eye(4))
    timestamp: float = 0.0
    frame_id: str = ""
    sequence_id: str = ""
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 7)))
    names: np.ndarray = field(default_factory=lambda: np.zeros((0,), dtype="<U1"))
    box_meta: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.channels = tuple(self.channels)
        if tuple(self.channels[:3]) != XYZ:
            raise ValueError(f"Frame channels must start with x, y, z; got {self.channels}")
        if self.points.ndim != 2 or self.points.shape[1] != len(self.channels):
            raise ValueError(f"Frame points must be (N, {len(self.channels)}) for channels "
                             f"{self.channels}; got shape {tuple(self.points.shape)}")
        if isinstance(self.points, np.ndarray) and self.points.dtype != np.float32:
            self.points = self.points.astype(np.float32)
        self.pose = np.asarray(self.pose, dtype=np.float64)
        if self.pose.shape != (4, 4):
            raise ValueError(f"Frame pose must be 4x4; got {self.pose.shape}")
        self.boxes = np.asarray(self.boxes, dtype=np.float64)
        if self.boxes.ndim != 2:            # e.g. [] for "no boxes"
            self.boxes = self.boxes.reshape(-1, 7)
        if self.boxes.shape[1] not in (7, 9):
            raise ValueError(f"Frame boxes must be (M, 7) or (M, 9); got {self.boxes.shape}")
        self.names = np.asarray(self.names, dtype=str).reshape(-1)
        if len(self.names) != len(self.boxes):
            raise ValueError(f"{len(self.boxes)} boxes but {len(self.names)} names")
        for key, value in self.box_meta.items():
            if len(value) != len(self.boxes):
                raise ValueError(f"box_meta[{key!r}] has {len(value)} entries for {len(self.boxes)} boxes")

    # ---- access -------------------------------------------------------------------------------
    @property
    def num_points(self) -> int:
        return int(self.points.shape[0])

    @property
    def xyz(self):
        return self.points[:, :3]

    def channel(self, name: str):
        """Column ``name`` of the points, e.g. frame.channel("intensity")."""
        try:
            return self.points[:, self.channels.index(name)]
        except ValueError:
            raise KeyError(f"channel {name!r} not in {self.channels}") from None

    def select_boxes(self, keep) -> "Frame":
        """A frame with only the boxes where ``keep`` (bool mask or indices) holds."""
        keep = np.asarray(keep)
        return replace(self, boxes=self.boxes[keep], names=self.names[keep],
                       box_meta={k: np.asarray(v)[keep] for k, v in self.box_meta.items()})

    def select_points(self, keep) -> "Frame":
        return replace(self, points=self.points[keep])

    def scale_channels(self, scales: dict) -> "Frame":
        """A frame whose channels named in `scales` ({name: factor}, e.g. {"intensity": 1 / 255}) are
        multiplied by their factor; names the frame lacks are an error (a typo would silently do nothing)."""
        if all(float(f) == 1.0 for f in scales.values()):
            self._check_channel_names("channel_scales", scales)
            return self
        return self._map_channels("channel_scales", {name: (lambda c, f=np.float32(factor): c * f)
                                                     for name, factor in scales.items()})

    def tanh_channels(self, names) -> "Frame":
        """A frame whose channels in `names` go through tanh, squashing unbounded values into (-1, 1).
        OpenPCDet does this to Waymo's intensity (raw values reach ~900 while the median is ~0.1;
        OpenPCDet's WaymoDataset.get_lidar). Names the frame lacks are an error."""
        # A dict: each channel once, tanh(tanh(x)) is not meant.
        return self._map_channels("channel_tanh", {name: np.tanh for name in names})

    def _check_channel_names(self, option: str, names) -> None:
        unknown = [name for name in names if name not in self.channels]
        if unknown:
            raise KeyError(f"{option} names {unknown}, not among the frame's channels {self.channels}")

    def _map_channels(self, option: str, functions: dict) -> "Frame":
        """A frame whose channel `name` is replaced by functions[name](column), float32; `option`
        names the setting in the error for an unknown channel."""
        self._check_channel_names(option, functions)
        if not functions:
            return self
        points = np.array(self.to_numpy().points, dtype=np.float32, copy=True)
        for name, fn in functions.items():
            column = self.channels.index(name)
            points[:, column] = fn(points[:, column])
        return replace(self, points=points)

    def to_torch(self, device=None) -> "Frame":
        """The same frame with points as a float32 torch tensor (boxes stay numpy)."""
        points = self.points
        if not (torch is not None and isinstance(points, torch.Tensor)):
            points = torch.from_numpy(np.ascontiguousarray(points))
        return replace(self, points=points.to(device=device, dtype=torch.float32))

    def to_numpy(self) -> "Frame":
        points = self.points
        if torch is not None and isinstance(points, torch.Tensor):
            points = points.detach().cpu().numpy()
        return replace(self, points=np.asarray(points, dtype=np.float32))
