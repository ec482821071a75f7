"""Any labelled frames (the synthetic world, KITTI, Waymo, ...) written as a nuScenes-format dataroot,
so that nuscenes-devkit's DetectionEval can score detections on them (pointmae.eval.nuscenes).

What is written (the devkit's schema, docs/schema_nuscenes.md): the 13 JSON tables NuScenes() loads,
one LIDAR_TOP keyframe per frame (.pcd.bin, float32 x, y, z, intensity, ring in the LIDAR_TOP axes),
one scene per sequence_id (samples linked by time), one instance per (sequence, box_meta["track_id"])
(annotations linked across frames, so the devkit's velocity estimate works), an 8x8 map mask, and
<version>/splits.json with the custom split the devkit evaluates.

Choices a user should know:
* The ego frame is the frame's sensor frame: calibrated_sensor is pointmae's fixed LIDAR_TOP -> sensor
  turn, ego_pose is Frame.pose. Reading the dataroot back with NuScenesTables gives the frames' poses.
* Box names map to nuScenes categories by `category_of` (default CATEGORY_OF: KITTI / Waymo / detection
  names); unmapped names are kept as they are and, like nuScenes' non-detection categories, not evaluated.
* Attributes are not known for these datasets: each annotation gets the default rule of
  pointmae.submission.nuscenes.default_attribute from its own velocity, so mAAE measures agreement
  with that rule, nothing more.
* num_lidar_pts: box_meta["num_points"] when present, otherwise the points counted inside the box
  (the devkit drops annotations without points).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
from PIL import Image

from pointmae.data.boxes import count_points_in_boxes, invert_pose, transform_boxes, transform_points
from pointmae.data.nuscenes import NUSCENES_LIDAR_TO_SENSOR, yaw_to_quaternion
from pointmae.submission.nuscenes import default_attribute, detection_name_of_category

# Names of pointmae's datasets -> a nuScenes category (whose detection class the devkit evaluates).
CATEGORY_OF = {
    "car": "vehicle.car", "truck": "vehicle.truck", "bus": "vehicle.bus.rigid", "trailer": "vehicle.trailer",
    "construction_vehicle": "vehicle.construction", "pedestrian": "human.pedestrian.adult",
    "motorcycle": "vehicle.motorcycle", "bicycle": "vehicle.bicycle", "traffic_cone": "movable_object.trafficcone",
    "barrier": "movable_object.barrier",
    "Car": "vehicle.car", "Van": "vehicle.car", "Truck": "vehicle.truck", "Tram": "vehicle.bus.rigid",
    "Pedestrian": "human.pedestrian.adult", "Person_sitting": "human.pedestrian.adult", "Cyclist": "vehicle.bicycle",
    "Vehicle": "vehicle.car", "Sign": "static_object.traffic_sign",
}
ATTRIBUTES = ("vehicle.moving", "vehicle.parked", "vehicle.stopped", "cycle.with_rider", "cycle.without_rider",
              "pedestrian.moving", "pedestrian.standing", "pedestrian.sitting_lying_down")
TABLES = ("category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor", "ego_pose", "log",
          "scene", "sample", "sample_data", "sample_annotation", "map")


def _token(*parts) -> str:
    return hashlib.md5("\x1f".join(map(str, parts)).encode()).hexdigest()


def _quaternion(rotation: np.ndarray) -> list[float]:
    """[w, x, y, z] of a 3x3 rotation (Shepperd's method: the largest of w, x, y, z first)."""
    r = np.asarray(rotation, np.float64)
    trace = np.trace(r)
    candidates = [trace, r[0, 0], r[1, 1], r[2, 2]]
    k = int(np.argmax(candidates))
    if k == 0:
        w = np.sqrt(1.0 + trace) / 2
        q = [w, (r[2, 1] - r[1, 2]) / (4 * w), (r[0, 2] - r[2, 0]) / (4 * w), (r[1, 0] - r[0, 1]) / (4 * w)]
    elif k == 1:
        x = np.sqrt(1.0 + r[0, 0] - r[1, 1] - r[2, 2]) / 2
        q = [(r[2, 1] - r[1, 2]) / (4 * x), x, (r[0, 1] + r[1, 0]) / (4 * x), (r[0, 2] + r[2, 0]) / (4 * x)]
    elif k == 2:
        y = np.sqrt(1.0 - r[0, 0] + r[1, 1] - r[2, 2]) / 2
        q = [(r[0, 2] - r[2, 0]) / (4 * y), (r[0, 1] + r[1, 0]) / (4 * y), y, (r[1, 2] + r[2, 1]) / (4 * y)]
    else:
        z = np.sqrt(1.0 - r[0, 0] - r[1, 1] + r[2, 2]) / 2
        q = [(r[1, 0] - r[0, 1]) / (4 * z), (r[0, 2] + r[2, 0]) / (4 * z), (r[1, 2] + r[2, 1]) / (4 * z), z]
    return [float(v) for v in q]


def write_nuscenes_dataroot(frames: Iterable, root, version: str = "v1.0-pointmae", split: str = "pointmae_val",
                            category_of: Mapping[str, str] | None = None) -> dict:
    """Write `frames` as a nuScenes dataroot under `root`.

    frames: Frames with (M, 9) sensor-frame boxes (velocities), pose, timestamp (s), frame_id,
        sequence_id; box_meta "track_id" links boxes across a sequence, "num_points" is used if given.
    Returns {"dataroot", "version", "split", "sample_token_of" {frame_id: sample token}, "sample_tokens"}.
    Predictions for these frames go to pointmae.submission.nuscenes.build_results with
    poses {sample token: Frame.pose} and frame_id replaced by the sample token.
    """
    root = Path(root)
    category_of = dict(CATEGORY_OF if category_of is None else category_of)
    frames = sorted(frames, key=lambda f: (str(f.sequence_id), float(f.timestamp), str(f.frame_id)))
    if not frames:
        raise ValueError("frames: nothing to write")
    ids = [str(f.frame_id) for f in frames]
    if len(set(ids)) != len(ids):
        raise ValueError("frames: frame_id values must be unique")
    tables = {name: [] for name in TABLES}
    (root / "samples" / "LIDAR_TOP").mkdir(parents=True, exist_ok=True)
    (root / "maps").mkdir(parents=True, exist_ok=True)
    # The devkit opens every map's file (MapMask) when it loads the tables: a blank 8x8 mask.
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "maps" / "pointmae-blank.png")
    log = {"token": _token("log"), "logfile": "pointmae-export", "vehicle": "pointmae", "date_captured": "2020-01-01",
           "location": "pointmae"}
    tables["log"] = [log]
    tables["map"] = [{"token": _token("map"), "log_tokens": [log["token"]], "category": "semantic_prior",
                      "filename": "maps/pointmae-blank.png"}]
    sensor = {"token": _token("sensor", "LIDAR_TOP"), "channel": "LIDAR_TOP", "modality": "lidar"}
    tables["sensor"] = [sensor]
    # Ego frame := the frames' sensor frame, so lidar2ego is pointmae's LIDAR_TOP -> sensor turn.
    calibration = {"token": _token("calibrated_sensor"), "sensor_token": sensor["token"], "translation": [0.0, 0.0, 0.0],
                   "rotation": _quaternion(NUSCENES_LIDAR_TO_SENSOR[:3, :3]), "camera_intrinsic": []}
    tables["calibrated_sensor"] = [calibration]
    tables["attribute"] = [{"token": _token("attribute", a), "name": a, "description": a} for a in ATTRIBUTES]
    tables["visibility"] = [{"token": "4", "level": "v80-100", "description": "not known; written as fully visible"}]

    categories, sample_token_of = {}, {}
    by_sequence: dict[str, list] = {}
    for frame in frames:
        by_sequence.setdefault(str(frame.sequence_id), []).append(frame)
    instance_annotations: dict[str, list] = {}
    instance_category = {}
    for sequence, seq_frames in by_sequence.items():
        scene_token = _token("scene", sequence)
        tokens = [_token("sample", f.frame_id) for f in seq_frames]
        for k, (frame, sample_token) in enumerate(zip(seq_frames, tokens)):
            sample_token_of[str(frame.frame_id)] = sample_token
            timestamp = int(round(float(frame.timestamp) * 1e6))
            pose = np.asarray(frame.pose, np.float64)
            tables["ego_pose"].append({"token": _token("ego_pose", frame.frame_id), "timestamp": timestamp,
                                       "rotation": _quaternion(pose[:3, :3]), "translation": pose[:3, 3].tolist()})
            tables["sample"].append({"token": sample_token, "timestamp": timestamp, "scene_token": scene_token,
                                     "prev": tokens[k - 1] if k else "", "next": tokens[k + 1] if k + 1 < len(tokens) else ""})
            filename = f"samples/LIDAR_TOP/{sample_token}.pcd.bin"
            tables["sample_data"].append({
                "token": _token("sample_data", frame.frame_id), "sample_token": sample_token,
                "ego_pose_token": _token("ego_pose", frame.frame_id), "calibrated_sensor_token": calibration["token"],
                "timestamp": timestamp, "fileformat": "pcd", "is_key_frame": True, "height": 0, "width": 0,
                "filename": filename, "prev": _token("sample_data", seq_frames[k - 1].frame_id) if k else "",
                "next": _token("sample_data", seq_frames[k + 1].frame_id) if k + 1 < len(tokens) else ""})
            points = np.asarray(frame.to_numpy().points, np.float32)
            lidar = transform_points(points[:, :3], invert_pose(NUSCENES_LIDAR_TO_SENSOR))
            intensity = frame.channel("intensity") if "intensity" in frame.channels else np.zeros(len(points))
            ring = frame.channel("ring") if "ring" in frame.channels else np.zeros(len(points))
            np.c_[lidar, intensity, ring].astype(np.float32).tofile(root / filename)

            boxes = np.asarray(frame.boxes, np.float64)
            if boxes.shape[1] != 9:
                raise ValueError(f"frame {frame.frame_id!r}: boxes must be (M, 9) with velocities; got {boxes.shape}")
            world = transform_boxes(np.nan_to_num(boxes), pose)
            counts = frame.box_meta.get("num_points")
            counts = count_points_in_boxes(points[:, :3], boxes) if counts is None else np.asarray(counts)
            tracks = frame.box_meta.get("track_id", np.arange(len(boxes)) + 10**9 * k)
            for b, (name, box) in enumerate(zip(frame.names, world)):
                category = category_of.get(str(name), str(name))
                categories.setdefault(category, _token("category", category))
                instance = _token("instance", sequence, tracks[b])
                instance_category.setdefault(instance, category)
                detection = detection_name_of_category(category)
                attribute = default_attribute(detection, box[7:9]) if detection else ""
                annotation = {"token": _token("annotation", frame.frame_id, b), "sample_token": sample_token,
                              "instance_token": instance, "visibility_token": "4",
                              "attribute_tokens": [_token("attribute", attribute)] if attribute else [],
                              "translation": box[:3].tolist(), "size": [box[4], box[3], box[5]],
                              "rotation": yaw_to_quaternion(box[6]).tolist(),
                              "prev": "", "next": "", "num_lidar_pts": int(counts[b]), "num_radar_pts": 0}
                tables["sample_annotation"].append(annotation)
                instance_annotations.setdefault(instance, []).append(annotation)
        tables["scene"].append({"token": scene_token, "log_token": log["token"], "nbr_samples": len(tokens),
                                "first_sample_token": tokens[0], "last_sample_token": tokens[-1], "name": sequence,
                                "description": "written by pointmae.data.nuscenes_export"})
    for instance, annotations in instance_annotations.items():   # already in time order
        for a, b in zip(annotations, annotations[1:]):
            a["next"], b["prev"] = b["token"], a["token"]
        tables["instance"].append({"token": instance, "category_token": categories[instance_category[instance]],
                                   "nbr_annotations": len(annotations),
                                   "first_annotation_token": annotations[0]["token"],
                                   "last_annotation_token": annotations[-1]["token"]})
    tables["category"] = [{"token": t, "name": c, "description": c} for c, t in sorted(categories.items())]
    table_dir = root / version
    table_dir.mkdir(parents=True, exist_ok=True)
    for name, rows in tables.items():
        (table_dir / f"{name}.json").write_text(json.dumps(rows))
    (table_dir / "splits.json").write_text(json.dumps({split: list(by_sequence)}))
    return {"dataroot": root, "version": version, "split": split, "sample_token_of": sample_token_of,
            "sample_tokens": [s["token"] for s in tables["sample"]]}


__all__ = ["CATEGORY_OF", "write_nuscenes_dataroot"]
