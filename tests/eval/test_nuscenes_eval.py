"""nuScenes evaluation end to end: a tiny dataroot written here -> pointmae's reader -> predictions in
the sensor frame -> the results writer -> nuscenes-devkit's own DetectionEval. The expected metrics
follow from the metric definitions (Caesar et al. 2020, Sec. 4.1) by hand."""
import copy
import json
import os
import subprocess

import numpy as np
import pytest

from nuscenes_tiny_dataroot import OBJECTS, build_tiny_dataroot
from pointmae.data.nuscenes import NuScenesTables
from pointmae.eval.nuscenes import evaluate_nuscenes, format_metrics
from pointmae.submission.nuscenes import (SubmissionError, build_results, detection_name_of_category,
                                          sensor_poses_from_frames, sensor_poses_from_tables, split_sample_tokens,
                                          write_results)

CLASSES = ("car", "truck", "bus", "trailer", "construction_vehicle", "pedestrian", "motorcycle", "bicycle",
           "traffic_cone", "barrier")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_dataroot(tmp_path_factory.mktemp("nuscenes_tiny"))


def ground_truth_predictions(tiny, with_attributes=True):
    """The annotations as predictions, through pointmae's table reader (sensor frame, x forward)."""
    tables = NuScenesTables(tiny["dataroot"], tiny["version"])
    frames, predictions = [], []
    for token in tiny["split_tokens"]:
        frame = tables.frame(token)
        names = np.array([detection_name_of_category(n) or "" for n in frame.names])
        keep = names != ""
        prediction = {"frame_id": token, "boxes": frame.boxes[keep], "names": names[keep],
                      "scores": np.linspace(0.95, 0.3, keep.sum())}
        if with_attributes:
            prediction["attributes"] = [tiny["attribute_of"][(token, inst)]
                                        for inst in frame.box_meta["instance_token"][keep]]
        frames.append(frame)
        predictions.append(prediction)
    return predictions, sensor_poses_from_frames(frames)


@pytest.fixture(scope="module")
def gt_results(tiny):
    predictions, poses = ground_truth_predictions(tiny)
    return build_results(predictions, poses, tiny["split_tokens"])


def evaluate(tiny, results, path, **kwargs):
    write_results(path, results, tiny["split_tokens"])
    return evaluate_nuscenes(path, tiny["dataroot"], tiny["version"], tiny["split"], **kwargs)


def nds(mean_ap, errors):
    return (5 * mean_ap + sum(1 - min(1.0, e) for e in errors)) / 10


def test_ground_truth_as_predictions_is_perfect(tiny, gt_results, tmp_path):
    summary = evaluate(tiny, gt_results, tmp_path / "gt.json", output_dir=tmp_path / "metrics")
    assert summary["mean_ap"] == pytest.approx(1.0, abs=1e-12)
    assert summary["nd_score"] == pytest.approx(1.0, abs=1e-9)
    assert set(summary["mean_dist_aps"]) == set(CLASSES)
    for name in CLASSES:
        assert summary["mean_dist_aps"][name] == pytest.approx(1.0, abs=1e-12), name
        for error, value in summary["label_tp_errors"][name].items():
            # The devkit leaves out orientation for cones, velocity/attributes for cones and barriers.
            undefined = (name == "traffic_cone" and error in ("orient_err", "vel_err", "attr_err")) or \
                        (name == "barrier" and error in ("vel_err", "attr_err"))
            assert np.isnan(value) if undefined else value == pytest.approx(0.0, abs=1e-9), (name, error, value)
    assert summary["meta"] == gt_results["meta"]
    written = json.loads((tmp_path / "metrics" / "metrics_summary.json").read_text())
    assert written["mean_ap"] == summary["mean_ap"] and (tmp_path / "metrics" / "metrics_details.json").is_file()
    assert "NDS 1.0000" in format_metrics(summary)


def test_shift_of_0_7_m_fails_only_the_0_5_m_threshold(tiny, gt_results, tmp_path):
    # Every centre 0.7 m off: a miss at 0.5 m, a hit at 1, 2 and 4 m, so every class has AP 3/4 and
    # mATE 0.7; the other errors stay 0, NDS = (5 * 0.75 + 0.3 + 4) / 10.
    results = copy.deepcopy(gt_results)
    for boxes in results["results"].values():
        for box in boxes:
            box["translation"][0] += 0.42
            box["translation"][1] += 0.56
    summary = evaluate(tiny, results, tmp_path / "shifted.json")
    for name in CLASSES:
        assert summary["label_aps"][name]["0.5"] == 0.0
        assert [summary["label_aps"][name][d] for d in ("1.0", "2.0", "4.0")] == pytest.approx([1, 1, 1])
    assert summary["mean_ap"] == pytest.approx(0.75)
    assert summary["tp_errors"]["trans_err"] == pytest.approx(0.7, abs=1e-9)
    assert summary["nd_score"] == pytest.approx(nds(0.75, [0.7, 0, 0, 0, 0]), abs=1e-9)


def test_a_missing_class_costs_its_ap_and_its_errors(tiny, gt_results, tmp_path):
    # No car predictions: car AP 0 and every car error 1 (the devkit's value without a match).
    # Means: mAP 9/10; ATE, ASE over 10 classes; AOE over 9 (no cone); AVE, AAE over 8.
    results = copy.deepcopy(gt_results)
    results["results"] = {t: [b for b in boxes if b["detection_name"] != "car"]
                          for t, boxes in results["results"].items()}
    summary = evaluate(tiny, results, tmp_path / "no_cars.json")
    assert summary["mean_dist_aps"]["car"] == 0.0
    assert summary["mean_ap"] == pytest.approx(0.9)
    errors = [1 / 10, 1 / 10, 1 / 9, 1 / 8, 1 / 8]
    assert [summary["tp_errors"][k] for k in ("trans_err", "scale_err", "orient_err", "vel_err", "attr_err")] == \
        pytest.approx(errors, abs=1e-9)
    assert summary["nd_score"] == pytest.approx(nds(0.9, errors), abs=1e-9)


def test_default_attributes_follow_speed_and_class(tiny, tmp_path):
    # Without predicted attributes the writer's rule (speed > 0.2 m/s -> moving; still buses
    # "stopped", other still vehicles "parked") is right for every object of the tiny world except
    # the still truck, annotated "vehicle.stopped": attribute error 1 for trucks, mAAE 1/8.
    predictions, poses = ground_truth_predictions(tiny, with_attributes=False)
    summary = evaluate(tiny, build_results(predictions, poses, tiny["split_tokens"]), tmp_path / "default_attr.json")
    assert summary["label_tp_errors"]["truck"]["attr_err"] == pytest.approx(1.0)
    others = [summary["label_tp_errors"][n]["attr_err"] for n in CLASSES if n not in ("truck", "traffic_cone", "barrier")]
    assert others == pytest.approx([0.0] * 7, abs=1e-12)
    assert summary["tp_errors"]["attr_err"] == pytest.approx(1 / 8)
    assert summary["mean_ap"] == pytest.approx(1.0)


def test_velocity_and_heading_errors_are_measured(tiny, gt_results, tmp_path):
    # Heading turned by 0.3 rad and velocity off by (0.6, 0.8) m/s on every box: AOE 0.3 for the
    # classes with a heading (barriers' period is pi, still 0.3), AVE 1.0 where velocity counts.
    results = copy.deepcopy(gt_results)
    turn = np.array([np.cos(0.15), 0.0, 0.0, np.sin(0.15)])
    for boxes in results["results"].values():
        for box in boxes:
            w, _, _, z = box["rotation"]
            box["rotation"] = [float(w * turn[0] - z * turn[3]), 0.0, 0.0, float(z * turn[0] + w * turn[3])]
            box["velocity"] = [box["velocity"][0] + 0.6, box["velocity"][1] + 0.8]
    summary = evaluate(tiny, results, tmp_path / "turned.json")
    assert summary["tp_errors"]["orient_err"] == pytest.approx(0.3, abs=1e-9)
    assert summary["tp_errors"]["vel_err"] == pytest.approx(1.0, abs=1e-9)
    assert summary["mean_ap"] == pytest.approx(1.0)


def test_split_tokens_and_poses_from_the_tables(tiny, gt_results):
    assert split_sample_tokens(tiny["dataroot"], tiny["version"], tiny["split"]) == tiny["split_tokens"]
    assert set(tiny["split_tokens"]) < set(tiny["all_tokens"])
    with pytest.raises(ValueError, match="none of its scenes"):
        split_sample_tokens(tiny["dataroot"], tiny["version"], "mini_val")     # predefined, other scenes
    with pytest.raises(ValueError, match="neither a predefined"):
        split_sample_tokens(tiny["dataroot"], tiny["version"], "no_such_split")
    # Poses read from the tables without the points are the readers' Frame.pose.
    predictions, frame_poses = ground_truth_predictions(tiny)
    table_poses = sensor_poses_from_tables(tiny["dataroot"], tiny["version"])
    for token, pose in frame_poses.items():
        np.testing.assert_allclose(table_poses[token], pose, atol=1e-12)
    rebuilt = build_results(predictions, table_poses, tiny["split_tokens"])
    for token in tiny["split_tokens"]:
        for a, b in zip(rebuilt["results"][token], gt_results["results"][token]):
            assert a["detection_name"] == b["detection_name"]
            np.testing.assert_allclose(a["translation"], b["translation"], atol=1e-9)


def test_objects_cover_every_detection_class():
    assert {o[1] for o in OBJECTS if o[1]} == set(CLASSES)


def test_bad_inputs_are_named(tiny, gt_results, tmp_path):
    path = write_results(tmp_path / "ok.json", gt_results, tiny["split_tokens"])
    with pytest.raises(FileNotFoundError, match="results_path"):
        evaluate_nuscenes(tmp_path / "absent.json", tiny["dataroot"], tiny["version"], tiny["split"])
    with pytest.raises(FileNotFoundError, match="v1.0-absent"):
        evaluate_nuscenes(path, tiny["dataroot"], "v1.0-absent", tiny["split"])
    partial = copy.deepcopy(gt_results)
    partial["results"].pop(tiny["split_tokens"][0])
    (tmp_path / "partial.json").write_text(json.dumps(partial))
    with pytest.raises(SubmissionError, match="1 sample token"):
        evaluate_nuscenes(tmp_path / "partial.json", tiny["dataroot"], tiny["version"], tiny["split"])


NUMPY1_PYTHON = os.environ.get("POINTMAE_NUSCENES_NUMPY1_PYTHON")
_DEVKIT_SCRIPT = """
import json, sys
from nuscenes import NuScenes
from nuscenes.eval.common.config import config_factory
from nuscenes.eval.detection.evaluate import DetectionEval
dataroot, version, split, result, out = sys.argv[1:]
nusc = NuScenes(version=version, dataroot=dataroot, verbose=False)
metrics, _ = DetectionEval(nusc, config_factory("detection_cvpr_2019"), result, split, out, verbose=False).evaluate()
summary = metrics.serialize()
summary.pop("eval_time")
print(json.dumps(summary))
"""


@pytest.mark.skipif(not NUMPY1_PYTHON, reason="set POINTMAE_NUSCENES_NUMPY1_PYTHON to a python with numpy<2 and "
                    "nuscenes-devkit 1.2.0 (python3 -m venv V && V/bin/pip install nuscenes-devkit==1.2.0)")
def test_devkit_on_numpy2_matches_its_declared_numpy1(tiny, gt_results, tmp_path):
    """The devkit declares numpy<2; pointmae runs it on numpy 2. Same inputs, same metrics."""
    rng = np.random.default_rng(0)
    results = copy.deepcopy(gt_results)
    for boxes in results["results"].values():
        for box in boxes:   # noisy boxes and scores, so that every metric is away from its extremes
            box["translation"] = [v + float(rng.normal(0, 0.4)) for v in box["translation"]]
            box["size"] = [v * float(rng.uniform(0.8, 1.2)) for v in box["size"]]
            box["velocity"] = [v + float(rng.normal(0, 0.5)) for v in box["velocity"]]
            box["detection_score"] = float(rng.uniform(0, 1))
    path = write_results(tmp_path / "noisy.json", results, tiny["split_tokens"])
    ours = evaluate_nuscenes(path, tiny["dataroot"], tiny["version"], tiny["split"])
    theirs = json.loads(subprocess.run(
        [NUMPY1_PYTHON, "-c", _DEVKIT_SCRIPT, str(tiny["dataroot"]), tiny["version"], tiny["split"], str(path),
         str(tmp_path / "numpy1")], check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
    assert 0.2 < theirs["mean_ap"] < 0.95
    def leaves(tree, prefix=""):
        if isinstance(tree, dict):
            return {k: v for key in tree for k, v in leaves(tree[key], f"{prefix}/{key}").items()}
        return {prefix: tree}

    ours, theirs = leaves({k: ours[k] for k in theirs}), leaves(theirs)
    assert ours.keys() == theirs.keys() and len(ours) > 100
    for key, value in theirs.items():   # numpy 2 vs 1: equal up to the last bits of some angle errors
        assert ours[key] == pytest.approx(value, abs=1e-12, nan_ok=True), key
