"""The KITTI protocol on the synthetic world (pointmae.eval.kitti.evaluate_synthetic_predictions), as
tools/finetune_det.py reports it: the ground truth scores near 100 against itself, a shifted copy 0."""
import numpy as np
import pytest

from pointmae.data.lidar_datasets import SyntheticFrames
from pointmae.eval.kitti import evaluate_synthetic_predictions


@pytest.fixture(scope="module")
def frames():
    reader = SyntheticFrames(num_frames=12, seed=1000)   # > 40 moderate GT per class (small-set arithmetic)
    return [reader[i] for i in range(len(reader))]


def as_predictions(frames, shift=0.0):
    return [dict(frame_id=f.frame_id, boxes=f.boxes[:, :7] + np.r_[shift, 0, 0, 0, 0, 0, 0],
                 scores=np.linspace(1.0, 0.5, len(f.boxes)), names=f.names) for f in frames]


def test_ground_truth_against_itself_and_shifted(frames):
    perfect = evaluate_synthetic_predictions(as_predictions(frames), frames, classes=("Car", "Pedestrian"),
                                             overlap_sets=("strict",), metrics=("bev", "3d"))
    for cls in ("Car", "Pedestrian"):
        assert perfect.get(cls, "3d") > 90.0 and perfect.get(cls, "bev") >= perfect.get(cls, "3d")
    shifted = evaluate_synthetic_predictions(as_predictions(frames, shift=3.0), frames, classes=("Car",),
                                             overlap_sets=("strict",), metrics=("bev",))
    assert shifted.get("Car", "bev") == 0.0


def test_missing_frame_is_an_error(frames):
    with pytest.raises(ValueError, match="no entry for 1 ground-truth frame"):
        evaluate_synthetic_predictions(as_predictions(frames)[1:], frames)
