"""KITTI submission writer / validator (pointmae/submission/kitti.py), the prediction file, and the
thin CLIs tools/submit.py kitti and tools/evaluate.py kitti, on the real KITTI samples."""
import importlib.util
import zipfile
from pathlib import Path

import numpy as np
import pytest

from pointmae.data.kitti import KittiObjectDataset, read_labels
from pointmae.eval.kitti import evaluate_kitti_folders, evaluate_kitti_predictions
from pointmae.submission import load_predictions, save_predictions
from pointmae.submission.kitti import (official_test_ids, read_frame_ids, read_frame_info,
                                       validate_kitti_submission, write_kitti_submission)

REPO = Path(__file__).resolve().parents[2]


def load_tool(name):
    spec = importlib.util.spec_from_file_location(f"tool_{name}", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def kitti(shared_data):
    root = shared_data / "kitti"
    dataset = KittiObjectDataset(root, split=None)
    frames = [dataset[i] for i in range(len(dataset))]
    ids = [f.frame_id for f in frames]
    calibrations, sizes = read_frame_info(root, ids, "training")
    return root, frames, ids, calibrations, sizes


def predictions_from(frames, skip=()):
    out = []
    for index, frame in enumerate(frames):
        if frame.frame_id in skip:
            continue
        boxes = frame.boxes
        behind = boxes[:1].copy() if len(boxes) else np.zeros((0, 7))
        behind[:, 0] = -15.0                                   # behind the car: not in the image
        out.append({"frame_id": frame.frame_id, "boxes": np.r_[boxes, behind],
                    "names": np.r_[frame.names, frame.names[:1]],
                    "scores": np.r_[np.linspace(0.9, 0.6, len(boxes)), [0.95] * len(behind)]})
    return out


def test_writer_rules_and_round_trip(tmp_path, kitti):
    root, frames, ids, calibrations, sizes = kitti
    predictions = predictions_from(frames, skip={"000002"})
    report = write_kitti_submission(predictions, calibrations, ids, tmp_path / "sub.zip", sizes)
    assert report.frames == 5 and report.empty_frames == 1
    assert report.boxes_outside_image == 4                       # the 4 boxes put behind the car
    assert report.boxes_written == sum(len(f.boxes) for f in frames if f.frame_id != "000002")
    with zipfile.ZipFile(tmp_path / "sub.zip") as archive:
        assert sorted(archive.namelist()) == [f"{i}.txt" for i in ids]          # all ids, in the root
        assert archive.read("000002.txt") == b""
        lines = archive.read("000001.txt").decode().splitlines()
        archive.extractall(tmp_path / "results")
    assert all(len(line.split()) == 16 for line in lines)
    assert [line.split()[0] for line in lines] == ["Truck", "Car", "Cyclist"]
    fields = lines[1].split()
    assert fields[1:3] == ["-1.00", "-1"]                        # truncated / occluded unknown
    # The camera-frame 3D box is the label's (through the LiDAR frame and back), the score last.
    label = read_labels(root / "training" / "label_2" / "000001.txt")
    np.testing.assert_allclose([float(v) for v in fields[8:15]],
                               np.r_[label.dims_hwl[1], label.location[1], label.rotation_y[1]], atol=1e-3)
    assert float(fields[15]) == pytest.approx(0.75)
    assert validate_kitti_submission(tmp_path / "sub.zip", ids, sizes).ok
    # The folder evaluator on the written files agrees with the in-memory evaluation.
    from_files = evaluate_kitti_folders(tmp_path / "results", root / "training" / "label_2", ids)
    in_memory = evaluate_kitti_predictions(predictions + [{"frame_id": "000002", "boxes": np.zeros((0, 7)),
                                                           "names": [], "scores": []}], frames, image_size=sizes)
    for key, value in in_memory.ap.items():
        assert from_files.ap[key] == pytest.approx(value, nan_ok=True, abs=1e-6), key


def test_writer_is_deterministic_and_checks_its_input(tmp_path, kitti):
    _, frames, ids, calibrations, sizes = kitti
    predictions = predictions_from(frames)
    write_kitti_submission(predictions, calibrations, ids, tmp_path / "a.zip", sizes)
    write_kitti_submission(predictions, calibrations, ids, tmp_path / "b.zip", sizes)
    assert (tmp_path / "a.zip").read_bytes() == (tmp_path / "b.zip").read_bytes()
    with pytest.raises(ValueError, match="not in frame_ids"):
        write_kitti_submission(predictions, calibrations, ids[:3], tmp_path / "c.zip", sizes)
    with pytest.raises(ValueError, match=r"\.zip"):
        write_kitti_submission(predictions, calibrations, ids, tmp_path / "c.tar", sizes)
    with pytest.raises(ValueError, match="calibrations"):
        write_kitti_submission(predictions, {}, ids, tmp_path / "c.zip", sizes)
    bad = [dict(predictions[0], boxes=predictions[0]["boxes"][:, :5])]
    with pytest.raises(ValueError, match=r"predictions\[0\].*boxes.*\(M, 7\)"):
        write_kitti_submission(bad, calibrations, ids, tmp_path / "c.zip", sizes)
    assert not (tmp_path / "c.zip").exists()


def test_writer_keeps_a_box_too_small_to_print(tmp_path, kitti):
    # A size regression that collapsed (exp of a very negative logit) must not make the file invalid:
    # the box is written at the smallest size 4 decimals can hold.
    _, frames, ids, calibrations, sizes = kitti
    predictions = predictions_from(frames[:1])
    predictions[0]["boxes"][0, 3:6] = [1e-9, 2.0, 0.0]
    write_kitti_submission(predictions, calibrations, ids, tmp_path / "sub.zip", sizes)
    assert validate_kitti_submission(tmp_path / "sub.zip", ids, sizes).ok
    with zipfile.ZipFile(tmp_path / "sub.zip") as archive:
        first = archive.read(f"{ids[0]}.txt").decode().splitlines()[0].split()
    assert first[8:11] == ["0.0001", "2.0000", "0.0001"]     # h w l from (dx, dy, dz) = (1e-9, 2, 0)


def test_validator_reports_each_violation(tmp_path):
    good = "Car -1 -1 0.5 100.00 150.00 200.00 220.00 1.50 1.60 3.90 1.00 1.60 20.00 0.30 0.9\n"
    members = {
        "000000.txt": good,
        "000001.txt": good.replace(" 0.9\n", "\n"),                         # 15 fields
        "000002.txt": good.replace("Car", "Bus"),                            # class
        "000003.txt": good.replace("200.00", "1300.00"),                     # outside the image
        "000004.txt": good.replace("1.50", "nan"),                           # not finite
        "000005.txt": good.replace("3.90", "-3.90"),                         # no valid 3D box
        "000006.txt": good.replace("0.30", "4.00"),                          # rotation_y out of range
        "extra/000007.txt": good,                                            # in a folder
        "000099.txt": good,                                                  # not in the split
    }
    path = tmp_path / "bad.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in members.items():
            archive.writestr(name, text)
    ids = [f"{i:06d}" for i in range(9)]
    validation = validate_kitti_submission(path, ids)
    text = "\n".join(validation.violations)
    assert not validation.ok
    for expected in ["000001.txt:1: 15 fields, expected 16", "000002.txt:1: class 'Bus'",
                     "000003.txt:1: 2D box", "000004.txt:1: NaN/Inf", "000005.txt:1: 3D box dimensions",
                     "000006.txt:1: rotation_y 4.0 outside", "extra/000007.txt: in a folder",
                     "missing result files for 2 of 9 frames", "000099.txt"]:
        assert expected in text, (expected, text)
    assert "000000.txt" not in text
    with pytest.raises(ValueError, match="rule violation"):
        validation.raise_if_invalid()
    # Lower-case class names pass, as the devkit compares them case-insensitively.
    with zipfile.ZipFile(tmp_path / "ok.zip", "w") as archive:
        archive.writestr("000000.txt", good.replace("Car", "car"))
    assert validate_kitti_submission(tmp_path / "ok.zip", ["000000"]).ok
    assert len(official_test_ids()) == 7518 and official_test_ids()[-1] == "007517"


def test_prediction_file_round_trip_and_errors(tmp_path, kitti):
    _, frames, *_ = kitti
    predictions = predictions_from(frames)
    path = save_predictions(tmp_path / "pred.pkl", predictions)
    loaded = load_predictions(path)
    assert [p["frame_id"] for p in loaded] == [p["frame_id"] for p in predictions]
    np.testing.assert_array_equal(loaded[1]["boxes"], predictions[1]["boxes"])
    with pytest.raises(ValueError, match="frame_id appears twice"):
        save_predictions(tmp_path / "x.pkl", predictions + predictions[:1])
    with pytest.raises(ValueError, match="4 boxes but 2 scores"):
        save_predictions(tmp_path / "x.pkl", [dict(predictions[1], scores=[0.1, 0.2])])
    import pickle
    (tmp_path / "other.pkl").write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(ValueError, match="format='pointmae-predictions'"):
        load_predictions(tmp_path / "other.pkl")
    with pytest.raises(FileNotFoundError):
        load_predictions(tmp_path / "missing.pkl")


def test_submit_and_evaluate_tools(tmp_path, kitti, capsys):
    root, frames, ids, *_ = kitti
    save_predictions(tmp_path / "pred.pkl", predictions_from(frames))
    (tmp_path / "ids.txt").write_text("\n".join(ids) + "\n")
    submit = load_tool("submit")
    common = ["--kitti-root", str(root), "--subset", "training", "--ids-file", str(tmp_path / "ids.txt")]
    assert submit.main(["kitti", "--predictions", str(tmp_path / "pred.pkl"), "--out", str(tmp_path / "s.zip")]
                       + common) == 0
    assert "valid KITTI submission (5 frames" in capsys.readouterr().out
    assert submit.main(["kitti", "--validate-only", str(tmp_path / "s.zip")] + common) == 0
    with zipfile.ZipFile(tmp_path / "s.zip") as archive, zipfile.ZipFile(tmp_path / "broken.zip", "w") as out:
        for name in archive.namelist()[1:]:
            out.writestr(name, archive.read(name))
    assert submit.main(["kitti", "--validate-only", str(tmp_path / "broken.zip")] + common) == 1
    assert "missing result files for 1 of 5" in capsys.readouterr().out
    # The frame ids default to every calibration file of the subset.
    assert read_frame_ids(root, subset="training") == ids
    with zipfile.ZipFile(tmp_path / "s.zip") as archive:
        archive.extractall(tmp_path / "results")
    evaluate = load_tool("evaluate")
    assert evaluate.main(["kitti", "--results", str(tmp_path / "results"), "--labels",
                          str(root / "training" / "label_2"), "--json", str(tmp_path / "ap.json")]) == 0
    out = capsys.readouterr().out
    assert "Car AP_R40@0.70, 0.70, 0.70" in out
    import json
    assert json.loads((tmp_path / "ap.json").read_text())["Car/3d_R40/moderate@strict"] == pytest.approx(5.0)
