"""nuScenes results JSON: the writer (sensor frame -> global, names, attributes, top 500) and the
validator (one test per rule), on hand-made predictions and on the real nuScenes sample."""
import copy
import json
import math
import pickle
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from nuscenes_tiny_dataroot import build_tiny_dataroot
from pointmae.data.boxes import untransform_boxes, wrap_angle
from pointmae.data.nuscenes import NuScenesInfoDataset, pose_matrix
from pointmae.submission.nuscenes import (ALLOWED_ATTRIBUTES, DETECTION_NAMES, SubmissionError, build_results,
                                          default_attribute, find_problems, load_results,
                                          prediction_to_sample_results, sensor_poses_from_frames,
                                          sensor_poses_from_info, validate_results, write_results)

INFO = "nuscenes/n015-2018-07-24-11-22-45+0800.pkl"
TOOL = Path(__file__).resolve().parents[2] / "tools" / "submit.py"


def pose(yaw=0.3, t=(100.0, 200.0, 1.5)):
    out = np.eye(4)
    out[:3, :3] = Rotation.from_euler("z", yaw).as_matrix()
    out[:3, 3] = t
    return out


def prediction(token="s0", m=3, seed=0):
    rng = np.random.default_rng(seed)
    boxes = np.c_[rng.uniform(-20, 20, (m, 2)), rng.uniform(-1, 1, m), rng.uniform(0.5, 5, (m, 3)),
                  rng.uniform(-np.pi, np.pi, m), rng.normal(0, 2, (m, 2))]
    names = np.array([DETECTION_NAMES[i % len(DETECTION_NAMES)] for i in range(m)])
    return {"frame_id": token, "boxes": boxes, "scores": rng.uniform(0, 1, m), "names": names}


def valid_results():
    predictions = [prediction("s0", 12, 0), prediction("s1", 4, 1)]
    return build_results(predictions, {"s0": pose(), "s1": pose(1.0)}, ["s0", "s1", "s2"])


# ------------------------------------------------------------------------------------------ writer
def test_writer_puts_boxes_in_the_global_frame():
    p = prediction("s0", 5)
    T = pose(0.3, (100.0, 200.0, 1.5))
    out = prediction_to_sample_results(p, T)
    assert [b["detection_score"] for b in out] == sorted(p["scores"], reverse=True)
    order = np.argsort(-p["scores"])
    for box, k in zip(out, order):
        x, y, z, l, w, h, yaw, vx, vy = p["boxes"][k]
        c, s = math.cos(0.3), math.sin(0.3)
        assert box["translation"] == pytest.approx([100 + c * x - s * y, 200 + s * x + c * y, 1.5 + z])
        assert box["size"] == pytest.approx([w, l, h])                               # w, l, h
        assert box["velocity"] == pytest.approx([c * vx - s * vy, s * vx + c * vy])
        qw, qx, qy, qz = box["rotation"]
        expected = Rotation.from_euler("z", yaw + 0.3).as_quat()                     # x, y, z, w
        assert abs(np.dot([qx, qy, qz, qw], expected)) == pytest.approx(1.0)        # same rotation (q or -q)
        assert box["detection_name"] == p["names"][k] and box["sample_token"] == "s0"
        assert box["attribute_name"] == default_attribute(box["detection_name"], box["velocity"])


def test_writer_keeps_the_top_500_by_score_and_every_split_token():
    p = prediction("s0", 700, seed=3)
    results = build_results([p], {"s0": pose()}, ["s0", "s1"])
    assert list(results["results"]) == ["s0", "s1"] and results["results"]["s1"] == []
    kept = [b["detection_score"] for b in results["results"]["s0"]]
    assert len(kept) == 500 and kept == sorted(np.sort(p["scores"])[::-1][:500].tolist(), reverse=True)
    assert results["meta"] == {"use_camera": False, "use_lidar": True, "use_radar": False, "use_map": False,
                               "use_external": False}
    assert find_problems(results, ["s0", "s1"]) == []
    # deterministic: the same input writes the same bytes
    assert json.dumps(build_results([p], {"s0": pose()}, ["s0", "s1"])) == json.dumps(results)


def test_writer_takes_empty_frames_and_tensors():
    empty = {"frame_id": "s0", "boxes": np.zeros((0, 9)), "scores": np.zeros(0), "names": np.zeros(0, str)}
    assert prediction_to_sample_results(empty, pose()) == []
    p = prediction("s1", 4)
    as_tensors = dict(p, boxes=torch.from_numpy(p["boxes"]), scores=torch.from_numpy(p["scores"]))
    assert prediction_to_sample_results(as_tensors, pose()) == prediction_to_sample_results(p, pose())


def test_default_attributes_by_class_and_speed():
    still, moving = (0.1, 0.1), (0.3, 0.0)
    table = {"car": ("vehicle.parked", "vehicle.moving"), "truck": ("vehicle.parked", "vehicle.moving"),
             "trailer": ("vehicle.parked", "vehicle.moving"),
             "construction_vehicle": ("vehicle.parked", "vehicle.moving"), "bus": ("vehicle.stopped", "vehicle.moving"),
             "pedestrian": ("pedestrian.standing", "pedestrian.moving"),
             "bicycle": ("cycle.without_rider", "cycle.with_rider"), "motorcycle": ("cycle.without_rider", "cycle.with_rider"),
             "barrier": ("", ""), "traffic_cone": ("", "")}
    assert set(table) == set(DETECTION_NAMES)
    for name, (at_rest, in_motion) in table.items():
        assert default_attribute(name, still) == at_rest and default_attribute(name, moving) == in_motion
        assert at_rest in ALLOWED_ATTRIBUTES[name] or not ALLOWED_ATTRIBUTES[name]
    with pytest.raises(ValueError, match="detection classes"):
        default_attribute("vehicle.car", still)


def test_given_attributes_are_kept_and_checked():
    p = prediction("s0", 2)
    p["names"] = np.array(["pedestrian", "barrier"])
    p["attributes"] = ["pedestrian.sitting_lying_down", ""]
    out = prediction_to_sample_results(p, pose())
    assert {b["detection_name"]: b["attribute_name"] for b in out} == {"pedestrian": "pedestrian.sitting_lying_down",
                                                                       "barrier": ""}
    p["attributes"] = ["vehicle.parked", "cycle.with_rider"]
    with pytest.raises(SubmissionError) as info:
        prediction_to_sample_results(p, pose())
    assert len(info.value.problems) == 2 and "not allowed for 'pedestrian'" in str(info.value)


@pytest.mark.parametrize("change, message", [
    (lambda p: p.update(boxes=p["boxes"][:, :7]), "must be \\(M, 9\\)"),
    (lambda p: p["boxes"].__setitem__((1, 7), np.nan), "NaN/Inf"),
    (lambda p: p["boxes"].__setitem__((0, 4), 0.0), "size <= 0"),
    (lambda p: p["scores"].__setitem__(2, 1.5), "outside \\[0, 1\\]"),
    (lambda p: p["scores"].__setitem__(2, np.nan), "outside \\[0, 1\\]"),
    (lambda p: p.update(names=np.array(["car", "vehicle.car", "car"])), "not nuScenes detection classes"),
    (lambda p: p.update(scores=p["scores"][:2]), "scores has 2 entries for 3 boxes"),
    (lambda p: p.update(frame_id=""), "frame_id must be a non-empty str"),
])
def test_writer_rejects_bad_predictions(change, message):
    p = prediction("s0", 3)
    change(p)
    with pytest.raises(ValueError, match=message):
        prediction_to_sample_results(p, pose())


def test_writer_rejects_frames_outside_the_split_twice_or_without_pose():
    with pytest.raises(ValueError, match="not a sample token of the split"):
        build_results([prediction("other")], {"other": pose()}, ["s0"])
    with pytest.raises(ValueError, match="a second prediction"):
        build_results([prediction("s0"), prediction("s0")], {"s0": pose()}, ["s0"])
    with pytest.raises(ValueError, match="no sensor -> global pose"):
        build_results([prediction("s0")], {}, ["s0"])
    with pytest.raises(SubmissionError, match="meta lacks"):
        build_results([], {}, ["s0"], meta={"use_lidar": True})


# --------------------------------------------------------------------------------------- validator
def _set(path, value):
    def change(results):
        target = results
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return change


def _del(path):
    def change(results):
        target = results
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
    return change


BOX = ("results", "s0", 0)
RULES = [
    ("not an object", lambda r: [r], "must be a JSON object with 'meta' and 'results'"),
    ("meta missing", _del(("meta",)), "top level lacks \\['meta'\\]"),
    ("meta key missing", _del(("meta", "use_map")), "meta lacks \\['use_map'\\]"),
    ("meta key unknown", _set(("meta", "use_lidar_v2"), True), "unknown keys \\['use_lidar_v2'\\]"),
    ("meta not bool", _set(("meta", "use_camera"), "no"), "must be true or false"),
    ("extra top-level key", _set(("version",), 1), "top level has unknown keys"),
    ("results not object", _set(("results",), []), "'results' must be an object"),
    ("token missing", _del(("results", "s2")), "1 sample token\\(s\\) of the split are missing"),
    ("token outside split", _set(("results", "s9"), []), "not in the split"),
    ("sample not a list", _set(("results", "s2"), {}), "must be a list of boxes"),
    ("too many boxes", lambda r: r["results"]["s1"].extend([r["results"]["s1"][0]] * 497), "501 boxes; at most 500"),
    ("box key missing", _del(BOX + ("velocity",)), "lacks \\['velocity'\\]"),
    ("box key unknown", _set(BOX + ("num_pts",), 3), "unknown keys \\['num_pts'\\]"),
    ("sample_token differs", _set(BOX + ("sample_token",), "s1"), "not the sample it is listed under"),
    ("translation NaN", _set(BOX + ("translation",), [1.0, float("nan"), 0.0]), "translation must be 3 finite"),
    ("translation length", _set(BOX + ("translation",), [1.0, 2.0]), "translation must be 3 finite"),
    ("size not positive", _set(BOX + ("size",), [1.0, 0.0, 1.0]), "must be positive"),
    ("rotation not unit", _set(BOX + ("rotation",), [1.0, 0.0, 0.0, 0.5]), "unit quaternion"),
    ("velocity length", _set(BOX + ("velocity",), [0.0, 0.0, 0.0]), "velocity must be 2 finite"),
    ("velocity string", _set(BOX + ("velocity",), ["0", 0.0]), "velocity must be 2 finite"),
    ("unknown class", _set(BOX + ("detection_name",), "vehicle.car"), "is not one of"),
    ("score above 1", _set(BOX + ("detection_score",), 1.01), "detection_score must be a number in \\[0, 1\\]"),
    ("score negative", _set(BOX + ("detection_score",), -0.1), "detection_score must be a number in \\[0, 1\\]"),
    ("score string", _set(BOX + ("detection_score",), "0.5"), "detection_score must be a number"),
    ("attribute of another class", lambda r: r["results"]["s0"][0].update(detection_name="car",
                                                                            attribute_name="pedestrian.moving"),
     "'pedestrian.moving' is not allowed for 'car'"),
    ("attribute empty for a car", lambda r: r["results"]["s0"][0].update(detection_name="car", attribute_name=""),
     "'' is not allowed for 'car'"),
    ("attribute on a barrier", lambda r: r["results"]["s0"][0].update(detection_name="barrier",
                                                                       attribute_name="vehicle.parked"),
     "only the empty string"),
]


def test_valid_results_have_no_problems():
    results = valid_results()
    assert find_problems(results, ["s0", "s1", "s2"]) == []
    validate_results(results, ["s0", "s1", "s2"])


@pytest.mark.parametrize("rule, change, message", RULES, ids=[r[0] for r in RULES])
def test_validator_catches_each_rule(rule, change, message):
    results = copy.deepcopy(valid_results())
    results = change(results) or results     # a change edits in place or returns a replacement
    problems = find_problems(results, ["s0", "s1", "s2"])
    assert len(problems) == 1, problems
    with pytest.raises(SubmissionError, match=message):
        validate_results(results, ["s0", "s1", "s2"])


def test_validator_lists_many_problems_and_reads_files(tmp_path):
    results = valid_results()
    for box in results["results"]["s0"]:
        box["detection_score"] = 2.0
    with pytest.raises(SubmissionError, match="12 problem\\(s\\)"):
        write_results(tmp_path / "bad.json", results, ["s0", "s1", "s2"])
    assert not (tmp_path / "bad.json").exists()
    (tmp_path / "broken.json").write_text('{"meta": ')
    with pytest.raises(ValueError, match="broken.json.*invalid JSON"):
        validate_results(tmp_path / "broken.json")
    good = write_results(tmp_path / "good.json", valid_results(), ["s0", "s1", "s2"])
    validate_results(good, ["s0", "s1", "s2"])
    with pytest.raises(SubmissionError, match="good.json: 1 problem"):
        validate_results(good, ["s0", "s1", "s2", "s3"])


# -------------------------------------------------------------------------------- the real sample
@pytest.fixture(scope="module")
def real_sample(shared_data):
    path = shared_data / INFO
    frame = NuScenesInfoDataset(path)[0]
    keep = np.isin(frame.names, DETECTION_NAMES)
    boxes = np.nan_to_num(frame.boxes[keep])          # two boxes have no velocity annotation: 0 m/s
    rng = np.random.default_rng(0)
    p = {"frame_id": frame.frame_id, "boxes": boxes, "names": frame.names[keep], "scores": rng.uniform(0, 1, len(boxes))}
    return path, frame, p


def test_real_sample_round_trip(real_sample, tmp_path):
    path, frame, p = real_sample
    results = build_results([p], sensor_poses_from_frames([frame]), [frame.frame_id])
    written = load_results(write_results(tmp_path / "results.json", results, [frame.frame_id]))
    boxes = written["results"][frame.frame_id]
    assert len(boxes) == len(p["boxes"]) == 68
    order = np.argsort(-p["scores"], kind="stable")
    # Back from the global frame with the same pose: the sensor-frame boxes again.
    back = np.array([[*b["translation"], b["size"][1], b["size"][0], b["size"][2],
                      Rotation.from_quat([*b["rotation"][1:], b["rotation"][0]]).as_euler("zyx")[0], *b["velocity"]]
                     for b in boxes])
    back = untransform_boxes(back, frame.pose)
    np.testing.assert_allclose(back[:, [0, 1, 2, 3, 4, 5, 7, 8]], p["boxes"][order][:, [0, 1, 2, 3, 4, 5, 7, 8]],
                               atol=1e-9)
    np.testing.assert_allclose(wrap_angle(back[:, 6] - p["boxes"][order][:, 6]), 0, atol=1e-9)
    # Independently of pointmae's axes: the info's raw LiDAR-frame centres through the info's own
    # lidar2ego / ego2global matrices land on the written translations.
    raw = pickle.load(open(path, "rb"))["data_list"][0]
    lidar2global = np.array(raw["ego2global"]) @ np.array(raw["lidar_points"]["lidar2ego"])
    names = [k for k, _ in sorted(pickle.load(open(path, "rb"))["metainfo"]["categories"].items(), key=lambda kv: kv[1])]
    centres = np.array([inst["bbox_3d"][:3] + [1.0] for inst in raw["instances"] if inst["bbox_label_3d"] >= 0])
    assert [names[inst["bbox_label_3d"]] for inst in raw["instances"] if inst["bbox_label_3d"] >= 0] == \
        p["names"].tolist()
    np.testing.assert_allclose(np.array([b["translation"] for b in boxes]), (centres @ lidar2global.T)[order, :3],
                               atol=1e-6)
    # Cars are longer than wide: size is (w, l, h).
    cars = [b["size"] for b in boxes if b["detection_name"] == "car"]
    assert cars and all(l > w for w, l, _ in cars)
    # The raw LIDAR_TOP axes and their poses write the same file.
    raw_frame = NuScenesInfoDataset(path, axes="nuscenes")[0]
    raw_p = dict(p, boxes=np.nan_to_num(raw_frame.boxes[np.isin(raw_frame.names, DETECTION_NAMES)]))
    other = build_results([raw_p], sensor_poses_from_info(path, axes="nuscenes"), [frame.frame_id])
    for a, b in zip(other["results"][frame.frame_id], boxes):
        for key in ("translation", "size", "velocity"):
            np.testing.assert_allclose(a[key], b[key], atol=1e-9)
        assert abs(np.dot(a["rotation"], b["rotation"])) == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(sensor_poses_from_info(path)[frame.frame_id], frame.pose, atol=1e-12)
    np.testing.assert_allclose(frame.meta["ego2global"], pose_matrix(*_ego2global_tq(raw)), atol=1e-9)


def _ego2global_tq(raw):
    m = np.array(raw["ego2global"])
    x, y, z, w = Rotation.from_matrix(m[:3, :3]).as_quat()
    return m[:3, 3], [w, x, y, z]


# ------------------------------------------------------------------------------------------- CLI
def test_submit_cli_writes_validates_and_evaluates(tmp_path, capsys):
    tiny = build_tiny_dataroot(tmp_path / "root")
    from pointmae.data.nuscenes import NuScenesTables
    from pointmae.submission.nuscenes import detection_name_of_category
    tables = NuScenesTables(tiny["dataroot"], tiny["version"])
    predictions = []
    for token in tiny["split_tokens"]:
        frame = tables.frame(token)
        names = np.array([detection_name_of_category(n) or "" for n in frame.names])
        keep = names != ""
        predictions.append({"frame_id": token, "boxes": frame.boxes[keep], "names": names[keep],
                            "scores": np.full(keep.sum(), 0.5)})
    torch.save(predictions, tmp_path / "predictions.pt")
    main = runpy.run_path(str(TOOL))["main"]
    common = ["--dataroot", str(tiny["dataroot"]), "--version", tiny["version"], "--split", tiny["split"],
              "--out", str(tmp_path / "results.json")]
    main(["nuscenes", "--predictions", str(tmp_path / "predictions.pt"), *common, "--evaluate"])
    out = capsys.readouterr().out
    assert "3 samples of split 'tiny_val'" in out and "mAP 1.0000" in out
    assert load_results(tmp_path / "results.json")["meta"]["use_lidar"] is True
    main(["nuscenes", "--validate-only", *common])
    assert "is valid" in capsys.readouterr().out
    results = load_results(tmp_path / "results.json")
    results["results"][tiny["split_tokens"][0]][0]["detection_score"] = 3.0
    (tmp_path / "results.json").write_text(json.dumps(results))
    with pytest.raises(SystemExit, match="detection_score must be a number in \\[0, 1\\]"):
        main(["nuscenes", "--validate-only", *common])
