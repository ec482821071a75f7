"""Waymo submission files (pointmae.submission.waymo): wire encoding, decoding by an independent
parser (the protobuf package with descriptors built here from the public .proto field numbers), the
packed archive, and the validator's rules."""
import importlib.util
import io
import json
import os
import subprocess
import sys
import tarfile

import numpy as np
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from pointmae.data.frame import Frame
from pointmae.data.tfrecord import parse_message
from pointmae.data.waymo import read_tfrecord_frames
from pointmae.submission import protobuf_wire as wire
from pointmae.submission.waymo import (WaymoSubmissionMeta, encode_object, read_submission_archive,
                                       validate_waymo_submission, write_waymo_submission)

SMALL = "waymo/tfrecord/mmdet3d_val.tfrecord"
F = descriptor_pb2.FieldDescriptorProto


def _messages():
    """Message classes for Label.Box, Label, Object, Objects and Submission, declared here from
    label.proto / metrics.proto / submission.proto (only the fields the writer uses)."""
    fdp = descriptor_pb2.FileDescriptorProto(name="waymo_test.proto", package="wtest", syntax="proto2")

    def add(msg, name, number, kind, label=F.LABEL_OPTIONAL, type_name=None):
        field = msg.field.add(name=name, number=number, type=kind, label=label)
        if type_name:
            field.type_name = type_name

    label = fdp.message_type.add(name="Label")
    box = label.nested_type.add(name="Box")
    for name, number in [("center_x", 1), ("center_y", 2), ("center_z", 3), ("width", 4), ("length", 5),
                         ("height", 6), ("heading", 7)]:
        add(box, name, number, F.TYPE_DOUBLE)
    add(label, "box", 1, F.TYPE_MESSAGE, type_name=".wtest.Label.Box")
    add(label, "type", 3, F.TYPE_INT32)
    add(label, "id", 4, F.TYPE_STRING)
    add(label, "detection_difficulty_level", 5, F.TYPE_INT32)
    add(label, "num_lidar_points_in_box", 7, F.TYPE_INT32)
    obj = fdp.message_type.add(name="Object")
    add(obj, "object", 1, F.TYPE_MESSAGE, type_name=".wtest.Label")
    add(obj, "score", 2, F.TYPE_FLOAT)
    add(obj, "context_name", 4, F.TYPE_STRING)
    add(obj, "frame_timestamp_micros", 5, F.TYPE_INT64)
    objs = fdp.message_type.add(name="Objects")
    add(objs, "objects", 1, F.TYPE_MESSAGE, F.LABEL_REPEATED, ".wtest.Object")
    sub = fdp.message_type.add(name="Submission")
    for name, number, kind in [("task", 1, F.TYPE_INT32), ("unique_method_name", 2, F.TYPE_STRING),
                               ("affiliation", 4, F.TYPE_STRING), ("description", 5, F.TYPE_STRING),
                               ("method_link", 6, F.TYPE_STRING), ("number_past_frames_exclude_current", 9, F.TYPE_INT32),
                               ("number_future_frames_exclude_current", 10, F.TYPE_INT32),
                               ("sensor_type", 12, F.TYPE_INT32), ("account_name", 13, F.TYPE_STRING),
                               ("latency_second", 15, F.TYPE_FLOAT)]:
        add(sub, name, number, kind)
    add(sub, "authors", 3, F.TYPE_STRING, F.LABEL_REPEATED)
    add(sub, "inference_results", 11, F.TYPE_MESSAGE, type_name=".wtest.Objects")
    add(sub, "object_types", 14, F.TYPE_INT32, F.LABEL_REPEATED)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    get = lambda n: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"wtest.{n}"))  # noqa: E731
    return get("Objects"), get("Submission")


Objects, Submission = _messages()


def split(n=4):
    return [Frame(points=np.zeros((0, 3), np.float32), channels=("x", "y", "z"), frame_id=f"seg-{i}",
                  meta={"context_name": f"ctx_{i // 2}", "timestamp_micros": 1_550_000_000_000_000 + i})
            for i in range(n)]


def predictions(frames, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for frame in frames:
        m = int(rng.integers(1, 6))
        boxes = np.c_[rng.uniform(-50, 50, (m, 3)), rng.uniform(0.5, 5, (m, 3)), rng.uniform(-6, 6, m)]
        out.append({"frame_id": frame.frame_id, "boxes": boxes, "scores": rng.uniform(0, 1, m),
                    "names": rng.choice(["Vehicle", "Pedestrian", "Cyclist"], m)})
    return out


META = WaymoSubmissionMeta(account_name="someone@example.com", unique_method_name="pointmae voxel-mae",
                           authors=["A. Author", "B. Author"], affiliation="Lab", description="test",
                           method_link="https://example.com", number_past_frames_exclude_current=2,
                           latency_second=0.25)


def test_wire_primitives():
    assert wire.varint(0) == b"\x00" and wire.varint(300) == b"\xac\x02"        # protobuf.dev example
    assert wire.varint(-1) == b"\xff" * 9 + b"\x01"                               # int64 -1: 10 bytes
    assert parse_message(wire.int_field(5, -1))[5] == [(1 << 64) - 1]
    assert parse_message(wire.string_field(2, "héllo") + wire.double_field(1, 2.5)) == {
        2: ["héllo".encode()], 1: [np.float64(2.5).tobytes()]}
    with pytest.raises(ValueError, match="64 bits"):
        wire.varint(1 << 64)
    with pytest.raises(ValueError, match="field number"):
        wire.key(0, 0)


def test_object_decodes_with_protobuf():
    buf = encode_object([1.0, -2.0, 0.5, 4.5, 2.0, 1.6, 3.5], 4, "ctx", -5, score=0.75, object_id="abc",
                        difficulty=2, num_points=17)
    objects = Objects.FromString(wire.message_field(1, buf))
    o = objects.objects[0]
    b = o.object.box
    assert (b.center_x, b.center_y, b.center_z, b.length, b.width, b.height) == (1.0, -2.0, 0.5, 4.5, 2.0, 1.6)
    assert b.heading == pytest.approx(3.5 - 2 * np.pi)            # normalized to [-pi, pi)
    assert (o.object.type, o.object.id, o.object.detection_difficulty_level, o.object.num_lidar_points_in_box) == \
        (4, "abc", 2, 17)
    assert (o.score, o.context_name, o.frame_timestamp_micros) == (0.75, "ctx", -5)


def test_submission_round_trip(tmp_path):
    frames = split()
    preds = predictions(frames)
    archive = write_waymo_submission(preds, frames, tmp_path, META, num_shards=3, min_score=0.0)
    assert archive.name == "pointmae_voxel-mae.tar.gz"
    with tarfile.open(archive, "r:gz") as tar:
        names = sorted(tar.getnames())
        shards = {n: Submission.FromString(tar.extractfile(n).read()) for n in names}
    assert names == [f"pointmae_voxel-mae{i}" for i in range(3)]
    for s in shards.values():
        assert (s.task, s.account_name, s.unique_method_name, list(s.authors)) == \
            (2, "someone@example.com", "pointmae voxel-mae", ["A. Author", "B. Author"])
        assert (s.sensor_type, s.number_past_frames_exclude_current, list(s.object_types)) == (1, 2, [1, 2, 4])
        assert s.latency_second == pytest.approx(0.25)
    # round robin: shard i holds objects i, i + 3, ...; together exactly the predictions in order
    total = sum(len(p["scores"]) for p in preds)
    counts = [len(shards[n].inference_results.objects) for n in names]
    assert sum(counts) == total and max(counts) - min(counts) <= 1
    merged = [None] * total
    for i, n in enumerate(names):
        for j, o in enumerate(shards[n].inference_results.objects):
            merged[i + 3 * j] = o
    keys = {f.frame_id: (f.meta["context_name"], f.meta["timestamp_micros"]) for f in frames}
    type_ids = {"Vehicle": 1, "Pedestrian": 2, "Cyclist": 4}
    k = 0
    for p in preds:
        for box, score, name in zip(p["boxes"], p["scores"], p["names"]):
            o = merged[k]
            k += 1
            got = o.object.box
            np.testing.assert_allclose([got.center_x, got.center_y, got.center_z, got.length, got.width, got.height],
                                       box[:6], rtol=0, atol=0)
            assert np.cos(got.heading - box[6]) == pytest.approx(1.0) and -np.pi <= got.heading < np.pi
            assert o.score == pytest.approx(score, abs=1e-7) and o.object.type == type_ids[name]
            assert (o.context_name, o.frame_timestamp_micros) == keys[p["frame_id"]]
    report = validate_waymo_submission(archive, frames, require_all_frames=True)
    assert report["num_objects"] == total and report["frames_with_objects"] == len(frames)
    assert report["meta"]["unique_method_name"] == "pointmae voxel-mae"
    # the repo's own decoder agrees with protobuf's
    ours = read_submission_archive(archive)
    assert sum(len(s["objects"]) for s in ours.values()) == total


def test_written_bytes_are_deterministic_and_low_scores_dropped(tmp_path):
    frames = split()
    preds = predictions(frames, seed=3)
    a = write_waymo_submission(preds, frames, tmp_path / "a", META).read_bytes()
    b = write_waymo_submission(preds, frames, tmp_path / "b", META).read_bytes()
    assert a == b
    report = validate_waymo_submission(tmp_path / "a" / "pointmae_voxel-mae.tar.gz", frames)
    assert report["num_shards"] == 4
    assert report["num_objects"] == sum(int((p["scores"] >= 0.03).sum()) for p in preds)


def test_writer_rejects_bad_predictions(tmp_path):
    frames = split()
    preds = predictions(frames)
    bad = [dict(preds[0], scores=preds[0]["scores"] + 1.5)] + preds[1:]
    with pytest.raises(ValueError, match=r"scores must be in \[0, 1\]"):
        write_waymo_submission(bad, frames, tmp_path, META)
    with pytest.raises(ValueError, match="not in the split"):
        write_waymo_submission(preds + [dict(preds[0], frame_id="nowhere")], frames, tmp_path, META)
    with pytest.raises(ValueError, match="object_types"):
        write_waymo_submission([dict(preds[0], names=np.full(len(preds[0]["names"]), "Sign"))], frames, tmp_path, META)
    with pytest.raises(ValueError, match="account_name"):
        write_waymo_submission(preds, frames, tmp_path, WaymoSubmissionMeta("nobody", "m"))
    with pytest.raises(ValueError, match="more than once"):
        write_waymo_submission(preds, frames + frames[:1], tmp_path, META)


def _pack(path, shards):
    with tarfile.open(path, "w:gz") as tar:
        for name, data in shards.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_validator_rules(tmp_path):
    frames = split(2)
    ctx, ts = frames[0].meta["context_name"], frames[0].meta["timestamp_micros"]
    good = encode_object([0, 0, 0, 4, 2, 1.5, 0], 1, ctx, ts, score=0.5)
    objects = lambda *objs: b"".join(wire.message_field(1, o) for o in objs)  # noqa: E731
    ok = _pack(tmp_path / "ok.tar.gz", {"m0": META.encode(objects(good))})
    report = validate_waymo_submission(ok, frames)
    assert report["frames_without_objects"] == [(frames[1].meta["context_name"], frames[1].meta["timestamp_micros"])]
    with pytest.raises(ValueError, match="have no object"):
        validate_waymo_submission(ok, frames, require_all_frames=True)
    cases = {
        "not in the split": encode_object([0, 0, 0, 4, 2, 1.5, 0], 1, ctx, ts + 99, score=0.5),
        r"score 1\.5": encode_object([0, 0, 0, 4, 2, 1.5, 0], 1, ctx, ts, score=1.5),
        "not among the object types": encode_object([0, 0, 0, 4, 2, 1.5, 0], 3, ctx, ts, score=0.5),
        "not finite": encode_object([np.nan, 0, 0, 4, 2, 1.5, 0], 1, ctx, ts, score=0.5),
        "sizes must be > 0": encode_object([0, 0, 0, 0, 2, 1.5, 0], 1, ctx, ts, score=0.5),
    }
    for i, (message, obj) in enumerate(cases.items()):
        with pytest.raises(ValueError, match=message):
            validate_waymo_submission(_pack(tmp_path / f"bad{i}.tar.gz", {"m0": META.encode(objects(good, obj))}), frames)
    other = WaymoSubmissionMeta("someone@example.com", "another name")
    with pytest.raises(ValueError, match="metadata different"):
        validate_waymo_submission(_pack(tmp_path / "mixed.tar.gz", {"m0": META.encode(objects(good)),
                                                                    "m1": other.encode(b"")}), frames)
    no_account = wire.int_field(1, 2) + wire.string_field(2, "m") + wire.message_field(11, objects(good))
    with pytest.raises(ValueError, match="e-mail"):
        validate_waymo_submission(_pack(tmp_path / "anon.tar.gz", {"m0": no_account}), frames)
    (tmp_path / "junk.tar.gz").write_bytes(b"not a tarball")
    with pytest.raises(ValueError, match="not a readable tar.gz"):
        validate_waymo_submission(tmp_path / "junk.tar.gz", frames)


def test_real_split_frames(shared_data, tmp_path):
    frames = read_tfrecord_frames(shared_data / SMALL)
    frame = frames[0]
    vehicles = frame.names == "Vehicle"
    preds = [{"frame_id": frame.frame_id, "boxes": frame.boxes[vehicles, :7], "scores": np.full(vehicles.sum(), 0.9),
              "names": frame.names[vehicles]}]
    archive = write_waymo_submission(preds, frames, tmp_path, META)
    report = validate_waymo_submission(archive, frames, require_all_frames=True)
    assert report["objects_per_type"] == {"Vehicle": int(vehicles.sum())}
    shard = next(s for s in read_submission_archive(archive).values() if s["objects"])
    o = shard["objects"][0]
    assert (o["context_name"], o["timestamp_micros"]) == ("1071392229495085036_1844_790_1864_790", 1507315488219118)
    np.testing.assert_allclose(o["box"], frame.boxes[vehicles][0, :7])


def test_official_protos_parse_the_shards(tmp_path):
    python = os.environ.get("POINTMAE_WAYMO_PYTHON") or (
        sys.executable if importlib.util.find_spec("waymo_open_dataset") else None)
    if python is None:
        pytest.skip("waymo_open_dataset is not importable here and POINTMAE_WAYMO_PYTHON is unset "
                    "(see docs/waymo.md for the waymo environment)")
    frames = split()
    archive = write_waymo_submission(predictions(frames), frames, tmp_path, META, num_shards=2)
    script = ("import sys, json, tarfile\n"
              "from waymo_open_dataset.protos import submission_pb2\n"
              "out = []\n"
              "with tarfile.open(sys.argv[1], 'r:gz') as tar:\n"
              "    for m in sorted(tar.getnames()):\n"
              "        s = submission_pb2.Submission.FromString(tar.extractfile(m).read())\n"
              "        o = s.inference_results.objects\n"
              "        out.append([submission_pb2.Submission.Task.Name(s.task), s.account_name,\n"
              "                    submission_pb2.Submission.SensorType.Name(s.sensor_type), len(o),\n"
              "                    [x.object.box.length for x in o], [x.context_name for x in o]])\n"
              "print(json.dumps(out))\n")
    run = subprocess.run([python, "-c", script, str(archive)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    parsed = json.loads(run.stdout)
    ours = read_submission_archive(archive)
    assert [p[:3] for p in parsed] == [["DETECTION_3D", "someone@example.com", "LIDAR_ALL"]] * 2
    for p, name in zip(parsed, sorted(ours)):
        assert p[3] == len(ours[name]["objects"])
        assert p[4] == [o["box"][3] for o in ours[name]["objects"]]
        assert p[5] == [o["context_name"] for o in ours[name]["objects"]]


def _submit_tool():
    path = __import__("pathlib").Path(__file__).resolve().parents[2] / "tools" / "submit.py"
    spec = importlib.util.spec_from_file_location("submit_tool", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def test_split_readers(tmp_path, shared_data):
    from pointmae.data.errors import DataError
    from pointmae.submission.waymo import split_frames_from_converted, split_frames_from_list
    (tmp_path / "split.txt").write_text("# test split\nctxA 100\nctxA 200 my_id\n\nctxB -5  # comment\n")
    frames = split_frames_from_list(tmp_path / "split.txt")
    assert [(f.frame_id, f.meta["context_name"], f.meta["timestamp_micros"]) for f in frames] == \
        [("ctxA_100", "ctxA", 100), ("my_id", "ctxA", 200), ("ctxB_-5", "ctxB", -5)]
    (tmp_path / "bad.txt").write_text("ctxA notanumber\n")
    with pytest.raises(DataError, match=r"bad\.txt:1: expected"):
        split_frames_from_list(tmp_path / "bad.txt")
    tool = importlib.util.spec_from_file_location(
        "convert_waymo", __import__("pathlib").Path(__file__).resolve().parents[2] / "tools" / "convert_waymo.py")
    convert = importlib.util.module_from_spec(tool)
    tool.loader.exec_module(convert)
    convert.save_frame(tmp_path / "conv", "ctxC", 3, np.zeros((0, 7)), [], np.zeros((0, 9)), [], [], [], [], [],
                       np.eye(4), 777)
    (frame,) = split_frames_from_converted(tmp_path / "conv")
    assert (frame.frame_id, frame.meta["context_name"], frame.meta["timestamp_micros"]) == ("ctxC_0003", "ctxC", 777)
    from pointmae.data.waymo import read_converted_frame
    assert read_converted_frame(tmp_path / "conv" / "ctxC" / "0003.npz").frame_id == frame.frame_id


def test_submit_cli_writes_and_validates(tmp_path, capsys):
    tool = _submit_tool()
    frames = split()
    (tmp_path / "split.txt").write_text("".join(f"{f.meta['context_name']} {f.meta['timestamp_micros']} {f.frame_id}\n"
                                                for f in frames))
    with open(tmp_path / "preds.pkl", "wb") as f:
        __import__("pickle").dump(predictions(frames), f)
    common = ["waymo", "--split-list", str(tmp_path / "split.txt")]
    assert tool.main(common + ["--predictions", str(tmp_path / "preds.pkl"), "--out", str(tmp_path / "out"),
                               "--account-name", "me@example.com", "--method-name", "cli-test", "--authors", "Me",
                               "--past-frames", "1", "--num-shards", "2"]) == 0
    out = capsys.readouterr().out
    assert "cli-test.tar.gz" in out and '"num_shards": 2' in out
    assert tool.main(common + ["--validate", str(tmp_path / "out" / "cli-test.tar.gz"), "--require-all-frames"]) == 0
    (tmp_path / "short.txt").write_text(f"{frames[0].meta['context_name']} {frames[0].meta['timestamp_micros']} x\n")
    assert tool.main(["waymo", "--split-list", str(tmp_path / "short.txt"),
                      "--validate", str(tmp_path / "out" / "cli-test.tar.gz")]) == 2
    assert "not in the split" in capsys.readouterr().err


def test_synthetic_world_end_to_end(tmp_path):
    """Synthetic frames (KITTI names, no Waymo keys) -> Waymo ground truth, evaluation, submission."""
    from pointmae.data.synthetic import SyntheticWorld, sensor_preset
    from pointmae.eval.waymo import evaluate_waymo
    from pointmae.submission.waymo import as_waymo_frames, as_waymo_predictions
    world = SyntheticWorld(seed=3, sensor=sensor_preset("hdl64").with_(azimuth_resolution_deg=2.0), frames_per_sequence=2)
    source = [world.frame(0, i) for i in range(2)]
    frames = as_waymo_frames(source)
    assert {n for f in frames for n in f.names} <= {"Vehicle", "Pedestrian", "Cyclist"}
    assert sum(len(f.boxes) for f in frames) == sum(np.isin(f.names, ["Car", "Van", "Truck", "Pedestrian", "Cyclist"]).sum()
                                                    for f in source)
    def as_predictions(keep):
        return as_waymo_predictions([{"frame_id": f.frame_id, "boxes": f.boxes[k], "scores": np.full(k.sum(), 0.9),
                                      "names": f.names[k]} for f, k in zip(source, keep)])
    seen = [f.box_meta["num_points"] > 0 for f in source]
    assert any((~k).any() for k in seen)                       # the world has fully occluded agents
    preds = as_predictions(seen)
    result = evaluate_waymo(preds, frames)
    assert result.averaged_classes[2] and result.mean[2]["mAP"] == pytest.approx(1.0, abs=1e-6)
    # boxes without points are not ground truth for Waymo: predicting them costs precision
    everything = evaluate_waymo(as_predictions([np.ones(len(f.boxes), bool) for f in source]), frames)
    assert everything.mean[2]["mAP"] < 0.99
    archive = write_waymo_submission(preds, frames, tmp_path, META)
    report = validate_waymo_submission(archive, frames)
    expected = sum(len(p["scores"]) for p in preds)
    assert report["num_objects"] == expected and report["frames_with_objects"] == sum(len(p["scores"]) > 0 for p in preds)
