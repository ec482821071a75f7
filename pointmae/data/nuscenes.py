"""nuScenes LiDAR: mmdet3d-style info pickles, the devkit's JSON tables, and box conversions.

Conventions of the dataset (Caesar et al., CVPR 2020; nuScenes devkit schema, docs/schema_nuscenes.md):
* LIDAR_TOP .pcd.bin: float32 records x, y, z, intensity (0..255), ring index (0..31) in the
  LIDAR_TOP frame, whose axes are x RIGHT, y FORWARD, z up (see any lidar2ego rotation: lidar +y maps
  to ego +x). mmdet3d keeps boxes in that frame too. pointmae's sensor frame is x forward, y left, so
  the readers turn points, boxes and poses by the fixed -90 deg yaw NUSCENES_LIDAR_TO_SENSOR
  (p_sensor = [y, -x, z]); axes="nuscenes" keeps the raw frame. The exact inverse is in
  Frame.meta["nuscenes_lidar_to_sensor"] for writers of submission files.
* Poses: calibrated_sensor (sensor -> ego) and ego_pose (ego -> global) as translation + rotation
  quaternion [w, x, y, z].
* sample_annotation: global translation (box centre), size [w, l, h], rotation quaternion (yaw
  about +z from +x), num_lidar_pts; velocities are not stored: the devkit differentiates the centre
  over the previous/next annotation of the same instance (NuScenes.box_velocity).
* mmdet3d v1.1 infos (info_version 1.1; mmdet3d's tools/dataset_converters/update_infos_to_v2.py):
  data_list[i] with lidar_points {lidar_path, lidar2ego, num_pts_feats}, ego2global, timestamp (s),
  instances [{bbox_3d: [x, y, z, l, w, h, yaw] in the LiDAR frame with z the GRAVITY centre,
  bbox_label_3d, velocity [vx, vy] in the LiDAR frame, num_lidar_pts}], optional lidar_sweeps
  [{lidar_points {lidar_path, lidar2ego, ego2global}, timestamp}]. (The gravity-centre reading is
  checked on the real sample: counting points in the boxes reproduces num_lidar_pts.)
* mmdet3d v1.0 infos ("infos" list): lidar_path, timestamp (us), lidar2ego/ego2global translation +
  rotation quaternions, sweeps [{data_path, sensor2lidar_rotation, sensor2lidar_translation,
  timestamp}], gt_boxes (LiDAR frame, gravity centre, [l, w, h], yaw), gt_names, gt_velocity,
  num_lidar_pts.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np

from pointmae.data.boxes import invert_pose, transform_boxes, untransform_boxes
from pointmae.data.errors import DataError, require_file
from pointmae.data.frame import Frame
from pointmae.data.points_io import handle_nonfinite, read_bin_points
from pointmae.data.sweeps import Sweep, accumulate_sweeps

CHANNELS = ("x", "y", "z", "intensity", "ring")
# LIDAR_TOP (x right, y forward) -> pointmae sensor frame (x forward, y left): a -90 deg yaw.
NUSCENES_LIDAR_TO_SENSOR = np.array([[0.0, 1.0, 0.0, 0.0], [-1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0],
                                     [0.0, 0.0, 0.0, 1.0]])
AXES = ("pointmae", "nuscenes")


def axes_transform(axes: str) -> np.ndarray:
    """LIDAR_TOP frame -> the frame the readers give for `axes` (4x4): NUSCENES_LIDAR_TO_SENSOR or identity."""
    if axes not in AXES:
        raise ValueError(f"axes must be one of {AXES}; got {axes!r}")
    return NUSCENES_LIDAR_TO_SENSOR if axes == "pointmae" else np.eye(4)


def to_sensor_axes(points, boxes, pose, meta, axes: str):
    """Turn LIDAR_TOP-frame points/boxes/pose into pointmae axes (unless axes == "nuscenes")."""
    if axes not in AXES:
        raise ValueError(f"axes must be one of {AXES}; got {axes!r}")
    meta["nuscenes_lidar_to_sensor"] = NUSCENES_LIDAR_TO_SENSOR if axes == "pointmae" else np.eye(4)
    if axes == "nuscenes":
        return points, boxes, pose
    points = points.copy()
    points[:, 0], points[:, 1] = points[:, 1].copy(), -points[:, 0]
    return points, transform_boxes(boxes, NUSCENES_LIDAR_TO_SENSOR), pose @ invert_pose(NUSCENES_LIDAR_TO_SENSOR)


# ------------------------------------------------------------------------------------ geometry
def quaternion_to_matrix(q) -> np.ndarray:
    """3x3 rotation from a unit quaternion [w, x, y, z] (nuScenes / pyquaternion order)."""
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def yaw_to_quaternion(yaw) -> np.ndarray:
    """(..., 4) unit quaternions [w, x, y, z] of rotations by `yaw` (...,) radians about +z: the rotation
    of an upright box, as nuScenes annotations and results store it."""
    half = np.asarray(yaw, dtype=np.float64) / 2.0
    zero = np.zeros_like(half)
    return np.stack([np.cos(half), zero, zero, np.sin(half)], axis=-1)


def pose_matrix(translation, rotation_wxyz) -> np.ndarray:
    pose = np.eye(4)
    pose[:3, :3] = quaternion_to_matrix(rotation_wxyz)
    pose[:3, 3] = translation
    return pose


def yaw_of_quaternion(q) -> float:
    """Yaw of the rotated +x axis (what the devkit's Quaternion.yaw_pitch_roll[0] gives for boxes)."""
    r = quaternion_to_matrix(q)
    return float(np.arctan2(r[1, 0], r[0, 0]))


def lidar_to_global_boxes(boxes, lidar2ego, ego2global) -> np.ndarray:
    """(M, 7|9) LiDAR-frame boxes -> global, through the ego frame (velocities rotate)."""
    return transform_boxes(transform_boxes(boxes, lidar2ego), ego2global)


def global_to_lidar_boxes(boxes, lidar2ego, ego2global) -> np.ndarray:
    """Exact inverse of lidar_to_global_boxes."""
    return untransform_boxes(untransform_boxes(boxes, ego2global), lidar2ego)


def lidar_to_ego_boxes(boxes, lidar2ego) -> np.ndarray:
    return transform_boxes(boxes, lidar2ego)


def ego_to_lidar_boxes(boxes, lidar2ego) -> np.ndarray:
    return untransform_boxes(boxes, lidar2ego)


def annotation_box(translation, size_wlh, rotation_wxyz, velocity=None) -> np.ndarray:
    """A devkit annotation (global) as a pointmae box: [x, y, z, l, w, h, yaw (, vx, vy)]."""
    w, l, h = size_wlh
    box = [*translation, l, w, h, yaw_of_quaternion(rotation_wxyz)]
    if velocity is not None:
        box += list(velocity[:2])
    return np.array(box, dtype=np.float64)


# --------------------------------------------------------------------------- mmdet3d info pickles
def _resolve(data_root: Path, path: str, default_folder: str) -> Path:
    candidate = Path(path)
    if candidate.is_absolute() and candidate.is_file():
        return candidate
    other = "samples/LIDAR_TOP" if default_folder.startswith("sweeps") else "sweeps/LIDAR_TOP"
    for base in (data_root / path, data_root / default_folder / Path(path).name, data_root / other / Path(path).name):
        if base.is_file():
            return base
    # mmdet3d v1.0 infos carry "./data/nuscenes/samples/..." paths: try below data_root.
    parts = Path(path).parts
    for i in range(len(parts)):
        if parts[i] in ("samples", "sweeps") and (data_root.joinpath(*parts[i:])).is_file():
            return data_root.joinpath(*parts[i:])
    return data_root / default_folder / Path(path).name   # reported as missing by the reader


class NuScenesInfoDataset:
    """Frames from an mmdet3d-style nuScenes info pickle (v1.1 "data_list" or v1.0 "infos").

    data_root: the nuScenes root (samples/LIDAR_TOP, sweeps/LIDAR_TOP below it).
    num_sweeps: previous sweeps to accumulate (from the info's sweep list; fewer if the info has
    fewer, and the frame's meta says how many were used). With num_sweeps > 0 the points get a
    time_lag channel. Boxes are (M, 9) LiDAR-frame boxes with velocities.
    """

    def __init__(self, info_path, data_root=None, num_sweeps: int = 0, close_radius: float = 1.0,
                 nonfinite: str = "error", load_dim: int = 5, axes: str = "pointmae"):
        self.axes = axes
        self.info_path = require_file(info_path)
        self.data_root = Path(data_root) if data_root is not None else self.info_path.parent
        with open(self.info_path, "rb") as f:
            try:
                raw = pickle.load(f)
            except Exception as exc:  # noqa: BLE001 - any unpickling failure is a data error
                raise DataError(self.info_path, f"cannot unpickle info file ({exc})") from None
        self.samples, self.categories = self._normalise(raw)
        self.num_sweeps = num_sweeps
        self.close_radius = close_radius
        self.nonfinite = nonfinite
        self.load_dim = load_dim

    def _normalise(self, raw):
        if isinstance(raw, dict) and "data_list" in raw:          # mmdet3d >= 1.1
            categories = {v: k for k, v in raw.get("metainfo", {}).get("categories", {}).items()}
            samples = [self._from_v2(s, categories, i) for i, s in enumerate(raw["data_list"])]
        elif isinstance(raw, dict) and "infos" in raw:            # mmdet3d 1.0
            categories = {}
            samples = [self._from_v1(s, i) for i, s in enumerate(raw["infos"])]
        else:
            raise DataError(self.info_path, "not an mmdet3d nuScenes info file (no 'data_list' or 'infos')")
        return samples, categories

    def _from_v2(self, s, categories, i):
        try:
            lidar = s["lidar_points"]
            instances = s.get("instances", [])
            boxes = np.array([inst["bbox_3d"] + list(inst.get("velocity", [np.nan, np.nan]))[:2]
                              for inst in instances], dtype=np.float64).reshape(-1, 9)
            keyframe_pose = np.array(s["ego2global"], np.float64) @ np.array(lidar["lidar2ego"], np.float64)
            sweeps = [self._sweep_v2(sw, keyframe_pose, i, k) for k, sw in enumerate(s.get("lidar_sweeps", []))]
            return {"token": s.get("token", str(i)), "timestamp": float(s["timestamp"]),
                    "lidar_path": lidar["lidar_path"], "lidar2ego": np.array(lidar["lidar2ego"], np.float64),
                    "ego2global": np.array(s["ego2global"], np.float64), "boxes": boxes,
                    "names": np.array([categories.get(inst["bbox_label_3d"], str(inst["bbox_label_3d"]))
                                       for inst in instances], dtype=str),
                    "num_lidar_pts": np.array([inst.get("num_lidar_pts", -1) for inst in instances], np.int64),
                    "valid": np.array([bool(inst.get("bbox_3d_isvalid", True)) for inst in instances], bool),
                    "sweeps": sweeps}
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(self.info_path, f"data_list[{i}]: malformed entry ({type(exc).__name__}: {exc})") from None

    def _sweep_v2(self, sw, keyframe_pose, i, k):
        """A v1.1 sweep entry. update_infos_to_v2 writes lidar_points {lidar_path, lidar2ego,
        lidar2sensor} and a top-level ego2global; lidar2sensor is the sweep sensor -> keyframe LiDAR
        transform (from the v1.0 sensor2lidar). Expressed as lidar2ego / ego2global whose product
        is the sweep sensor -> global pose."""
        points = sw["lidar_points"]
        ego2global = sw.get("ego2global", points.get("ego2global"))
        if ego2global is not None and "lidar2ego" in points:
            lidar2ego, ego2global = np.array(points["lidar2ego"], np.float64), np.array(ego2global, np.float64)
        elif "lidar2sensor" in points:
            lidar2ego, ego2global = np.eye(4), keyframe_pose @ np.array(points["lidar2sensor"], np.float64)
        else:
            raise KeyError(f"lidar_sweeps[{k}] has neither ego2global + lidar2ego nor lidar2sensor")
        return {"path": points["lidar_path"], "timestamp": float(sw["timestamp"]),
                "lidar2ego": lidar2ego, "ego2global": ego2global}

    def _from_v1(self, s, i):
        try:
            lidar2ego = pose_matrix(s["lidar2ego_translation"], s["lidar2ego_rotation"])
            ego2global = pose_matrix(s["ego2global_translation"], s["ego2global_rotation"])
            lidar2global = ego2global @ lidar2ego
            sweeps = []
            for sw in s.get("sweeps", []):
                sensor2lidar = np.eye(4)
                sensor2lidar[:3, :3] = sw["sensor2lidar_rotation"]
                sensor2lidar[:3, 3] = sw["sensor2lidar_translation"]
                # Express as lidar2ego/ego2global pair whose product is the sweep's sensor -> global.
                sweeps.append({"path": sw["data_path"], "timestamp": sw["timestamp"] / 1e6,
                               "lidar2ego": np.eye(4), "ego2global": lidar2global @ sensor2lidar})
            boxes = np.c_[np.asarray(s.get("gt_boxes", np.zeros((0, 7))), np.float64).reshape(-1, 7),
                          np.asarray(s.get("gt_velocity", np.zeros((0, 2))), np.float64).reshape(-1, 2)]
            return {"token": s.get("token", str(i)), "timestamp": s["timestamp"] / 1e6, "lidar_path": s["lidar_path"],
                    "lidar2ego": lidar2ego, "ego2global": ego2global, "boxes": boxes,
                    "names": np.asarray(s.get("gt_names", []), dtype=str),
                    "num_lidar_pts": np.asarray(s.get("num_lidar_pts", -np.ones(len(boxes))), np.int64),
                    "valid": np.asarray(s.get("valid_flag", np.ones(len(boxes), bool)), bool), "sweeps": sweeps}
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(self.info_path, f"infos[{i}]: malformed entry ({type(exc).__name__}: {exc})") from None

    def __len__(self):
        return len(self.samples)

    def box_names(self, index: int) -> np.ndarray:
        """The class names of keyframe `index`'s boxes (as __getitem__ gives them), without reading points."""
        return self.samples[index]["names"]

    def _read(self, path: str, folder: str, meta: dict) -> np.ndarray:
        file = _resolve(self.data_root, path, folder)
        return handle_nonfinite(read_bin_points(file, self.load_dim), file, self.nonfinite, meta)

    def has_previous(self, index: int, gap: int = 1) -> bool:
        return len(self.samples[index]["sweeps"]) >= gap

    def previous(self, index: int, gap: int = 1) -> Frame | None:
        """The LiDAR sweep `gap` sweeps before keyframe `index` (entry gap - 1 of the info's sweep list,
        newest first; 20 Hz sweeps between 2 Hz keyframes), in its own sensor frame with its own pose,
        for temporal models; None when the info lists fewer sweeps."""
        if not self.has_previous(index, gap):
            return None
        sweep = self.samples[index]["sweeps"][gap - 1]
        meta = {"dropped_nonfinite": 0}
        points = self._read(sweep["path"], "sweeps/LIDAR_TOP", meta)
        points, boxes, pose = to_sensor_axes(points, np.zeros((0, 9)), sweep["ego2global"] @ sweep["lidar2ego"],
                                             meta, self.axes)
        return Frame(points=points, channels=CHANNELS[:self.load_dim], pose=pose, timestamp=sweep["timestamp"],
                     frame_id=Path(sweep["path"]).name, boxes=boxes, meta=meta)

    def __getitem__(self, index: int) -> Frame:
        s = self.samples[index]
        meta = {"token": s["token"], "lidar2ego": s["lidar2ego"], "ego2global": s["ego2global"],
                "num_lidar_pts": s["num_lidar_pts"], "dropped_nonfinite": 0}
        points = self._read(s["lidar_path"], "samples/LIDAR_TOP", meta)
        pose = s["ego2global"] @ s["lidar2ego"]
        channels = CHANNELS[:self.load_dim]
        if self.num_sweeps > 0:
            previous = [Sweep(self._read(sw["path"], "sweeps/LIDAR_TOP", meta), sw["ego2global"] @ sw["lidar2ego"],
                              sw["timestamp"]) for sw in s["sweeps"][:self.num_sweeps]]
            points, counts = accumulate_sweeps(Sweep(points, pose, s["timestamp"]), previous, self.close_radius)
            channels = channels + ("time_lag",)
            meta.update(counts, sweeps_used=len(previous), sweeps_requested=self.num_sweeps)
        box_meta = {"num_points": s["num_lidar_pts"], "valid": s["valid"]}
        points, boxes, pose = to_sensor_axes(points, s["boxes"], pose, meta, self.axes)
        return Frame(points=points, channels=channels, pose=pose, timestamp=s["timestamp"], frame_id=s["token"],
                     boxes=boxes, names=s["names"], box_meta=box_meta, meta=meta)


# ------------------------------------------------------------------------------ devkit tables
_TABLES = ("sample", "sample_data", "ego_pose", "calibrated_sensor", "sensor", "sample_annotation",
           "instance", "category", "scene")


class NuScenesTables:
    """The devkit's JSON tables read directly (nuscenes-devkit 1.2 needs numpy<2, which the training
    environment does not allow). Implements the parts of the schema a LiDAR model needs:
    keyframes of LIDAR_TOP, the previous sweeps by sample_data.prev links, the previous keyframes by
    sample.prev, and annotations with the devkit's velocity rule."""

    def __init__(self, dataroot, version: str = "v1.0-mini", channel: str = "LIDAR_TOP"):
        self.dataroot = Path(dataroot)
        table_dir = self.dataroot / version
        if not table_dir.is_dir():
            raise DataError(table_dir, f"nuScenes table folder for version {version!r} not found")
        self.tables = {}
        for name in _TABLES:
            path = require_file(table_dir / f"{name}.json")
            try:
                rows = json.loads(path.read_text())
            except json.JSONDecodeError as exc:
                raise DataError(path, f"invalid JSON ({exc.msg})", exc.lineno) from None
            self.tables[name] = {row["token"]: row for row in rows}
        self.channel = channel
        sensor_of = {t: self.tables["sensor"][cs["sensor_token"]]["channel"]
                     for t, cs in self.tables["calibrated_sensor"].items()}
        self._lidar_keyframe = {}
        for sd in self.tables["sample_data"].values():
            if sensor_of[sd["calibrated_sensor_token"]] == channel and sd["is_key_frame"]:
                self._lidar_keyframe[sd["sample_token"]] = sd
        self.sample_tokens = sorted(self._lidar_keyframe, key=lambda t: self.tables["sample"][t]["timestamp"])
        self._annotations_of: dict[str, list] = {}
        for ann in self.tables["sample_annotation"].values():
            self._annotations_of.setdefault(ann["sample_token"], []).append(ann)

    def __len__(self):
        return len(self.sample_tokens)

    def sensor_pose(self, sample_data) -> tuple[np.ndarray, np.ndarray]:
        cs = self.tables["calibrated_sensor"][sample_data["calibrated_sensor_token"]]
        ep = self.tables["ego_pose"][sample_data["ego_pose_token"]]
        return pose_matrix(cs["translation"], cs["rotation"]), pose_matrix(ep["translation"], ep["rotation"])

    def keyframe_poses(self, sample_token: str) -> tuple[np.ndarray, np.ndarray]:
        """(lidar2ego, ego2global) of the sample's keyframe of this channel, without reading points."""
        if sample_token not in self._lidar_keyframe:
            raise KeyError(f"sample token {sample_token!r} has no {self.channel} keyframe in {self.dataroot}")
        return self.sensor_pose(self._lidar_keyframe[sample_token])

    def previous_sweeps(self, sample_data, count: int) -> list:
        out, current = [], sample_data
        while len(out) < count and current["prev"]:
            current = self.tables["sample_data"][current["prev"]]
            out.append(current)
        return out

    def previous_keyframes(self, sample_token: str, count: int) -> list[str]:
        out, current = [], self.tables["sample"][sample_token]
        while len(out) < count and current["prev"]:
            out.append(current["prev"])
            current = self.tables["sample"][current["prev"]]
        return out

    def annotation_velocity(self, ann, max_time_diff: float = 1.5) -> np.ndarray:
        """Global (vx, vy) from the previous/next annotation of the same instance, as the devkit does
        (central difference when both exist; NaN when the time gap exceeds the limit or there is none)."""
        has_prev, has_next = bool(ann["prev"]), bool(ann["next"])
        if not has_prev and not has_next:
            return np.array([np.nan, np.nan])
        first = self.tables["sample_annotation"][ann["prev"]] if has_prev else ann
        last = self.tables["sample_annotation"][ann["next"]] if has_next else ann
        t0 = self.tables["sample"][first["sample_token"]]["timestamp"] / 1e6
        t1 = self.tables["sample"][last["sample_token"]]["timestamp"] / 1e6
        dt = t1 - t0
        limit = max_time_diff * (2 if has_prev and has_next else 1)
        if dt <= 0 or dt > limit:
            return np.array([np.nan, np.nan])
        return (np.array(last["translation"]) - np.array(first["translation"]))[:2] / dt

    def frame(self, sample_token: str, num_sweeps: int = 0, close_radius: float = 1.0,
              nonfinite: str = "error", axes: str = "pointmae") -> Frame:
        sd = self._lidar_keyframe[sample_token]
        lidar2ego, ego2global = self.sensor_pose(sd)
        pose = ego2global @ lidar2ego
        meta = {"token": sample_token, "lidar2ego": lidar2ego, "ego2global": ego2global, "dropped_nonfinite": 0}

        def read(row):
            path = self.dataroot / row["filename"]
            return handle_nonfinite(read_bin_points(path, 5), path, nonfinite, meta)

        points = read(sd)
        channels = CHANNELS
        if num_sweeps > 0:
            previous = []
            for row in self.previous_sweeps(sd, num_sweeps):
                l2e, e2g = self.sensor_pose(row)
                previous.append(Sweep(read(row), e2g @ l2e, row["timestamp"] / 1e6))
            points, counts = accumulate_sweeps(Sweep(points, pose, sd["timestamp"] / 1e6), previous, close_radius)
            channels = channels + ("time_lag",)
            meta.update(counts, sweeps_used=len(previous))
        anns = sorted(self._annotations_of.get(sample_token, []), key=lambda a: a["token"])
        boxes = np.array([annotation_box(a["translation"], a["size"], a["rotation"], self.annotation_velocity(a))
                          for a in anns]).reshape(-1, 9)
        boxes = global_to_lidar_boxes(boxes, lidar2ego, ego2global)
        names = np.array([self.tables["category"][self.tables["instance"][a["instance_token"]]["category_token"]]["name"]
                          for a in anns], dtype=str)
        box_meta = {"num_points": np.array([a.get("num_lidar_pts", -1) for a in anns], np.int64),
                    "instance_token": np.array([a["instance_token"] for a in anns], dtype=str)}
        meta["previous_keyframes"] = self.previous_keyframes(sample_token, 1)
        points, boxes, pose = to_sensor_axes(points, boxes, pose, meta, axes)
        return Frame(points=points, channels=channels, pose=pose, timestamp=sd["timestamp"] / 1e6,
                     frame_id=sample_token, sequence_id=self.tables["sample"][sample_token]["scene_token"],
                     boxes=boxes, names=names, box_meta=box_meta, meta=meta)

    def __getitem__(self, index: int) -> Frame:
        return self.frame(self.sample_tokens[index])

    def temporal_pair(self, index: int, num_sweeps: int = 0) -> tuple[Frame, Frame | None]:
        """(previous keyframe, current keyframe) for temporal models (T-MAE); None when first."""
        token = self.sample_tokens[index]
        prev = self.previous_keyframes(token, 1)
        return (self.frame(prev[0], num_sweeps) if prev else None), self.frame(token, num_sweeps)


__all__ = ["NuScenesInfoDataset", "NuScenesTables", "axes_transform", "lidar_to_global_boxes", "global_to_lidar_boxes",
           "lidar_to_ego_boxes", "ego_to_lidar_boxes", "pose_matrix", "quaternion_to_matrix", "to_sensor_axes"]
