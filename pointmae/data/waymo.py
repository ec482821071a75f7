"""Waymo Open Dataset on the training side, without TensorFlow.

Three inputs:
1. Converted per-frame files written by tools/convert_waymo.py (run in its own environment with
   waymo-open-dataset; see docs/waymo.md). Format "pointmae-waymo-v1", one .npz per frame:
     points       (N, 7) float32: x, y, z (vehicle frame), intensity, elongation, nlz (1 = inside a
                  no-label zone, 0 outside), return_index (0 first, 1 second return)
     laser        (N,) uint8 laser name (1 TOP, 2 FRONT, 3 SIDE_LEFT, 4 SIDE_RIGHT, 5 REAR)
     boxes        (M, 9) float64: center x, y, z, length, width, height, heading, speed_x, speed_y
     names        (M,) str: Vehicle, Pedestrian, Sign, Cyclist, Unknown
     ids          (M,) str: track ids
     num_lidar_points (M,) int, difficulty (M,) int (1 LEVEL_1, 2 LEVEL_2; see below),
     tracking_difficulty (M,) int
     pose (4, 4) vehicle -> world; timestamp_micros int; context_name str; frame_index int
2. The raw tfrecords' labels, pose, context and timestamp, decoded with our own TFRecord and
   protobuf wire parser (tfrecord.py) following waymo_open_dataset/dataset.proto and label.proto.
   (Range images need the official library's decompression and projection: that is the converter.)
3. OpenPCDet's extracted .npy (N, 6): x, y, z, intensity, elongation, NLZ flag (-1 outside any
   no-label zone), and mmdet3d's "kitti_format" .bin (N, 6): x, y, z, intensity, elongation, timestamp.

Waymo's vehicle frame has pointmae's axes (x forward, y left, z up) and boxes are already centre +
(length, width, height) + heading from +x counter-clockwise, so no conversion is needed.
Difficulty: the label's detection_difficulty_level; when it is 0 (unset), Waymo's evaluation rule
applies: LEVEL_2 if the box has <= 5 LiDAR points, else LEVEL_1.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pointmae.data.errors import DataError, require_file
from pointmae.data.frame import Frame
from pointmae.data.points_io import handle_nonfinite, read_bin_points
from pointmae.data.tfrecord import as_double, parse_message, read_tfrecords, repeated_doubles, signed64

FORMAT = "pointmae-waymo-v1"
CHANNELS = ("x", "y", "z", "intensity", "elongation", "nlz", "return_index")
LABEL_TYPES = {0: "Unknown", 1: "Vehicle", 2: "Pedestrian", 3: "Sign", 4: "Cyclist"}


def difficulty_with_default(level: np.ndarray, num_points: np.ndarray) -> np.ndarray:
    level = np.asarray(level, np.int64).copy()
    unset = level == 0
    level[unset] = np.where(np.asarray(num_points)[unset] <= 5, 2, 1)
    return level


# ---------------------------------------------------------------------------- raw tfrecords
def _label(buf: bytes) -> dict:
    m = parse_message(buf)
    box = parse_message(m[1][0]) if 1 in m else {}
    meta = parse_message(m[2][0]) if 2 in m else {}
    get = lambda d, k: as_double(d[k][-1]) if k in d else 0.0  # noqa: E731
    return {"box": [get(box, 1), get(box, 2), get(box, 3), get(box, 5), get(box, 4), get(box, 6), get(box, 7),
                    get(meta, 1), get(meta, 2)],
            "type": m.get(3, [0])[-1], "id": m[4][-1].decode() if 4 in m else "",
            "difficulty": m.get(5, [0])[-1], "tracking_difficulty": m.get(6, [0])[-1],
            "num_lidar_points": m.get(7, [0])[-1]}


def frame_from_proto(buf: bytes, source=None) -> Frame:
    """A Frame with the labels, pose, timestamp and context of a serialized waymo Frame proto.
    Its points are empty (the converter turns range images into points)."""
    try:
        m = parse_message(buf)
        context = parse_message(m[1][0]) if 1 in m else {}
        name = context[1][-1].decode() if 1 in context else ""
        timestamp = signed64(m[2][-1]) if 2 in m else 0
        pose = np.eye(4)
        if 3 in m:
            values = repeated_doubles(parse_message(m[3][0]).get(1, []))
            if len(values) != 16:
                raise ValueError(f"pose has {len(values)} values, expected 16")
            pose = np.array(values).reshape(4, 4)
        labels = [_label(b) for b in m.get(6, [])]
        num_lasers_with_data = sum(1 for b in m.get(5, []) if len(parse_message(b)) > 1)
    except (ValueError, IndexError, UnicodeDecodeError) as exc:
        raise DataError(source, f"malformed waymo Frame proto ({exc})") from None
    boxes = np.array([lab["box"] for lab in labels], dtype=np.float64).reshape(-1, 9)
    num_points = np.array([lab["num_lidar_points"] for lab in labels], dtype=np.int64)
    box_meta = {"num_points": num_points, "id": np.array([lab["id"] for lab in labels], dtype=str),
                "difficulty": difficulty_with_default([lab["difficulty"] for lab in labels], num_points),
                "tracking_difficulty": np.array([lab["tracking_difficulty"] for lab in labels], np.int64)}
    return Frame(points=np.zeros((0, len(CHANNELS)), np.float32), channels=CHANNELS, pose=pose,
                 timestamp=timestamp / 1e6, frame_id=f"{name}_{timestamp}", sequence_id=name, boxes=boxes,
                 names=np.array([LABEL_TYPES.get(lab["type"], "Unknown") for lab in labels], dtype=str),
                 box_meta=box_meta, meta={"timestamp_micros": timestamp, "context_name": name,
                                          "lasers_with_data": num_lasers_with_data, "source": str(source)})


def read_tfrecord_frames(path) -> list[Frame]:
    """Label-only Frames of every record of a waymo tfrecord (CRC-checked)."""
    return [frame_from_proto(record, path) for record in read_tfrecords(path)]


# --------------------------------------------------------------------------- converted frames
def read_converted_frame(path, drop_nlz: bool = False, nonfinite: str = "error") -> Frame:
    path = require_file(path)
    try:
        data = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise DataError(path, f"cannot read converted waymo frame ({exc})") from None
    with data:
        fmt = str(data["format"]) if "format" in data else ""
        if fmt != FORMAT:
            raise DataError(path, f"format {fmt!r}, expected {FORMAT!r} (written by tools/convert_waymo.py)")
        missing = [k for k in ("points", "boxes", "names", "pose", "timestamp_micros", "context_name") if k not in data]
        if missing:
            raise DataError(path, f"missing keys {missing}")
        points = data["points"].astype(np.float32)
        if points.ndim != 2 or points.shape[1] != len(CHANNELS):
            raise DataError(path, f"points must be (N, {len(CHANNELS)}); got {points.shape}")
        meta = {"path": str(path), "dropped_nonfinite": 0, "context_name": str(data["context_name"]),
                "timestamp_micros": int(data["timestamp_micros"])}
        if "laser" in data:
            meta["laser"] = data["laser"]
        points = handle_nonfinite(points, path, nonfinite, meta)
        if drop_nlz:
            keep = points[:, CHANNELS.index("nlz")] < 0.5
            meta["dropped_nlz"] = int((~keep).sum())
            points = points[keep]
        boxes = data["boxes"].astype(np.float64).reshape(-1, 9)
        num_points = data["num_lidar_points"] if "num_lidar_points" in data else -np.ones(len(boxes), np.int64)
        box_meta = {"num_points": num_points.astype(np.int64),
                    "difficulty": difficulty_with_default(data["difficulty"], num_points) if "difficulty" in data
                    else np.zeros(len(boxes), np.int64)}
        if "ids" in data:
            box_meta["id"] = data["ids"].astype(str)
        frame_index = int(data["frame_index"]) if "frame_index" in data else -1
        return Frame(points=points, channels=CHANNELS, pose=data["pose"], timestamp=int(data["timestamp_micros"]) / 1e6,
                     frame_id=f"{meta['context_name']}_{frame_index:04d}", sequence_id=meta["context_name"],
                     boxes=boxes, names=data["names"].astype(str), box_meta=box_meta, meta=meta)


class WaymoConvertedDataset:
    """Every converted frame (.npz) below `root`, sorted (context folder, then frame index)."""

    def __init__(self, root, drop_nlz: bool = False, nonfinite: str = "error"):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(self.root, "converted waymo folder not found")
        self.files = sorted(self.root.rglob("*.npz"))
        if not self.files:
            raise DataError(self.root, "no converted frames (*.npz); run tools/convert_waymo.py first")
        self.drop_nlz, self.nonfinite = drop_nlz, nonfinite

    def __len__(self):
        return len(self.files)

    def __getitem__(self, index: int) -> Frame:
        return read_converted_frame(self.files[index], self.drop_nlz, self.nonfinite)

    def has_previous(self, index: int, gap: int = 1) -> bool:
        return index >= gap and self.files[index - gap].parent == self.files[index].parent

    def previous(self, index: int, gap: int = 1) -> Frame | None:
        """The frame `gap` frames earlier in the same segment folder (for temporal models), or None."""
        return self[index - gap] if self.has_previous(index, gap) else None


# ------------------------------------------------------------------------ other extractions
def read_openpcdet_npy(path, drop_nlz: bool = False, nonfinite: str = "error") -> Frame:
    """OpenPCDet's extracted Waymo frame: (N, 6) x, y, z, intensity, elongation, NLZ (-1 = outside)."""
    path = require_file(path)
    points = np.load(path, allow_pickle=False)
    if points.ndim != 2 or points.shape[1] != 6:
        raise DataError(path, f"expected (N, 6) x, y, z, intensity, elongation, NLZ; got {points.shape}")
    meta = {"path": str(path), "dropped_nonfinite": 0}
    points = handle_nonfinite(points.astype(np.float32), path, nonfinite, meta)
    nlz = (points[:, 5] != -1).astype(np.float32)       # OpenPCDet stores -1 outside no-label zones
    if drop_nlz:
        meta["dropped_nlz"] = int(nlz.sum())
        points, nlz = points[nlz == 0], nlz[nlz == 0]
    return Frame(points=np.c_[points[:, :5], nlz], channels=CHANNELS[:6], frame_id=path.stem, meta=meta)


def read_mmdet3d_waymo_bin(path, nonfinite: str = "error") -> Frame:
    """mmdet3d's kitti_format Waymo velodyne .bin: (N, 6) x, y, z, intensity, elongation, timestamp (us).
    The timestamp column is float32 in these files, so it only resolves ~1e8 us (a float32 has 24
    mantissa bits): good for telling frames apart, not for motion compensation."""
    meta = {"path": str(path), "dropped_nonfinite": 0}
    points = handle_nonfinite(read_bin_points(path, 6), path, nonfinite, meta)
    timestamps = np.unique(points[:, 5])
    meta["timestamp_micros"] = float(timestamps[0]) if len(timestamps) else 0.0
    return Frame(points=points[:, :5], channels=CHANNELS[:5], timestamp=meta["timestamp_micros"] / 1e6,
                 frame_id=Path(path).stem, meta=meta)
