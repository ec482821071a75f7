"""Synthetic-world frames written as a nuScenes dataroot: read back by pointmae's table reader, and
scored by nuscenes-devkit's DetectionEval."""
import numpy as np
import pytest

from pointmae.data.boxes import wrap_angle
from pointmae.data.nuscenes import NuScenesTables
from pointmae.data.nuscenes_export import CATEGORY_OF, write_nuscenes_dataroot
from pointmae.data.synthetic import SyntheticWorld
from pointmae.eval.nuscenes import evaluate_nuscenes
from pointmae.submission.nuscenes import build_results, detection_name_of_category, write_results

KITTI_TO_DETECTION = {name: detection_name_of_category(CATEGORY_OF[name]) for name in ("Car", "Van", "Truck",
                                                                                     "Pedestrian", "Cyclist")}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    world = SyntheticWorld(seed=0, frames_per_sequence=3)
    frames = [world.frame(sequence, index) for sequence in (0, 1) for index in (0, 1)]
    return frames, write_nuscenes_dataroot(frames, tmp_path_factory.mktemp("synthetic_nuscenes"))


def test_tables_read_back_as_the_frames(exported):
    frames, out = exported
    tables = NuScenesTables(out["dataroot"], out["version"])
    assert len(tables) == 4 and sorted(tables.sample_tokens) == sorted(out["sample_tokens"])
    for frame in frames:
        back = tables.frame(out["sample_token_of"][frame.frame_id])
        np.testing.assert_allclose(back.pose, frame.pose, atol=1e-9)
        np.testing.assert_allclose(back.points[:, :3], frame.points[:, :3], atol=1e-4)
        # Boxes come back sorted by annotation token: match them by centre.
        assert len(back.boxes) == len(frame.boxes)
        order = [int(np.argmin(np.linalg.norm(frame.boxes[:, :3] - b[:3], axis=1))) for b in back.boxes]
        assert sorted(order) == list(range(len(frame.boxes)))
        want = frame.boxes[order]
        np.testing.assert_allclose(back.boxes[:, :6], want[:, :6], atol=1e-6)
        np.testing.assert_allclose(wrap_angle(back.boxes[:, 6] - want[:, 6]), 0, atol=1e-9)
        assert back.names.tolist() == [CATEGORY_OF[n] for n in frame.names[order]]
        # Velocities: the devkit's rule (differences of the linked annotations over 0.1 s) against the
        # world's true velocities; the objects move at constant velocity between two frames.
        moving = np.isfinite(back.boxes[:, 7])
        assert moving.mean() > 0.9
        np.testing.assert_allclose(back.boxes[moving, 7:9], want[moving, 7:9], atol=0.05)


def test_devkit_scores_ground_truth_on_the_export(exported, tmp_path):
    frames, out = exported
    # Annotations without points are left out of the evaluation (nuScenes' rule), so a prediction on
    # one would be a false positive: ground truth as predictions means the boxes with points.
    seen = [f.select_boxes(f.box_meta["num_points"] > 0) for f in frames]
    assert sum(len(f.boxes) for f in seen) < sum(len(f.boxes) for f in frames)
    predictions = [{"frame_id": out["sample_token_of"][f.frame_id], "boxes": f.boxes, "names": f.names,
                    "scores": np.linspace(0.9, 0.1, len(f.boxes))} for f in seen]
    poses = {out["sample_token_of"][f.frame_id]: f.pose for f in frames}
    results = build_results(predictions, poses, out["sample_tokens"], name_map=KITTI_TO_DETECTION)
    path = write_results(tmp_path / "results.json", results, out["sample_tokens"])
    summary = evaluate_nuscenes(path, out["dataroot"], out["version"], out["split"])
    # Classes with an annotation the devkit keeps: within the class's range of the ego (the
    # detection_cvpr_2019 config: 50 m vehicles, 40 m pedestrians and cycles) and with points.
    ranges = {"car": 50, "truck": 50, "pedestrian": 40, "bicycle": 40}
    present = {KITTI_TO_DETECTION[n] for f in seen for n, b in zip(f.names, f.boxes)
               if np.hypot(*b[:2]) < ranges[KITTI_TO_DETECTION[n]]}
    assert {"car", "pedestrian", "bicycle"} <= present
    for name, ap in summary["mean_dist_aps"].items():
        assert ap == (pytest.approx(1.0) if name in present else 0.0), name
    assert summary["mean_ap"] == pytest.approx(len(present) / 10)
    for name in present:
        errors = summary["label_tp_errors"][name]
        assert [errors[k] for k in ("trans_err", "scale_err", "orient_err", "attr_err")] == \
            pytest.approx([0, 0, 0, 0], abs=1e-6), name
        assert errors["vel_err"] < 0.05      # the devkit's finite differences vs. the true velocities


def test_rotation_to_quaternion_on_every_branch():
    from scipy.spatial.transform import Rotation

    from pointmae.data.nuscenes import quaternion_to_matrix
    from pointmae.data.nuscenes_export import _quaternion
    rotations = list(Rotation.random(50, random_state=0).as_matrix())
    rotations += [np.diag(d) for d in ([1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1])]   # w, x, y, z largest
    for r in rotations:
        q = _quaternion(r)
        assert np.linalg.norm(q) == pytest.approx(1.0)
        np.testing.assert_allclose(quaternion_to_matrix(q), r, atol=1e-12)
