"""A tiny nuScenes-format dataroot written by the tests: the devkit's JSON tables (schema of
nuscenes-devkit docs/schema_nuscenes.md), LIDAR_TOP point files and a map mask, small enough to
write in milliseconds, complete enough for nuscenes-devkit's NuScenes() and DetectionEval to run.

Two scenes of three keyframes each (0.5 s apart); the ego drives forward at 4 m/s. Every detection
class appears at least once, each object is a track over the three keyframes moving at constant
velocity (so the devkit's box_velocity is exact), with an attribute that matches its motion; an animal
(not a detection class) and a bicycle parked in a bicycle rack (both left out by the evaluation) come
along. The split "tiny_val" (custom split in <version>/splits.json, the devkit's mechanism) holds
only the first scene.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from PIL import Image

VERSION = "v1.0-tiny"
SPLIT = "tiny_val"
SCENES = ("scene-tiny-0001", "scene-tiny-0002")
SAMPLES_PER_SCENE = 3
SAMPLE_PERIOD_US = 500_000
EGO_SPEED = 4.0          # m/s along the ego's heading
POINTS_PER_BOX = 12

# Real LIDAR_TOP extrinsics are close to this: 0.94 m forward, 1.84 m up, a -90 deg yaw (lidar +y is
# ego forward) and a slight tilt, which exercises the exact heading maps of pointmae.data.boxes.
LIDAR_TRANSLATION = [0.943713, 0.0, 1.84023]
LIDAR_ROTATION = [0.7077955119163518, -0.006492242056004365, 0.010646214713995808, -0.7063073142877817]

ATTRIBUTES = ("vehicle.moving", "vehicle.parked", "vehicle.stopped", "cycle.with_rider", "cycle.without_rider",
              "pedestrian.moving", "pedestrian.standing", "pedestrian.sitting_lying_down")
# (category, detection class or None, size w l h, position in the first ego frame, heading in that frame,
#  velocity (m/s, first ego frame), attribute)
OBJECTS = (
    ("vehicle.car", "car", (1.9, 4.6, 1.6), (12.0, 3.5), 0.0, (6.0, 0.0), "vehicle.moving"),
    ("vehicle.car", "car", (1.8, 4.3, 1.5), (8.0, -6.0), np.pi / 2, (0.0, 0.0), "vehicle.parked"),
    ("vehicle.truck", "truck", (2.5, 7.0, 3.0), (-15.0, 4.0), 0.1, (0.0, 0.0), "vehicle.stopped"),
    ("vehicle.bus.rigid", "bus", (2.9, 11.0, 3.4), (25.0, -9.0), np.pi, (-3.0, 0.0), "vehicle.moving"),
    ("vehicle.trailer", "trailer", (2.4, 9.0, 3.8), (-20.0, -12.0), 0.3, (0.0, 0.0), "vehicle.parked"),
    ("vehicle.construction", "construction_vehicle", (2.8, 6.5, 3.1), (18.0, 14.0), -1.2, (0.0, 0.0), "vehicle.parked"),
    ("human.pedestrian.adult", "pedestrian", (0.7, 0.8, 1.75), (6.0, 8.0), -np.pi / 2, (0.0, -1.3), "pedestrian.moving"),
    ("human.pedestrian.child", "pedestrian", (0.5, 0.5, 1.2), (-4.0, 9.0), 2.0, (0.0, 0.0), "pedestrian.standing"),
    ("vehicle.motorcycle", "motorcycle", (0.8, 2.1, 1.5), (3.0, -10.0), 0.4, (5.0 * np.cos(0.4), 5.0 * np.sin(0.4)), "cycle.with_rider"),
    ("vehicle.bicycle", "bicycle", (0.6, 1.8, 1.3), (-9.0, -5.0), 1.0, (0.0, 0.0), "cycle.without_rider"),
    ("movable_object.trafficcone", "traffic_cone", (0.4, 0.4, 1.0), (10.0, 6.5), 0.0, (0.0, 0.0), None),
    ("movable_object.barrier", "barrier", (2.5, 0.6, 1.0), (14.0, -4.0), 0.2, (0.0, 0.0), None),
    ("animal", None, (0.4, 0.9, 0.6), (5.0, 12.0), 0.7, (0.0, 0.0), None),
    ("static_object.bicycle_rack", None, (6.0, 2.0, 1.2), (-12.0, 15.0), 0.0, (0.0, 0.0), None),
    ("vehicle.bicycle", "bicycle", (0.6, 1.7, 1.2), (-12.0, 15.3), 0.0, (0.0, 0.0), "cycle.without_rider"),
)


def token(*parts) -> str:
    return hashlib.md5("/".join(map(str, parts)).encode()).hexdigest()


def yaw_quaternion(yaw: float) -> list[float]:
    return [float(np.cos(yaw / 2)), 0.0, 0.0, float(np.sin(yaw / 2))]


def quaternion_matrix(q) -> np.ndarray:
    w, x, y, z = np.asarray(q, float) / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def build_tiny_dataroot(root) -> dict:
    """Write the dataroot under `root`; returns {"dataroot", "version", "split", "split_tokens",
    "all_tokens", "attribute_of" {(sample token, instance token): attribute name or ""}}."""
    root = Path(root)
    tables = {name: [] for name in ("category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor",
                                    "ego_pose", "log", "scene", "sample", "sample_data", "sample_annotation", "map")}
    categories = sorted({o[0] for o in OBJECTS})
    tables["category"] = [{"token": token("category", c), "name": c, "description": c} for c in categories]
    tables["attribute"] = [{"token": token("attribute", a), "name": a, "description": a} for a in ATTRIBUTES]
    tables["visibility"] = [{"token": str(i), "level": level, "description": level}
                            for i, level in enumerate(("v0-40", "v40-60", "v60-80", "v80-100"), start=1)]
    tables["sensor"] = [{"token": token("sensor", "LIDAR_TOP"), "channel": "LIDAR_TOP", "modality": "lidar"}]
    tables["calibrated_sensor"] = [{"token": token("calibrated_sensor"), "sensor_token": tables["sensor"][0]["token"],
                                    "translation": LIDAR_TRANSLATION, "rotation": LIDAR_ROTATION,
                                    "camera_intrinsic": []}]
    lidar2ego = np.eye(4)
    lidar2ego[:3, :3], lidar2ego[:3, 3] = quaternion_matrix(LIDAR_ROTATION), LIDAR_TRANSLATION
    log_token = token("log")
    tables["log"] = [{"token": log_token, "logfile": "tiny-log", "vehicle": "tiny", "date_captured": "2018-07-24",
                      "location": "singapore-onenorth"}]
    map_file = "maps/tiny-map.png"
    (root / "maps").mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / map_file)
    tables["map"] = [{"token": token("map"), "log_tokens": [log_token], "category": "semantic_prior",
                      "filename": map_file}]
    (root / "samples" / "LIDAR_TOP").mkdir(parents=True, exist_ok=True)

    rng = np.random.default_rng(0)
    attribute_of = {}
    all_tokens, split_tokens = [], []
    for s, scene in enumerate(SCENES):
        # The scene's first ego pose: a place in the map and a heading; later poses drive forward.
        start, yaw0 = np.array([600.0 + 300 * s, 1600.0 - 200 * s, 0.0]), 0.6 + 2.0 * s
        c, si = np.cos(yaw0), np.sin(yaw0)
        to_world = np.array([[c, -si], [si, c]])
        sample_tokens = [token(scene, "sample", k) for k in range(SAMPLES_PER_SCENE)]
        instance_tokens = [token(scene, "instance", i) for i in range(len(OBJECTS))]
        for k, sample_token in enumerate(sample_tokens):
            t_us = 1_532_402_927_647_951 + s * 100_000_000 + k * SAMPLE_PERIOD_US
            dt = k * SAMPLE_PERIOD_US / 1e6
            ego_xy = start[:2] + to_world @ np.array([EGO_SPEED * dt, 0.0])
            ego_pose = {"token": token(scene, "ego_pose", k), "timestamp": t_us, "rotation": yaw_quaternion(yaw0),
                        "translation": [float(ego_xy[0]), float(ego_xy[1]), 0.0]}
            tables["ego_pose"].append(ego_pose)
            tables["sample"].append({"token": sample_token, "timestamp": t_us, "scene_token": token(scene),
                                     "prev": sample_tokens[k - 1] if k > 0 else "",
                                     "next": sample_tokens[k + 1] if k + 1 < SAMPLES_PER_SCENE else ""})
            filename = f"samples/LIDAR_TOP/tiny-log__LIDAR_TOP__{t_us}.pcd.bin"
            tables["sample_data"].append({
                "token": token(scene, "sample_data", k), "sample_token": sample_token,
                "ego_pose_token": ego_pose["token"], "calibrated_sensor_token": tables["calibrated_sensor"][0]["token"],
                "timestamp": t_us, "fileformat": "pcd", "is_key_frame": True, "height": 0, "width": 0,
                "filename": filename, "prev": token(scene, "sample_data", k - 1) if k > 0 else "",
                "next": token(scene, "sample_data", k + 1) if k + 1 < SAMPLES_PER_SCENE else ""})
            ego2global = np.eye(4)
            ego2global[:3, :3], ego2global[:3, 3] = quaternion_matrix(yaw_quaternion(yaw0)), ego_pose["translation"]
            world_points = [np.c_[rng.uniform(-40, 40, (200, 2)) @ to_world.T + start[:2], np.full(200, -0.05)]]
            for i, (category, _, size, xy, heading, velocity, attribute) in enumerate(OBJECTS):
                centre_xy = start[:2] + to_world @ (np.array(xy) + np.array(velocity) * dt)
                w, l, h = size
                centre = [float(centre_xy[0]), float(centre_xy[1]), h / 2]
                yaw = yaw0 + heading
                ann_token = token(scene, "annotation", i, k)
                tables["sample_annotation"].append({
                    "token": ann_token, "sample_token": sample_token, "instance_token": instance_tokens[i],
                    "visibility_token": "4",
                    "attribute_tokens": [token("attribute", attribute)] if attribute else [],
                    "translation": centre, "size": [w, l, h], "rotation": yaw_quaternion(yaw),
                    "prev": token(scene, "annotation", i, k - 1) if k > 0 else "",
                    "next": token(scene, "annotation", i, k + 1) if k + 1 < SAMPLES_PER_SCENE else "",
                    "num_lidar_pts": POINTS_PER_BOX, "num_radar_pts": 0})
                attribute_of[(sample_token, instance_tokens[i])] = attribute or ""
                local = rng.uniform(-0.45, 0.45, (POINTS_PER_BOX, 3)) * [l, w, h]
                cy, sy = np.cos(yaw), np.sin(yaw)
                world_points.append(local @ np.array([[cy, sy, 0], [-sy, cy, 0], [0, 0, 1]]) + centre)
            world = np.concatenate(world_points)
            sensor = np.linalg.solve(ego2global @ lidar2ego, np.c_[world, np.ones(len(world))].T).T[:, :3]
            cloud = np.c_[sensor, rng.integers(0, 256, len(sensor)), rng.integers(0, 32, len(sensor))]
            cloud.astype(np.float32).tofile(root / filename)
        for i, (category, *_rest) in enumerate(OBJECTS):
            tables["instance"].append({"token": instance_tokens[i], "category_token": token("category", category),
                                       "nbr_annotations": SAMPLES_PER_SCENE,
                                       "first_annotation_token": token(scene, "annotation", i, 0),
                                       "last_annotation_token": token(scene, "annotation", i, SAMPLES_PER_SCENE - 1)})
        tables["scene"].append({"token": token(scene), "log_token": log_token, "nbr_samples": SAMPLES_PER_SCENE,
                                "first_sample_token": sample_tokens[0], "last_sample_token": sample_tokens[-1],
                                "name": scene, "description": "written by the tests"})
        all_tokens += sample_tokens
        if s == 0:
            split_tokens += sample_tokens
    table_dir = root / VERSION
    table_dir.mkdir(parents=True, exist_ok=True)
    for name, rows in tables.items():
        (table_dir / f"{name}.json").write_text(json.dumps(rows, indent=0))
    (table_dir / "splits.json").write_text(json.dumps({SPLIT: [SCENES[0]]}))
    return {"dataroot": root, "version": VERSION, "split": SPLIT, "split_tokens": split_tokens,
            "all_tokens": all_tokens, "attribute_of": attribute_of}
