"""Waymo Open Dataset 3D detection submission files, written without TensorFlow or generated protos.

What the leaderboard takes (waymo-open-dataset, metrics/tools/create_submission.cc and the
submission instructions on waymo.com/open): ``Submission`` protos (protos/submission.proto), each
carrying the same metadata and a share of the predictions in ``inference_results``, an ``Objects``
proto (protos/metrics.proto). The official tool writes ``num_shards`` (default 4) files named
``<output><i>``, dealing the objects round robin, and the user packs them with tar + gzip.
It drops objects with score < 0.03 and NaN boxes and clamps box sizes to >= 1e-6; here a NaN box or a
negative size is an error instead (it is a bug upstream), and ``min_score`` keeps the 0.03 default.

Field numbers used (proto2, from the public .proto files):
  Label.Box (label.proto):    center_x 1, center_y 2, center_z 3 (double), width 4, length 5,
                              height 6, heading 7 (double; normalized to [-pi, pi))
  Label:                      box 1, type 3 (enum: 1 VEHICLE, 2 PEDESTRIAN, 3 SIGN, 4 CYCLIST), id 4,
                              detection_difficulty_level 5, num_lidar_points_in_box 7 (ground truth only)
  Object (metrics.proto):     object 1 (Label), score 2 (float), context_name 4,
                              frame_timestamp_micros 5 (int64)
  Objects:                    objects 1 (repeated Object)
  Submission (submission.proto): task 1 (enum, DETECTION_3D = 2), unique_method_name 2, authors 3
                              (repeated), affiliation 4, description 5, method_link 6,
                              number_past_frames_exclude_current 9, number_future_frames_exclude_current 10,
                              inference_results 11 (Objects), sensor_type 12 (enum), account_name 13,
                              object_types 14 (repeated Label.Type), latency_second 15 (float)

Boxes: pointmae's sensor frame for Waymo is the vehicle frame and its (dx, dy, dz) are Waymo's
(length, width, height), so boxes go in unchanged (pointmae/data/frame.py, pointmae/data/waymo.py).
"""
from __future__ import annotations

import gzip
import io
import math
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pointmae.data.boxes import wrap_angle
from pointmae.data.errors import DataError, require_file
from pointmae.data.frame import Frame
from pointmae.data.tfrecord import as_double, as_float, parse_message, signed64
from pointmae.data.waymo import LABEL_TYPES
from pointmae.eval.waymo import check_predictions
from pointmae.submission import protobuf_wire as wire

TYPE_IDS = {name: type_id for type_id, name in LABEL_TYPES.items() if type_id != 0}
TASKS = {"DETECTION_3D": 2}
SENSOR_TYPES = {"LIDAR_ALL": 1, "LIDAR_TOP": 2, "CAMERA_ALL": 3, "CAMERA_LIDAR_TOP": 4, "CAMERA_LIDAR_ALL": 5}
DEFAULT_MIN_SCORE = 0.03     # create_submission.cc drops objects below this score
DEFAULT_NUM_SHARDS = 4       # create_submission.cc --num_shards default


@dataclass
class WaymoSubmissionMeta:
    """The Submission proto's metadata. account_name: the e-mail registered at waymo.com/open;
    unique_method_name: short, unique per account (only the latest result of a name is shown)."""
    account_name: str
    unique_method_name: str
    authors: list = field(default_factory=list)
    affiliation: str = ""
    description: str = ""
    method_link: str = ""
    sensor_type: str = "LIDAR_ALL"
    number_past_frames_exclude_current: int = 0
    number_future_frames_exclude_current: int = 0
    object_types: tuple = ("Vehicle", "Pedestrian", "Cyclist")
    latency_second: float | None = None
    task: str = "DETECTION_3D"

    def check(self) -> None:
        problems = []
        if "@" not in self.account_name:
            problems.append(f"account_name must be the registered e-mail address; got {self.account_name!r}")
        if not self.unique_method_name.strip():
            problems.append("unique_method_name must not be empty")
        if self.sensor_type not in SENSOR_TYPES:
            problems.append(f"sensor_type must be one of {sorted(SENSOR_TYPES)}; got {self.sensor_type!r}")
        if self.task not in TASKS:
            problems.append(f"task must be one of {sorted(TASKS)}; got {self.task!r}")
        bad_types = [t for t in self.object_types if t not in TYPE_IDS]
        if bad_types or not self.object_types:
            problems.append(f"object_types must be a non-empty subset of {sorted(TYPE_IDS)}; got {list(self.object_types)}")
        for name in ("number_past_frames_exclude_current", "number_future_frames_exclude_current"):
            if int(getattr(self, name)) < 0:
                problems.append(f"{name} must be >= 0; got {getattr(self, name)}")
        if problems:
            raise ValueError("invalid Waymo submission metadata: " + "; ".join(problems))

    def encode(self, inference_results: bytes) -> bytes:
        """A serialized Submission proto with this metadata and ``inference_results`` (Objects bytes)."""
        self.check()
        out = wire.int_field(1, TASKS[self.task]) + wire.string_field(2, self.unique_method_name)
        out += b"".join(wire.string_field(3, a) for a in self.authors)
        out += wire.string_field(4, self.affiliation) + wire.string_field(5, self.description)
        out += wire.string_field(6, self.method_link)
        out += wire.int_field(9, self.number_past_frames_exclude_current)
        out += wire.int_field(10, self.number_future_frames_exclude_current)
        out += wire.message_field(11, inference_results)
        out += wire.int_field(12, SENSOR_TYPES[self.sensor_type]) + wire.string_field(13, self.account_name)
        out += b"".join(wire.int_field(14, TYPE_IDS[t]) for t in self.object_types)
        if self.latency_second is not None:
            out += wire.float_field(15, self.latency_second)
        return out


# ------------------------------------------------------------------------------- Objects
def encode_object(box, type_id: int, context_name: str, timestamp_micros: int, score: float | None = None,
                  object_id: str | None = None, difficulty: int | None = None, num_points: int | None = None) -> bytes:
    """One serialized ``Object``.

    Args:
        box: (>=7,) x, y, z, length (dx), width (dy), height (dz), heading in the vehicle frame.
        type_id: Label.Type (1 vehicle, 2 pedestrian, 3 sign, 4 cyclist).
        score: prediction confidence (omitted for ground truth, whose proto default is 1.0).
        difficulty, num_points: ground-truth only (Label fields 5 and 7).
    """
    x, y, z, length, width, height, heading = (float(v) for v in box[:7])
    label_box = (wire.double_field(1, x) + wire.double_field(2, y) + wire.double_field(3, z)
                 + wire.double_field(4, width) + wire.double_field(5, length) + wire.double_field(6, height)
                 + wire.double_field(7, float(wrap_angle(heading))))  # Waymo: [-pi, pi)
    label = wire.message_field(1, label_box) + wire.int_field(3, type_id)
    if object_id is not None:
        label += wire.string_field(4, object_id)
    if difficulty is not None:
        label += wire.int_field(5, difficulty)
    if num_points is not None:
        label += wire.int_field(7, num_points)
    out = wire.message_field(1, label)
    if score is not None:
        out += wire.float_field(2, score)
    return out + wire.string_field(4, context_name) + wire.int_field(5, timestamp_micros)


def frame_keys(frames) -> dict:
    """{frame_id: (context_name, timestamp_micros)} of the split's Frames (pointmae.data.waymo
    readers put both in Frame.meta). Raises ValueError on a frame without them or a repeated frame."""
    keys, seen = {}, {}
    frames = list(frames)
    if not frames:
        raise ValueError("the split has no frame; expected the Frames of every frame the benchmark evaluates")
    for i, frame in enumerate(frames):
        meta = frame.meta
        if "context_name" not in meta or "timestamp_micros" not in meta:
            raise ValueError(f"split frame {i} ({frame.frame_id!r}) has no context_name / timestamp_micros in "
                             "its meta; read it with pointmae.data.waymo")
        key = (str(meta["context_name"]), int(meta["timestamp_micros"]))
        frame_id = str(frame.frame_id)
        if frame_id in keys or key in seen:
            raise ValueError(f"split frame {i} ({frame_id!r}, {key}) appears more than once in the split")
        keys[frame_id], seen[key] = key, frame_id
    return keys


def split_frames_from_list(path) -> list:
    """Label-less Frames of a split listed in a text file, one frame a line:
    ``context_name timestamp_micros [frame_id]`` ('#' starts a comment). frame_id defaults to
    ``<context_name>_<timestamp_micros>``, the id pointmae.data.waymo.read_tfrecord_frames gives."""
    path = require_file(path)
    frames = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split("#", 1)[0].split()
        if not parts:
            continue
        if len(parts) not in (2, 3) or not parts[1].lstrip("-").isdigit():
            raise DataError(path, f"expected 'context_name timestamp_micros [frame_id]'; got {line!r}", line=number)
        frame_id = parts[2] if len(parts) == 3 else f"{parts[0]}_{parts[1]}"
        frames.append(_label_less_frame(frame_id, parts[0], int(parts[1])))
    return frames


def split_frames_from_converted(root) -> list:
    """Label-less Frames of every converted frame (.npz, tools/convert_waymo.py) below ``root``, with
    the frame ids pointmae.data.waymo.read_converted_frame gives; reads only the small keys."""
    files = sorted(Path(root).rglob("*.npz"))
    if not files:
        raise DataError(root, "no converted frames (*.npz) below this folder")
    frames = []
    for file in files:
        with np.load(file, allow_pickle=False) as data:
            missing = [k for k in ("context_name", "timestamp_micros") if k not in data]
            if missing:
                raise DataError(file, f"missing keys {missing}; expected a frame written by tools/convert_waymo.py")
            context, timestamp = str(data["context_name"]), int(data["timestamp_micros"])
            index = int(data["frame_index"]) if "frame_index" in data else -1
        frames.append(_label_less_frame(f"{context}_{index:04d}", context, timestamp))
    return frames


def _label_less_frame(frame_id, context_name, timestamp_micros):
    return Frame(points=np.zeros((0, 3), np.float32), channels=("x", "y", "z"), frame_id=frame_id,
                 sequence_id=context_name, timestamp=timestamp_micros / 1e6,
                 meta={"context_name": context_name, "timestamp_micros": timestamp_micros})


# KITTI-style names (the synthetic world, KITTI) -> Waymo types; unmapped names are dropped.
KITTI_TO_WAYMO = {"Car": "Vehicle", "Van": "Vehicle", "Truck": "Vehicle", "Pedestrian": "Pedestrian",
                  "Cyclist": "Cyclist"}


def as_waymo_frames(frames, class_map=KITTI_TO_WAYMO) -> list:
    """Frames of another source (e.g. the synthetic world) as Waymo-style ground truth: names mapped by
    ``class_map`` (others dropped), context name = sequence_id (else frame_id), timestamp_micros =
    round(timestamp * 1e6), difficulty unset (so it follows the <= 5 points rule). box_meta must have
    "num_points". Frames that already carry a context name keep it."""
    out = []
    for frame in frames:
        keep = np.isin(frame.names, list(class_map))
        selected = frame.select_boxes(keep)
        meta = dict(frame.meta)
        meta.setdefault("context_name", str(frame.sequence_id or frame.frame_id))
        meta.setdefault("timestamp_micros", int(round(float(frame.timestamp) * 1e6)))
        box_meta = dict(selected.box_meta)
        box_meta.setdefault("difficulty", np.zeros(len(selected.boxes), np.int64))
        out.append(Frame(points=frame.points, channels=frame.channels, pose=frame.pose, timestamp=frame.timestamp,
                         frame_id=frame.frame_id, sequence_id=frame.sequence_id, boxes=selected.boxes,
                         names=np.array([class_map[n] for n in selected.names], dtype=str), box_meta=box_meta,
                         meta=meta))
    return out


def as_waymo_predictions(predictions, class_map=KITTI_TO_WAYMO) -> list:
    """Predictions (the shared contract) with names mapped by ``class_map``; others dropped."""
    out = []
    for p in predictions:
        names = np.asarray(p["names"], dtype=str)
        keep = np.isin(names, list(class_map))
        boxes = np.asarray(p["boxes"], np.float64)
        boxes = boxes.reshape(0, 7) if boxes.size == 0 else boxes[:, :7]     # (M, 9) with velocities too
        out.append({"frame_id": p["frame_id"], "boxes": boxes[keep],
                    "scores": np.asarray(p["scores"], np.float64)[keep],
                    "names": np.array([class_map[n] for n in names[keep]], dtype=str)})
    return out


def encode_prediction_objects(predictions, split_frames, object_types=("Vehicle", "Pedestrian", "Cyclist"),
                              min_score: float = DEFAULT_MIN_SCORE) -> list[bytes]:
    """Serialized ``Object`` protos (one bytes string each) of predictions in the shared contract
    (pointmae.eval.waymo.evaluate_waymo), in prediction order, with the context name and timestamp
    of their frame. Objects with score < min_score are left out (as the official tool does)."""
    keys = frame_keys(split_frames)
    by_frame = check_predictions(predictions)
    stray = sorted(set(by_frame) - set(keys))
    if stray:
        raise ValueError(f"{len(stray)} prediction frame ids are not in the split, e.g. {stray[:5]}")
    objects = []
    for frame_id, (boxes, scores, names) in by_frame.items():
        bad = sorted(set(names) - set(object_types))
        if bad:
            raise ValueError(f"frame {frame_id!r}: names {bad} are not among the submission's object_types {list(object_types)}")
        if ((scores < 0) | (scores > 1)).any():
            raise ValueError(f"frame {frame_id!r}: scores must be in [0, 1]; got range [{scores.min()}, {scores.max()}]")
        if (boxes[:, 3:6] < 0).any():
            raise ValueError(f"frame {frame_id!r}: box sizes must be >= 0")
        context_name, timestamp = keys[frame_id]
        for box, score, name in zip(boxes, scores, names):
            if score < min_score:
                continue
            sized = box.copy()
            sized[3:6] = np.maximum(sized[3:6], 1e-6)     # create_submission.cc clamps sizes likewise
            objects.append(encode_object(sized, TYPE_IDS[name], context_name, timestamp, score=float(score)))
    return objects


def encode_ground_truth_objects(frames, classes=None) -> bytes:
    """A serialized ``Objects`` of the frames' labels (type, box, id, detection difficulty, number
    of LiDAR points), for the official metrics tools (compute_detection_metrics_main, the
    cross-check in tests/eval/test_waymo_eval.py)."""
    objects = []
    for frame in frames:
        context_name, timestamp = frame.meta["context_name"], int(frame.meta["timestamp_micros"])
        meta = frame.box_meta
        for i, (box, name) in enumerate(zip(frame.boxes, frame.names)):
            if name not in TYPE_IDS or (classes is not None and name not in classes):
                continue
            objects.append(encode_object(
                box, TYPE_IDS[name], context_name, timestamp,
                object_id=str(meta["id"][i]) if "id" in meta else None,
                difficulty=int(meta["difficulty"][i]) if "difficulty" in meta else None,
                num_points=int(meta["num_points"][i]) if "num_points" in meta else None))
    return b"".join(wire.message_field(1, o) for o in objects)


def write_objects_file(path, object_protos: list[bytes]) -> Path:
    """One serialized ``Objects`` file (the input format of the official tools)."""
    path = Path(path)
    path.write_bytes(b"".join(wire.message_field(1, o) for o in object_protos))
    return path


# ------------------------------------------------------------------------------- writer
def _deterministic_tar_gz(path: Path, members: dict) -> None:
    """tar.gz of {name: bytes} with fixed times and owners, so that equal input gives equal bytes."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(members):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(members[name]), 0, 0o644
            tar.addfile(info, io.BytesIO(members[name]))
    with open(path, "wb") as f, gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0) as gz:
        gz.write(raw.getvalue())


def write_waymo_submission(predictions, split_frames, out_dir, meta: WaymoSubmissionMeta,
                           num_shards: int = DEFAULT_NUM_SHARDS, min_score: float = DEFAULT_MIN_SCORE) -> Path:
    """Writes ``<out_dir>/<name><i>`` for i < num_shards (Submission protos, objects dealt round robin)
    and packs them into ``<out_dir>/<name>.tar.gz``, the file to upload. ``name`` is the
    unique_method_name with characters other than letters, digits, '-', '_', '.' replaced by '_'.

    Args:
        predictions: the shared contract (see pointmae.eval.waymo.evaluate_waymo).
        split_frames: Frames of the whole split (labels may be empty), for context names and timestamps.
        meta: WaymoSubmissionMeta.
    Returns:
        the path of the .tar.gz.
    """
    meta.check()
    if int(num_shards) < 1:
        raise ValueError(f"num_shards must be >= 1; got {num_shards}")
    objects = encode_prediction_objects(predictions, split_frames, meta.object_types, min_score)
    name = re.sub(r"[^A-Za-z0-9._-]", "_", meta.unique_method_name.strip())
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shards = {}
    for i in range(num_shards):
        payload = b"".join(wire.message_field(1, o) for o in objects[i::num_shards])
        shards[f"{name}{i}"] = meta.encode(payload)
        (out_dir / f"{name}{i}").write_bytes(shards[f"{name}{i}"])
    archive = out_dir / f"{name}.tar.gz"
    _deterministic_tar_gz(archive, shards)
    return archive


# ------------------------------------------------------------------------------- decoding
def _string(fields, number, default=""):
    return fields[number][-1].decode("utf-8") if number in fields else default


def decode_object(buf: bytes) -> dict:
    """A serialized Object as {"box": (7,) x, y, z, length, width, height, heading, "type", "score",
    "context_name", "timestamp_micros"} (score None when absent)."""
    o = parse_message(buf)
    label = parse_message(o[1][-1]) if 1 in o else {}
    box = parse_message(label[1][-1]) if 1 in label else {}
    get = lambda n: as_double(box[n][-1]) if n in box else float("nan")  # noqa: E731
    return {"box": np.array([get(1), get(2), get(3), get(5), get(4), get(6), get(7)]),
            "type": label.get(3, [0])[-1], "score": as_float(o[2][-1]) if 2 in o else None,
            "context_name": _string(o, 4), "timestamp_micros": signed64(o[5][-1]) if 5 in o else None}


def decode_submission(buf: bytes) -> dict:
    """A serialized Submission as a dict of its metadata and "objects" (decoded Objects)."""
    s = parse_message(buf)
    results = parse_message(s[11][-1]) if 11 in s else {}
    return {"task": s.get(1, [0])[-1], "unique_method_name": _string(s, 2),
            "authors": [a.decode("utf-8") for a in s.get(3, [])], "affiliation": _string(s, 4),
            "description": _string(s, 5), "method_link": _string(s, 6),
            "number_past_frames_exclude_current": s.get(9, [0])[-1],
            "number_future_frames_exclude_current": s.get(10, [0])[-1],
            "sensor_type": s.get(12, [0])[-1], "account_name": _string(s, 13),
            "object_types": list(s.get(14, [])),
            "latency_second": as_float(s[15][-1]) if 15 in s else None,
            "objects": [decode_object(o) for o in results.get(1, [])]}


def read_submission_archive(path) -> dict:
    """{member name: decoded Submission} of a .tar.gz written by write_waymo_submission (or by hand)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: submission archive not found")
    shards = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar.getmembers():
                if member.isfile():
                    shards[member.name] = decode_submission(tar.extractfile(member).read())
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ValueError(f"{path}: not a readable tar.gz ({exc})") from None
    except (ValueError, IndexError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: a member is not a valid Submission proto ({exc})") from None
    return shards


# ------------------------------------------------------------------------------- validator
def validate_waymo_submission(path, split_frames, require_all_frames: bool = False) -> dict:
    """Checks a packed submission against the benchmark's rules and the split.

    Checks: at least one shard, every shard a Submission with the same metadata; task DETECTION_3D;
    account_name an e-mail, unique_method_name set, a valid sensor type and object types; every object
    of a frame of the split (context name + timestamp), of one of the declared object types, score
    finite in [0, 1], box finite with positive sizes and heading in [-pi, pi]. Frames of the split
    without any object are reported (an error with require_all_frames=True: a frame with no
    detection at all is legal but usually a pipeline bug).

    Returns:
        {"num_shards", "num_objects", "objects_per_type", "frames_with_objects",
         "frames_without_objects" (list of (context_name, timestamp)), "meta"}.
    Raises:
        ValueError listing the first problems found.
    """
    split = set(frame_keys(split_frames).values())
    shards = read_submission_archive(path)
    problems = []
    if not shards:
        raise ValueError(f"{path}: the archive holds no shard")
    metas = {name: {k: v for k, v in s.items() if k != "objects"} for name, s in shards.items()}
    first_name = sorted(metas)[0]
    meta = metas[first_name]
    for name, m in metas.items():
        if m != meta:
            problems.append(f"shard {name} has metadata different from shard {first_name}")
    if meta["task"] != TASKS["DETECTION_3D"]:
        problems.append(f"task is {meta['task']}, expected DETECTION_3D ({TASKS['DETECTION_3D']})")
    if "@" not in meta["account_name"]:
        problems.append(f"account_name {meta['account_name']!r} is not an e-mail address")
    if not meta["unique_method_name"]:
        problems.append("unique_method_name is empty")
    if meta["sensor_type"] not in SENSOR_TYPES.values():
        problems.append(f"sensor_type {meta['sensor_type']} is not a valid Submission.SensorType")
    declared = set(meta["object_types"]) or set(TYPE_IDS.values())   # absent = all types (submission.proto)
    if not declared <= set(TYPE_IDS.values()):
        problems.append(f"object_types {sorted(declared)} include invalid Label.Type values")
    seen_frames, per_type, num_objects = set(), {}, 0
    for name in sorted(shards):
        for j, o in enumerate(shards[name]["objects"]):
            num_objects += 1
            where = f"{name} object {j}"
            key = (o["context_name"], o["timestamp_micros"])
            if key not in split:
                problems.append(f"{where}: frame {key} is not in the split")
            if o["type"] not in declared:
                problems.append(f"{where}: type {o['type']} is not among the object types {sorted(declared)}")
            score = o["score"]
            if score is None or not (math.isfinite(score) and 0.0 <= score <= 1.0):
                problems.append(f"{where}: score {score} is not in [0, 1]")
            box = o["box"]
            if not np.isfinite(box).all():
                problems.append(f"{where}: box {box.tolist()} is not finite")
            elif (box[3:6] <= 0).any() or abs(box[6]) > math.pi + 1e-9:
                problems.append(f"{where}: box sizes must be > 0 and heading in [-pi, pi]; got {box.tolist()}")
            seen_frames.add(key)
            per_type[LABEL_TYPES.get(o["type"], str(o["type"]))] = per_type.get(LABEL_TYPES.get(o["type"], str(o["type"])), 0) + 1
            if len(problems) > 20:
                break
    missing = sorted(split - seen_frames)
    if require_all_frames and missing:
        problems.append(f"{len(missing)} frames of the split have no object, e.g. {missing[:3]}")
    if problems:
        raise ValueError(f"{path}: invalid Waymo submission ({len(problems)} problems): " + "; ".join(problems[:20]))
    return {"num_shards": len(shards), "num_objects": num_objects, "objects_per_type": per_type,
            "frames_with_objects": len(seen_frames), "frames_without_objects": missing, "meta": meta}
