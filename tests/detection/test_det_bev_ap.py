"""The quick BEV AP_R40 used for development runs, on hand-built cases with known answers."""
import numpy as np
import pytest

from pointmae.eval.bev_ap import bev_average_precision


def boxes(xs):
    return np.array([[x, 0.0, 0.0, 4.0, 2.0, 1.5, 0.0] for x in xs]).reshape(-1, 7)


GT = [boxes([0, 10, 20]), boxes([5, 15])]


def test_ground_truth_as_predictions_gives_one():
    assert bev_average_precision(GT, [np.ones(3), np.ones(2)], GT, 0.7) == pytest.approx(1.0)


def test_half_of_the_objects_found_gives_one_half():
    # 2 of 4 objects, both right: precision 1 up to recall 0.5, nothing beyond -> 20 of 40 recall points.
    gt = [boxes([0, 10]), boxes([5, 15])]
    pred = [boxes([0]), boxes([5])]
    assert bev_average_precision(pred, [np.ones(1), np.ones(1)], gt, 0.5) == pytest.approx(0.5)


def test_a_confident_false_positive_costs_precision():
    pred = [boxes([0, 10, 20, 40]), boxes([5, 15])]
    scores = [np.array([0.9, 0.8, 0.7, 0.95]), np.array([0.6, 0.5])]
    # Ranked: FP, then 5 TPs: precision at recall k/5 is k/(k+1), rising; the interpolated (monotone
    # envelope) precision is the best at any higher recall, 5/6, at every recall level.
    assert bev_average_precision(pred, scores, GT, 0.5) == pytest.approx(5 / 6)
    # The same false positive ranked last costs nothing: precision 1 up to full recall.
    scores_last = [np.array([0.9, 0.8, 0.7, 0.1]), np.array([0.6, 0.5])]
    assert bev_average_precision(pred, scores_last, GT, 0.5) == pytest.approx(1.0)


def test_shifted_boxes_lose_ap_at_strict_iou_only():
    shifted = [b + np.array([0.6, 0, 0, 0, 0, 0, 0]) for b in GT]     # IoU = 3.4 / 4.6 = 0.739 per box
    scores = [np.ones(3), np.ones(2)]
    assert bev_average_precision(shifted, scores, GT, 0.7) == pytest.approx(1.0)
    assert bev_average_precision([b + np.array([1.0, 0, 0, 0, 0, 0, 0]) for b in GT], scores, GT, 0.7) == 0.0
    # A duplicate of a matched box is a false positive, not a second match.
    dup = [np.r_[GT[0], GT[0][:1]], GT[1]]
    assert bev_average_precision(dup, [np.array([1, 1, 1, 0.5]), np.ones(2)], GT, 0.7) == pytest.approx(1.0)


def test_no_ground_truth_and_bad_lengths():
    assert bev_average_precision([boxes([0])], [np.ones(1)], [boxes([])], 0.5) is None
    with pytest.raises(ValueError, match="one entry per frame"):
        bev_average_precision(GT, [np.ones(3)], GT, 0.5)
