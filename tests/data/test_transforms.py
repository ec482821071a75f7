import numpy as np
import pytest

from pointmae.data.boxes import count_points_in_boxes
from pointmae.data.frame import Frame
from pointmae.data.transforms import (Compose, CropRange, RandomFlipY, RandomRotateZ, RandomScale,
                                      RandomTranslate, SamplePoints)


@pytest.fixture
def frame():
    rng = np.random.default_rng(0)
    boxes = np.array([[10.0, 3.0, 0.0, 4.0, 2.0, 1.5, 0.4, 5.0, 1.0], [-20.0, -8.0, 0.5, 1.0, 1.0, 2.0, -2.0, 0.0, 0.0]])
    inside = np.concatenate([b[:3] + (rng.uniform(-0.45, 0.45, (50, 3)) * b[3:6]) @ np.array(
        [[np.cos(b[6]), np.sin(b[6]), 0], [-np.sin(b[6]), np.cos(b[6]), 0], [0, 0, 1]]) for b in boxes])
    points = np.c_[np.r_[inside, rng.uniform(-60, 60, (100, 3))], rng.uniform(0, 1, 200)].astype(np.float32)
    return Frame(points=points, boxes=boxes, names=["Car", "Pedestrian"])


@pytest.mark.parametrize("transform", [RandomFlipY(p=1.0), RandomRotateZ(), RandomScale(), RandomTranslate()])
def test_augmentations_keep_points_in_their_boxes(frame, transform):
    before = count_points_in_boxes(frame.points, frame.boxes)
    out = transform(frame, np.random.default_rng(1))
    np.testing.assert_array_equal(count_points_in_boxes(out.points, out.boxes), before)
    np.testing.assert_array_equal(out.points[:, 3], frame.points[:, 3])


def test_rotation_turns_velocity_with_heading(frame):
    out = RandomRotateZ(max_angle=np.pi)(frame, np.random.default_rng(3))
    angle = out.boxes[0, 6] - frame.boxes[0, 6]
    c, s = np.cos(angle), np.sin(angle)
    np.testing.assert_allclose(out.boxes[0, 7:9], [c * 5 - s * 1, s * 5 + c * 1], atol=1e-9)


def test_crop_and_sample_are_counted_and_seeded(frame):
    out = CropRange((-15, -15, -5, 15, 15, 5))(frame)
    assert out.names.tolist() == ["Car"] and out.meta["cropped_boxes"] == 1
    assert out.num_points + out.meta["cropped_points"] == frame.num_points
    pipeline = Compose([RandomFlipY(), RandomRotateZ(), SamplePoints(64)])
    a, b = pipeline(frame, np.random.default_rng(5)), pipeline(frame, np.random.default_rng(5))
    np.testing.assert_array_equal(a.points, b.points)
    assert a.num_points == 64 and SamplePoints(500)(frame, np.random.default_rng(0)).num_points == 500
