"""nuScenes detection results: the submission JSON writer and a validator of the benchmark's rules.

The format (nuScenes detection task, "Results format"; Caesar et al., CVPR 2020, and the devkit's
eval/detection/README):

    {"meta": {"use_camera": bool, "use_lidar": bool, "use_radar": bool, "use_map": bool, "use_external": bool},
     "results": {sample_token: [sample_result, ...], ...}}

    sample_result = {"sample_token": str, "translation": [x, y, z], "size": [w, l, h],
                     "rotation": [w, x, y, z], "velocity": [vx, vy], "detection_name": str,
                     "detection_score": float, "attribute_name": str}

* translation (box centre), rotation (unit quaternion) and velocity (m/s) are in the GLOBAL frame;
  size is width, length, height in metres.
* detection_name is one of the 10 detection classes; attribute_name one of the attributes allowed for
  that class, or "" for the classes without attributes (barrier, traffic_cone).
* detection_score in [0, 1]; at most 500 boxes per sample; the results hold exactly the sample tokens
  of the evaluated split (a sample without detections has an empty list).

pointmae's predictions (one dict per frame; the contract of every writer and evaluator):
    {"frame_id": sample token, "boxes": (M, 9) float64 (x, y, z, dx, dy, dz, heading, vx, vy) in the
     sensor frame (pointmae/data/frame.py), "scores": (M,), "names": (M,) detection class names,
     optionally "attributes": (M,) str ("" or missing -> the default rule below)}
Boxes go to the global frame with the frame's sensor -> global pose (Frame.pose of the nuScenes readers).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from pointmae.data.boxes import invert_pose, transform_boxes
from pointmae.data.errors import DataError, require_file
from pointmae.data.nuscenes import yaw_to_quaternion

# The 10 detection classes and the attributes (nuScenes detection task definition).
DETECTION_NAMES = ("car", "truck", "bus", "trailer", "construction_vehicle", "pedestrian", "motorcycle",
                   "bicycle", "traffic_cone", "barrier")
VEHICLE_ATTRIBUTES = ("vehicle.moving", "vehicle.parked", "vehicle.stopped")
PEDESTRIAN_ATTRIBUTES = ("pedestrian.moving", "pedestrian.standing", "pedestrian.sitting_lying_down")
CYCLE_ATTRIBUTES = ("cycle.with_rider", "cycle.without_rider")
ALLOWED_ATTRIBUTES = {
    **{name: VEHICLE_ATTRIBUTES for name in ("car", "truck", "bus", "trailer", "construction_vehicle")},
    "pedestrian": PEDESTRIAN_ATTRIBUTES,
    **{name: CYCLE_ATTRIBUTES for name in ("motorcycle", "bicycle")},
    "traffic_cone": (), "barrier": (),
}
# nuScenes category -> detection class (the detection task's merge of the 23 categories; the others
# are not evaluated).
CATEGORY_TO_DETECTION_NAME = {
    "movable_object.barrier": "barrier", "vehicle.bicycle": "bicycle", "vehicle.bus.bendy": "bus",
    "vehicle.bus.rigid": "bus", "vehicle.car": "car", "vehicle.construction": "construction_vehicle",
    "vehicle.motorcycle": "motorcycle", "human.pedestrian.adult": "pedestrian",
    "human.pedestrian.child": "pedestrian", "human.pedestrian.construction_worker": "pedestrian",
    "human.pedestrian.police_officer": "pedestrian", "movable_object.trafficcone": "traffic_cone",
    "vehicle.trailer": "trailer", "vehicle.truck": "truck",
}
META_KEYS = ("use_camera", "use_lidar", "use_radar", "use_map", "use_external")
LIDAR_ONLY_META = {"use_camera": False, "use_lidar": True, "use_radar": False, "use_map": False,
                   "use_external": False}
BOX_KEYS = ("sample_token", "translation", "size", "rotation", "velocity", "detection_name",
            "detection_score", "attribute_name")
MAX_BOXES_PER_SAMPLE = 500
# The default attribute rule of the common LiDAR detectors (CenterPoint, mmdetection3d): an object
# faster than this is moving.
MOVING_SPEED = 0.2   # m/s


class SubmissionError(ValueError):
    """A results file or a prediction that breaks the benchmark's rules; `problems` lists each one."""

    def __init__(self, problems: Sequence[str], where: str = "nuScenes results", shown: int = 20):
        self.problems = list(problems)
        lines = "\n  ".join(self.problems[:shown])
        more = f"\n  ... and {len(self.problems) - shown} more" if len(self.problems) > shown else ""
        super().__init__(f"{where}: {len(self.problems)} problem(s):\n  {lines}{more}")


def detection_name_of_category(category: str) -> str | None:
    """The detection class of a nuScenes category ("vehicle.bus.rigid" -> "bus"); None when the
    category is not evaluated (animals, static objects, ...)."""
    return CATEGORY_TO_DETECTION_NAME.get(category)


def default_attribute(name: str, velocity_xy) -> str:
    """The attribute the common LiDAR detectors write when they do not predict one: moving vehicles /
    cycles / pedestrians (speed > 0.2 m/s) are "vehicle.moving" / "cycle.with_rider" /
    "pedestrian.moving"; standing still: buses "vehicle.stopped", other vehicles "vehicle.parked",
    cycles "cycle.without_rider", pedestrians "pedestrian.standing"; barriers and cones have none."""
    if name not in ALLOWED_ATTRIBUTES:
        raise ValueError(f"name must be one of the detection classes {DETECTION_NAMES}; got {name!r}")
    if not ALLOWED_ATTRIBUTES[name]:
        return ""
    moving = math.hypot(float(velocity_xy[0]), float(velocity_xy[1])) > MOVING_SPEED
    if name == "pedestrian":
        return "pedestrian.moving" if moving else "pedestrian.standing"
    if name in ("bicycle", "motorcycle"):
        return "cycle.with_rider" if moving else "cycle.without_rider"
    if moving:
        return "vehicle.moving"
    return "vehicle.stopped" if name == "bus" else "vehicle.parked"


# ------------------------------------------------------------------------------------------- poses
def sensor_poses_from_frames(frames: Iterable) -> dict[str, np.ndarray]:
    """{frame_id: Frame.pose} (sensor -> global) for frames of the nuScenes readers."""
    return {frame.frame_id: np.asarray(frame.pose, np.float64) for frame in frames}


def sensor_poses_from_tables(dataroot, version: str, axes: str = "pointmae") -> dict[str, np.ndarray]:
    """{sample token: LIDAR_TOP sensor -> global pose} from the devkit's JSON tables, in the axes the
    readers give (pointmae: x forward; "nuscenes": the raw LIDAR_TOP frame); no point file is read."""
    from pointmae.data.nuscenes import NuScenesTables, axes_transform
    tables = NuScenesTables(dataroot, version)
    to_sensor = axes_transform(axes)
    poses = {}
    for token in tables.sample_tokens:
        lidar2ego, ego2global = tables.keyframe_poses(token)
        poses[token] = ego2global @ lidar2ego @ invert_pose(to_sensor)
    return poses


def sensor_poses_from_info(info_path, axes: str = "pointmae") -> dict[str, np.ndarray]:
    """{sample token: sensor -> global pose} from an mmdet3d-style info pickle."""
    from pointmae.data.nuscenes import NuScenesInfoDataset, axes_transform
    dataset = NuScenesInfoDataset(info_path)
    to_sensor = axes_transform(axes)
    return {s["token"]: s["ego2global"] @ s["lidar2ego"] @ invert_pose(to_sensor) for s in dataset.samples}


def split_sample_tokens(dataroot, version: str, split: str) -> list[str]:
    """The sample tokens of a split: every sample of the split's scenes, in sample-table order.

    Predefined splits (train, val, test, mini_train, mini_val, ...) come from the devkit's scene
    lists (nuscenes.utils.splits); any other name is looked up, as the devkit does, in the custom
    split file <dataroot>/<version>/splits.json ({split name: [scene names]})."""
    table_dir = Path(dataroot) / version
    scenes_of_split = _custom_splits(table_dir)
    if split not in scenes_of_split:
        try:
            from nuscenes.utils.splits import create_splits_scenes
        except ImportError:
            predefined = {}
        else:
            predefined = create_splits_scenes()
        if split not in predefined:
            raise ValueError(f"split {split!r} is neither a predefined nuScenes split "
                             f"({sorted(predefined) or 'nuscenes-devkit not installed'}) nor in "
                             f"{table_dir / 'splits.json'} ({sorted(scenes_of_split) or 'absent'})")
        scenes_of_split = predefined
    wanted = set(scenes_of_split[split])
    scene_names = {row["token"]: row["name"] for row in _read_table(table_dir / "scene.json")}
    tokens = [row["token"] for row in _read_table(table_dir / "sample.json") if scene_names.get(row["scene_token"]) in wanted]
    if not tokens:
        raise ValueError(f"split {split!r}: none of its scenes is in {table_dir / 'scene.json'}")
    return tokens


def _custom_splits(table_dir: Path) -> dict:
    path = table_dir / "splits.json"
    if not path.is_file():
        return {}
    splits = _read_json(path)
    if not isinstance(splits, dict) or not all(isinstance(v, list) for v in splits.values()):
        raise DataError(path, "expected {split name: [scene names]}")
    return splits


def _read_json(path: Path):
    try:
        return json.loads(require_file(path).read_text())
    except json.JSONDecodeError as exc:
        raise DataError(path, f"invalid JSON ({exc.msg})", exc.lineno) from None


def _read_table(path: Path) -> list:
    rows = _read_json(path)
    if not isinstance(rows, list):
        raise DataError(path, f"expected a JSON list of records; got {type(rows).__name__}")
    return rows


# ------------------------------------------------------------------------------------------ writer
def prediction_to_sample_results(prediction: Mapping, pose: np.ndarray,
                                 max_boxes: int = MAX_BOXES_PER_SAMPLE) -> list[dict]:
    """One frame's prediction -> its list of sample_result dicts (global frame, top `max_boxes` by
    score, highest first; ties keep the input order).

    prediction: {"frame_id", "boxes" (M, 9), "scores" (M,), "names" (M,), optional "attributes" (M,)}.
    pose: (4, 4) sensor -> global transform of that frame."""
    token = prediction.get("frame_id")
    where = f"prediction for frame {token!r}"
    if not isinstance(token, str) or not token:
        raise ValueError(f"prediction frame_id must be a non-empty str (the sample token); got {token!r}")
    boxes = np.asarray(prediction.get("boxes"), dtype=np.float64)
    if boxes.size == 0:
        boxes = boxes.reshape(0, 9)
    if boxes.ndim != 2 or boxes.shape[1] != 9:
        raise ValueError(f"{where}: boxes must be (M, 9) (x, y, z, dx, dy, dz, heading, vx, vy); got shape "
                         f"{boxes.shape} (append zero velocities if the model predicts none)")
    m = len(boxes)
    scores = np.asarray(prediction.get("scores"), dtype=np.float64).reshape(-1)
    names = np.asarray(prediction.get("names"), dtype=str).reshape(-1)
    attributes = prediction.get("attributes")
    attributes = np.full(m, "", dtype=object) if attributes is None else np.asarray(attributes, dtype=object).reshape(-1)
    for key, value in (("scores", scores), ("names", names), ("attributes", attributes)):
        if len(value) != m:
            raise ValueError(f"{where}: {key} has {len(value)} entries for {m} boxes")
    problems = []
    bad_rows = np.flatnonzero(~np.isfinite(boxes).all(axis=1))
    if len(bad_rows):
        problems.append(f"boxes rows {bad_rows[:10].tolist()} have NaN/Inf values (all 9 columns must be finite)")
    bad_dims = np.flatnonzero((boxes[:, 3:6] <= 0).any(axis=1))
    if len(bad_dims):
        problems.append(f"boxes rows {bad_dims[:10].tolist()} have a size <= 0")
    bad_scores = np.flatnonzero(~((scores >= 0) & (scores <= 1)))
    if len(bad_scores):
        problems.append(f"scores {scores[bad_scores[:10]].tolist()} (at {bad_scores[:10].tolist()}) are outside [0, 1]")
    unknown = sorted(set(names.tolist()) - set(DETECTION_NAMES))
    if unknown:
        problems.append(f"names {unknown} are not nuScenes detection classes {DETECTION_NAMES} "
                        "(map categories with detection_name_of_category, drop the rest)")
    for i, (name, attribute) in enumerate(zip(names.tolist(), attributes)):
        if attribute not in (None, "") and name in ALLOWED_ATTRIBUTES and attribute not in ALLOWED_ATTRIBUTES[name]:
            problems.append(f"attributes[{i}] = {str(attribute)!r} is not allowed for {name!r} "
                            f"(allowed: {list(ALLOWED_ATTRIBUTES[name]) or 'none, use an empty string'})")
    if problems:
        raise SubmissionError(problems, where)

    order = np.argsort(-scores, kind="stable")[:max_boxes]
    world = transform_boxes(boxes[order], pose)
    rotation = yaw_to_quaternion(world[:, 6])
    kept_names = [str(n) for n in names[order]]
    kept_attributes = [str(a) if a not in (None, "") else default_attribute(n, v)
                       for n, a, v in zip(kept_names, attributes[order], world[:, 7:9])]
    # Plain Python floats (tolist) so that the JSON holds numbers, not numpy reprs.
    return [{"sample_token": token, "translation": t, "size": wlh, "rotation": q, "velocity": v,
             "detection_name": n, "detection_score": sc, "attribute_name": a}
            for t, wlh, q, v, n, sc, a in zip(world[:, :3].tolist(), world[:, [4, 3, 5]].tolist(),   # w, l, h
                                              rotation.tolist(), world[:, 7:9].tolist(), kept_names,
                                              scores[order].tolist(), kept_attributes)]


def build_results(predictions: Sequence[Mapping], poses: Mapping[str, np.ndarray], sample_tokens: Sequence[str],
                  meta: Mapping[str, bool] | None = None, max_boxes: int = MAX_BOXES_PER_SAMPLE,
                  name_map: Mapping[str, str] | None = None) -> dict:
    """The results dict for a split.

    predictions: one dict per frame (module docstring); frames of the split without a prediction get
        an empty list; a prediction for a token outside `sample_tokens`, or two for one token, is an error.
    poses: {sample token: (4, 4) sensor -> global} (sensor_poses_from_frames / _from_tables / _from_info).
    sample_tokens: every sample token of the split (split_sample_tokens).
    meta: the five use_* flags; default LiDAR only.
    name_map: optional {model class name: detection class} (e.g. {"Car": "car", "Cyclist": "bicycle"});
        names not in it are kept as they are."""
    meta = dict(LIDAR_ONLY_META if meta is None else meta)
    problems = _meta_problems(meta)
    if problems:
        raise SubmissionError(problems, "meta")
    tokens = list(dict.fromkeys(sample_tokens))
    results = {token: [] for token in tokens}
    seen = set()
    for i, prediction in enumerate(predictions):
        token = prediction.get("frame_id") if isinstance(prediction, Mapping) else None
        if token not in results:
            raise ValueError(f"predictions[{i}]: frame_id {token!r} is not a sample token of the split "
                             f"({len(tokens)} tokens)")
        if token in seen:
            raise ValueError(f"predictions[{i}]: a second prediction for frame_id {token!r}")
        seen.add(token)
        if token not in poses:
            raise ValueError(f"predictions[{i}]: no sensor -> global pose for frame_id {token!r}")
        if name_map:
            prediction = dict(prediction, names=[name_map.get(str(n), str(n)) for n in prediction.get("names", [])])
        results[token] = prediction_to_sample_results(prediction, np.asarray(poses[token], np.float64), max_boxes)
    return {"meta": meta, "results": results}


def write_results(path, results: Mapping, sample_tokens: Sequence[str] | None = None) -> Path:
    """Validate (against the split's tokens when given) and write the results JSON; returns the path."""
    validate_results(results, sample_tokens)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(results, allow_nan=False))
    tmp.replace(path)
    return path


def load_results(path) -> dict:
    return _read_json(Path(path))


# --------------------------------------------------------------------------------------- validator
def _meta_problems(meta) -> list[str]:
    if not isinstance(meta, Mapping):
        return [f"meta must be an object with {META_KEYS}; got {type(meta).__name__}"]
    problems = []
    missing, extra = [k for k in META_KEYS if k not in meta], sorted(set(meta) - set(META_KEYS))
    if missing:
        problems.append(f"meta lacks {missing}")
    if extra:
        problems.append(f"meta has unknown keys {extra} (allowed: {list(META_KEYS)})")
    problems += [f"meta[{k!r}] must be true or false; got {meta[k]!r}" for k in META_KEYS
                 if k in meta and not isinstance(meta[k], bool)]
    return problems


def _numbers(value, count: int) -> bool:
    """A list of `count` finite JSON numbers (int or float; bool is not a number here)."""
    if type(value) is not list or len(value) != count:
        return False
    for v in value:   # exact type tests: this runs for every box of a submission (millions)
        if type(v) is float:
            if not math.isfinite(v):
                return False
        elif type(v) is not int:
            return False
    return True


def _box_problems(token: str, index: int, box) -> list[str]:
    where = f"results[{token!r}][{index}]"
    if not isinstance(box, Mapping):
        return [f"{where} must be an object; got {type(box).__name__}"]
    missing, extra = [k for k in BOX_KEYS if k not in box], sorted(set(box) - set(BOX_KEYS))
    problems = []
    if missing:
        problems.append(f"{where} lacks {missing}")
    if extra:
        problems.append(f"{where} has unknown keys {extra}")
    if "sample_token" in box and box["sample_token"] != token:
        problems.append(f"{where}.sample_token is {box['sample_token']!r}, not the sample it is listed under")
    for key, count in (("translation", 3), ("size", 3), ("rotation", 4), ("velocity", 2)):
        if key in box and not _numbers(box[key], count):
            problems.append(f"{where}.{key} must be {count} finite numbers; got {box[key]!r}")
    if "size" in box and _numbers(box["size"], 3) and min(box["size"]) <= 0:
        problems.append(f"{where}.size (w, l, h) must be positive; got {box['size']}")
    if "rotation" in box and _numbers(box["rotation"], 4) and abs(math.hypot(*box["rotation"]) - 1.0) > 1e-3:
        problems.append(f"{where}.rotation must be a unit quaternion [w, x, y, z]; norm is "
                        f"{math.hypot(*box['rotation']):.6f}")
    name = box.get("detection_name")
    if "detection_name" in box and name not in DETECTION_NAMES:
        problems.append(f"{where}.detection_name {name!r} is not one of {DETECTION_NAMES}")
    score = box.get("detection_score")
    if "detection_score" in box and not (isinstance(score, (int, float)) and not isinstance(score, bool)
                                         and 0.0 <= score <= 1.0):
        problems.append(f"{where}.detection_score must be a number in [0, 1]; got {score!r}")
    attribute = box.get("attribute_name")
    if "attribute_name" in box and name in ALLOWED_ATTRIBUTES:
        allowed = ALLOWED_ATTRIBUTES[name]
        if (allowed and attribute not in allowed) or (not allowed and attribute != ""):
            problems.append(f"{where}.attribute_name {attribute!r} is not allowed for {name!r} "
                            f"(allowed: {list(allowed) if allowed else 'only the empty string'})")
    return problems


def find_problems(results, sample_tokens: Sequence[str] | None = None,
                  max_boxes: int = MAX_BOXES_PER_SAMPLE) -> list[str]:
    """Every violation of the results format / benchmark rules (an empty list when valid).

    sample_tokens: the split's tokens; when given, the results must hold exactly these."""
    if not isinstance(results, Mapping):
        return [f"the results file must be a JSON object with 'meta' and 'results'; got {type(results).__name__}"]
    problems = []
    missing, extra = [k for k in ("meta", "results") if k not in results], sorted(set(results) - {"meta", "results"})
    if missing:
        problems.append(f"top level lacks {missing}")
    if extra:
        problems.append(f"top level has unknown keys {extra}")
    if "meta" in results:
        problems += _meta_problems(results["meta"])
    samples = results.get("results")
    if "results" in results and not isinstance(samples, Mapping):
        problems.append(f"'results' must be an object {{sample_token: [boxes]}}; got {type(samples).__name__}")
        samples = None
    if samples is None:
        return problems
    if sample_tokens is not None:
        expected = set(sample_tokens)
        absent, unknown = sorted(expected - set(samples)), sorted(set(samples) - expected)
        if absent:
            problems.append(f"{len(absent)} sample token(s) of the split are missing, e.g. {absent[:3]} "
                            "(every sample needs an entry, an empty list when nothing was detected)")
        if unknown:
            problems.append(f"{len(unknown)} sample token(s) are not in the split, e.g. {unknown[:3]}")
    for token, boxes in samples.items():
        if not isinstance(boxes, list):
            problems.append(f"results[{token!r}] must be a list of boxes; got {type(boxes).__name__}")
            continue
        if len(boxes) > max_boxes:
            problems.append(f"results[{token!r}] has {len(boxes)} boxes; at most {max_boxes} are allowed")
        for i, box in enumerate(boxes):
            problems += _box_problems(token, i, box)
    return problems


def validate_results(results, sample_tokens: Sequence[str] | None = None, max_boxes: int = MAX_BOXES_PER_SAMPLE,
                     where: str = "nuScenes results") -> None:
    """Raise SubmissionError listing every problem of `results` (a dict, or a path to the JSON)."""
    if isinstance(results, (str, Path)):
        where = str(results)
        results = load_results(results)
    problems = find_problems(results, sample_tokens, max_boxes)
    if problems:
        raise SubmissionError(problems, where)


__all__ = ["DETECTION_NAMES", "ALLOWED_ATTRIBUTES", "CATEGORY_TO_DETECTION_NAME", "SubmissionError",
           "build_results", "default_attribute", "detection_name_of_category", "find_problems", "load_results",
           "prediction_to_sample_results", "sensor_poses_from_frames", "sensor_poses_from_info",
           "sensor_poses_from_tables", "split_sample_tokens", "validate_results", "write_results"]
