"""KITTI 3D object detection: velodyne/, label_2/, calib/, ImageSets/.

Formats (Geiger et al., "Are we ready for autonomous driving?", CVPR 2012, and the object
development kit's readme.txt):
* velodyne/XXXXXX.bin: float32 records (x, y, z, reflectance) in the Velodyne frame, which already
  has pointmae's axes (x forward, y left, z up).
* label_2/XXXXXX.txt: one object per line, 15 values (16 with a detection score):
  type, truncated [0..1], occluded {0,1,2,3}, alpha [-pi..pi], bbox left top right bottom (pixels),
  dimensions height width length (m), location x y z (m, rectified camera frame, the BOTTOM centre of
  the box), rotation_y [-pi..pi] (about the camera's y axis, which points down; ry = 0 faces camera +x).
* calib/XXXXXX.txt: "key: values" lines. P0..P3 (3x4 projections of the rectified cameras), R0_rect
  (3x3), Tr_velo_to_cam (3x4), Tr_imu_to_velo (3x4). A rectified-camera point is
  R0_rect @ Tr_velo_to_cam @ [x_velo, 1].

Camera label <-> LiDAR box (both exact inverses of each other; tested both ways)
* centre: the label's bottom centre moved up by h/2 along the camera's -y (the box is upright in the
  camera frame, where it was annotated), then through inv(R0_rect @ Tr_velo_to_cam).
* heading: in a camera frame re-labelled to LiDAR-like axes (x' = z_cam, y' = -x_cam, z' = -y_cam)
  the forward axis (cos ry, 0, -sin ry) has yaw -(ry + pi/2); the LiDAR heading is the exact inverse
  of `rotate_heading` through that rotation (see boxes.py), so the calibration's small tilt is
  honoured instead of ignored.
* dims: (dx, dy, dz) = (length, width, height).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pointmae.data.boxes import count_points_in_boxes, rotate_heading, unrotate_heading, wrap_angle
from pointmae.data.errors import DataError, require_file
from pointmae.data.frame import Frame
from pointmae.data.points_io import handle_nonfinite, read_bin_points

# KITTI's colour camera images are 1224..1242 x 370..376; the image files are not always present,
# so the field-of-view filter takes the size as an argument with the most common size as default.
DEFAULT_IMAGE_SIZE = (1242, 375)   # (width, height)
CLASSES = ("Car", "Van", "Truck", "Pedestrian", "Person_sitting", "Cyclist", "Tram", "Misc")

# Camera axes -> LiDAR-like axes (x' = z_cam, y' = -x_cam, z' = -y_cam).
_CAMERA_TO_LIDAR_AXES = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])

# KITTI object benchmark difficulty (devkit readme): min 2D box height (px), max occlusion, max truncation.
DIFFICULTY_RULES = ((40.0, 0, 0.15), (25.0, 1, 0.30), (25.0, 2, 0.50))   # easy=0, moderate=1, hard=2


# ------------------------------------------------------------------------------------ calibration
@dataclass
class KittiCalibration:
    P2: np.ndarray                 # (3, 4) left colour camera projection (rectified)
    R0_rect: np.ndarray            # (3, 3)
    Tr_velo_to_cam: np.ndarray     # (3, 4)
    extra: dict = field(default_factory=dict)   # P0, P1, P3, Tr_imu_to_velo, ... as read

    @property
    def velo_to_rect(self) -> np.ndarray:
        """4x4: Velodyne -> rectified camera."""
        r0 = np.eye(4)
        r0[:3, :3] = self.R0_rect
        tr = np.eye(4)
        tr[:3, :] = self.Tr_velo_to_cam
        return r0 @ tr

    @property
    def rect_to_velo(self) -> np.ndarray:
        return np.linalg.inv(self.velo_to_rect)

    def lidar_to_rect(self, xyz: np.ndarray) -> np.ndarray:
        t = self.velo_to_rect
        return np.asarray(xyz, np.float64) @ t[:3, :3].T + t[:3, 3]

    def rect_to_lidar(self, xyz: np.ndarray) -> np.ndarray:
        t = self.velo_to_rect
        return np.linalg.solve(t[:3, :3], (np.asarray(xyz, np.float64) - t[:3, 3]).T).T

    def project_rect(self, xyz_rect: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 2) pixel coordinates in image 2 and (N,) depth for rectified-camera points."""
        homo = np.c_[xyz_rect, np.ones(len(xyz_rect))] @ self.P2.T
        depth = homo[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = homo[:, :2] / depth[:, None]
        return uv, depth


_CALIB_SHAPES = {"P0": (3, 4), "P1": (3, 4), "P2": (3, 4), "P3": (3, 4), "R0_rect": (3, 3),
                 "R_rect": (3, 3), "Tr_velo_to_cam": (3, 4), "Tr_velo_cam": (3, 4),
                 "Tr_imu_to_velo": (3, 4), "Tr_imu_velo": (3, 4), "Tr_cam_to_road": (3, 4)}


def read_calibration(path) -> KittiCalibration:
    path = require_file(path)
    values: dict[str, np.ndarray] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        if ":" not in line:
            raise DataError(path, f"malformed calibration line (expected 'KEY: numbers'): {line!r}", number)
        key, _, rest = line.partition(":")
        key = key.strip()
        try:
            numbers = np.array([float(v) for v in rest.split()], dtype=np.float64)
        except ValueError:
            raise DataError(path, f"non-numeric value in calibration entry {key!r}: {rest.strip()!r}",
                            number) from None
        shape = _CALIB_SHAPES.get(key)
        if shape is not None:
            if numbers.size != shape[0] * shape[1]:
                raise DataError(path, f"{key} has {numbers.size} values, expected {shape[0] * shape[1]}",
                                number)
            numbers = numbers.reshape(shape)
        if not np.isfinite(numbers).all():
            raise DataError(path, f"{key} contains NaN/Inf", number)
        values[key] = numbers
    # Older files spell the keys R_rect / Tr_velo_cam.
    r0 = values.get("R0_rect", values.get("R_rect"))
    tr = values.get("Tr_velo_to_cam", values.get("Tr_velo_cam"))
    missing = [name for name, v in (("P2", values.get("P2")), ("R0_rect", r0), ("Tr_velo_to_cam", tr))
               if v is None]
    if missing:
        raise DataError(path, f"calibration is missing {', '.join(missing)}")
    extra = {k: v for k, v in values.items() if k not in ("P2", "R0_rect", "R_rect", "Tr_velo_to_cam",
                                                           "Tr_velo_cam")}
    return KittiCalibration(P2=values["P2"], R0_rect=r0, Tr_velo_to_cam=tr, extra=extra)


def write_calibration(path, calib: KittiCalibration) -> None:
    def fmt(m):
        return " ".join(f"{v:.12e}" for v in np.asarray(m, dtype=np.float64).reshape(-1))
    entries = {"P0": calib.extra.get("P0", calib.P2), "P1": calib.extra.get("P1", calib.P2),
               "P2": calib.P2, "P3": calib.extra.get("P3", calib.P2), "R0_rect": calib.R0_rect,
               "Tr_velo_to_cam": calib.Tr_velo_to_cam,
               "Tr_imu_to_velo": calib.extra.get("Tr_imu_to_velo", np.eye(4)[:3])}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("".join(f"{k}: {fmt(v)}\n" for k, v in entries.items()))


# ----------------------------------------------------------------------------------------- labels
@dataclass
class KittiObjects:
    """The parsed label_2 file, one entry per line (DontCare included), camera convention."""
    names: np.ndarray        # (M,) str
    truncated: np.ndarray    # (M,) float
    occluded: np.ndarray     # (M,) int
    alpha: np.ndarray        # (M,)
    bbox_2d: np.ndarray      # (M, 4) left, top, right, bottom
    dims_hwl: np.ndarray     # (M, 3) height, width, length
    location: np.ndarray     # (M, 3) bottom centre, rectified camera frame
    rotation_y: np.ndarray   # (M,)
    score: np.ndarray        # (M,) 1.0 when the file has no score column
    lines: np.ndarray        # (M,) 1-based line numbers in the file

    def __len__(self):
        return len(self.names)


def read_labels(path) -> KittiObjects:
    path = require_file(path)
    rows, names, numbers_at = [], [], []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) not in (15, 16):
            raise DataError(path, f"label line has {len(parts)} fields, expected 15 (or 16 with a "
                                  f"score): type truncated occluded alpha bbox(4) h w l x y z ry", number)
        try:
            values = [float(v) for v in parts[1:]]
        except ValueError as exc:
            raise DataError(path, f"non-numeric label field ({exc})", number) from None
        if not np.isfinite(values).all():
            raise DataError(path, "label line contains NaN/Inf", number)
        names.append(parts[0])
        rows.append(values + [1.0] * (15 - len(values)))
        numbers_at.append(number)
    a = np.array(rows, dtype=np.float64).reshape(-1, 15)
    return KittiObjects(names=np.array(names, dtype=str), truncated=a[:, 0], occluded=a[:, 1].astype(np.int64),
                        alpha=a[:, 2], bbox_2d=a[:, 3:7], dims_hwl=a[:, 7:10], location=a[:, 10:13],
                        rotation_y=a[:, 13], score=a[:, 14], lines=np.array(numbers_at, dtype=np.int64))


def write_labels(path, objects: KittiObjects, with_score: bool = False, decimals: int = 4) -> None:
    """KITTI label lines. KITTI's own files use 2 decimals; 4 keep synthetic boxes to 0.1 mm."""
    f = f"{{:.{decimals}f}}"
    lines = []
    for i in range(len(objects)):
        fields = [objects.names[i], f"{objects.truncated[i]:.2f}", str(int(objects.occluded[i])),
                  f.format(objects.alpha[i])]
        fields += [f"{v:.2f}" for v in objects.bbox_2d[i]]
        fields += [f.format(v) for v in objects.dims_hwl[i]]
        fields += [f.format(v) for v in objects.location[i]]
        fields.append(f.format(objects.rotation_y[i]))
        if with_score:
            fields.append(f"{objects.score[i]:.4f}")
        lines.append(" ".join(fields))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("".join(line + "\n" for line in lines))


# ------------------------------------------------------------------------------ box conversions
def camera_to_lidar_boxes(location: np.ndarray, dims_hwl: np.ndarray, rotation_y: np.ndarray,
                          calib: KittiCalibration) -> np.ndarray:
    """KITTI label boxes (camera convention) -> (M, 7) LiDAR boxes in pointmae's convention."""
    location = np.asarray(location, np.float64).reshape(-1, 3)
    dims_hwl = np.asarray(dims_hwl, np.float64).reshape(-1, 3)
    h, w, l = dims_hwl[:, 0], dims_hwl[:, 1], dims_hwl[:, 2]
    centre_rect = location - np.stack([np.zeros_like(h), h / 2.0, np.zeros_like(h)], axis=1)
    centre = calib.rect_to_lidar(centre_rect)
    rotation = _CAMERA_TO_LIDAR_AXES @ calib.velo_to_rect[:3, :3]
    heading = unrotate_heading(wrap_angle(-np.asarray(rotation_y, np.float64) - np.pi / 2), rotation)
    return np.c_[centre, l, w, h, heading]


def lidar_to_camera_boxes(boxes: np.ndarray, calib: KittiCalibration):
    """(M, 7) LiDAR boxes -> (location (M, 3) bottom centre, dims_hwl (M, 3), rotation_y (M,))."""
    boxes = np.atleast_2d(np.asarray(boxes, np.float64))
    h = boxes[:, 5]
    centre_rect = calib.lidar_to_rect(boxes[:, :3])
    location = centre_rect + np.stack([np.zeros_like(h), h / 2.0, np.zeros_like(h)], axis=1)
    rotation = _CAMERA_TO_LIDAR_AXES @ calib.velo_to_rect[:3, :3]
    rotation_y = wrap_angle(-rotate_heading(boxes[:, 6], rotation) - np.pi / 2)
    return location, np.stack([h, boxes[:, 4], boxes[:, 3]], axis=1), rotation_y


def observation_angle(location: np.ndarray, rotation_y: np.ndarray) -> np.ndarray:
    """KITTI alpha: rotation_y minus the viewing ray's angle arctan2(x, z) in the camera frame."""
    location = np.asarray(location, np.float64).reshape(-1, 3)
    return wrap_angle(np.asarray(rotation_y) - np.arctan2(location[:, 0], location[:, 2]))


def difficulty(bbox_2d: np.ndarray, occluded: np.ndarray, truncated: np.ndarray) -> np.ndarray:
    """(M,) int: 0 easy, 1 moderate, 2 hard, -1 outside every level (KITTI devkit rules)."""
    height = np.asarray(bbox_2d, np.float64).reshape(-1, 4)
    height = height[:, 3] - height[:, 1]
    level = np.full(len(height), -1, dtype=np.int64)
    for index in reversed(range(len(DIFFICULTY_RULES))):   # hardest first, easier ones overwrite
        min_height, max_occ, max_trunc = DIFFICULTY_RULES[index]
        ok = (height >= min_height) & (np.asarray(occluded) <= max_occ) & (np.asarray(truncated) <= max_trunc)
        level[ok] = index
    return level


def points_in_camera_fov(points_xyz: np.ndarray, calib: KittiCalibration,
                         image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE) -> np.ndarray:
    """(N,) bool: the point projects inside image 2 and lies in front of the camera."""
    uv, depth = calib.project_rect(calib.lidar_to_rect(points_xyz))
    width, height = image_size
    return (depth > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < width) & (uv[:, 1] >= 0) & (uv[:, 1] < height)


# ----------------------------------------------------------------------------------------- reader
class KittiObjectDataset:
    """Frames of a KITTI-layout root (the real benchmark or the synthetic world's output).

    root/ImageSets/{split}.txt lists frame ids; root/{training|testing}/{velodyne,label_2,calib}/.
    Without an ImageSets file (or with split=None) every velodyne file is a frame.

    Each Frame: points (N, 4) x, y, z, intensity (reflectance 0..1); boxes (M, 7) LiDAR frame; names;
    box_meta: truncated, occluded, alpha, bbox_2d, difficulty, num_points, line (label file line).
    DontCare regions are not boxes: they are kept in meta["dontcare_bbox_2d"] (and counted).
    Real KITTI object frames are independent snapshots without poses or timestamps: pose is the
    identity and timestamp 0. Layouts written by the synthetic world carry sequences/*.json, from
    which pose, timestamp, sequence id, track ids and velocities ((M, 9) boxes) are filled in.
    """

    def __init__(self, root, split: str | None = "train", subset: str = "training", fov_only: bool = False,
                 image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE, nonfinite: str = "error",
                 with_labels: bool | None = None):
        self.root = Path(root)
        self.subset_dir = self.root / subset
        if not self.subset_dir.is_dir():
            raise DataError(self.subset_dir, "KITTI subset folder not found")
        self.fov_only = fov_only
        self.image_size = image_size
        self.nonfinite = nonfinite
        self.with_labels = (subset == "training") if with_labels is None else with_labels
        split_file = self.root / "ImageSets" / f"{split}.txt" if split else None
        if split_file is not None and split_file.is_file():
            self.frame_ids = [line.strip() for line in split_file.read_text().splitlines() if line.strip()]
        elif split_file is not None and split not in ("train", "all"):
            raise DataError(split_file, f"split file for {split!r} not found")
        else:
            self.frame_ids = sorted(p.stem for p in (self.subset_dir / "velodyne").glob("*.bin"))
        if not self.frame_ids:
            raise DataError(split_file if split_file is not None and split_file.is_file()
                            else self.subset_dir / "velodyne", "no frames listed / found")
        # Sequence metadata written by the synthetic world (poses, timestamps, tracks), if present.
        self._sequence_index_path = self.root / "sequences" / "index.json"
        self._sequence_index = None
        self._sequences: dict[str, dict] = {}

    def __len__(self):
        return len(self.frame_ids)

    def path(self, kind: str, frame_id: str) -> Path:
        suffix = ".bin" if kind == "velodyne" else ".txt"
        return self.subset_dir / kind / f"{frame_id}{suffix}"

    def __getitem__(self, index: int) -> Frame:
        frame_id = self.frame_ids[index]
        meta = {"root": str(self.root), "dropped_nonfinite": 0}
        velodyne = self.path("velodyne", frame_id)
        points = handle_nonfinite(read_bin_points(velodyne, 4), velodyne, self.nonfinite, meta)
        calib = read_calibration(self.path("calib", frame_id))
        meta["calib"] = calib
        if self.fov_only:
            keep = points_in_camera_fov(points[:, :3], calib, self.image_size)
            meta["outside_fov"] = int((~keep).sum())
            points = points[keep]
        boxes, names, box_meta = np.zeros((0, 7)), np.zeros(0, dtype=str), {}
        if self.with_labels:
            labels = read_labels(self.path("label_2", frame_id))
            care = labels.names != "DontCare"
            meta["dontcare_bbox_2d"] = labels.bbox_2d[~care]
            boxes = camera_to_lidar_boxes(labels.location[care], labels.dims_hwl[care],
                                          labels.rotation_y[care], calib)
            names = labels.names[care]
            box_meta = {"truncated": labels.truncated[care], "occluded": labels.occluded[care],
                        "alpha": labels.alpha[care], "bbox_2d": labels.bbox_2d[care],
                        "difficulty": difficulty(labels.bbox_2d[care], labels.occluded[care],
                                                 labels.truncated[care]),
                        "num_points": count_points_in_boxes(points[:, :3], boxes),
                        "line": labels.lines[care]}
        frame = Frame(points=points, channels=("x", "y", "z", "intensity"), timestamp=0.0,
                      frame_id=frame_id, boxes=boxes, names=names, box_meta=box_meta, meta=meta)
        if self._sequence_index_path.is_file():
            self._attach_sequence_metadata(frame)
        return frame

    def has_previous(self, index: int, gap: int = 1) -> bool:
        """Whether frame index - gap is an earlier frame of the same sequence, from the sequence
        metadata alone (no point cloud or label file is read). Real KITTI object frames are
        independent snapshots: always False there."""
        if index < gap or not self._sequence_index_path.is_file():
            return False
        here, before = self._sequence_entry(self.frame_ids[index]), self._sequence_entry(self.frame_ids[index - gap])
        if here is None or before is None:
            return False
        (record, i), (record_before, j) = here, before
        return (record_before["sequence_id"] == record["sequence_id"]
                and float(record_before["timestamps"][j]) < float(record["timestamps"][i]))

    def previous(self, index: int, gap: int = 1) -> Frame | None:
        """The frame `gap` frames earlier in the same sequence (synthetic layouts with sequences/), else None."""
        return self[index - gap] if self.has_previous(index, gap) else None

    def _sequence_entry(self, frame_id: str) -> tuple[dict, int] | None:
        """(the sequence record of sequences/<name>.json, the frame's position in it), or None for a
        frame the sequence index does not list."""
        import json
        if self._sequence_index is None:
            self._sequence_index = json.loads(self._sequence_index_path.read_text())
        entry = self._sequence_index.get(frame_id)
        if entry is None:
            return None
        name, i = entry
        if name not in self._sequences:
            path = self._sequence_index_path.parent / name
            self._sequences[name] = json.loads(require_file(path).read_text())
        return self._sequences[name], i

    def _attach_sequence_metadata(self, frame: Frame) -> None:
        """Pose, timestamp, sequence id, and (for labelled frames) track ids and velocities from
        sequences/*.json (the synthetic world's metadata; see synthetic/kitti_writer.py)."""
        entry = self._sequence_entry(frame.frame_id)
        if entry is None:
            return
        record, i = entry
        frame.pose = np.array(record["poses"][i], dtype=np.float64).reshape(4, 4)
        frame.timestamp = float(record["timestamps"][i])
        frame.sequence_id = record["sequence_id"]
        if not self.with_labels:
            return
        track_ids = np.array(record["label_track_ids"][i], dtype=np.int64)
        if len(track_ids) != len(frame.boxes):
            raise DataError(self._sequence_index_path.parent / self._sequence_index[frame.frame_id][0],
                            f"frame {frame.frame_id}: {len(track_ids)} track ids for {len(frame.boxes)} labels")
        velocity_world = np.array([record["tracks"][str(t)]["boxes_world"][record["tracks"][str(t)]["frames"]
                                   .index(frame.frame_id)][7:9] for t in track_ids]).reshape(-1, 2)
        # Velocities into the sensor axes (the pose is yaw-only for synthetic frames).
        velocity = np.linalg.solve(frame.pose[:2, :2], velocity_world.T).T
        frame.boxes = np.c_[frame.boxes, velocity]
        frame.box_meta["track_id"] = track_ids
