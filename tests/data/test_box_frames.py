import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from pointmae.data.boxes import (box_corners, count_points_in_boxes, invert_pose, rotate_heading,
                                 transform_boxes, transform_points, unrotate_heading,
                                 untransform_boxes, wrap_angle)
from pointmae.data.frame import Frame


def random_boxes(rng, m=64, velocity=True):
    boxes = np.c_[rng.normal(size=(m, 3)) * 20, rng.uniform(0.3, 6, (m, 3)), rng.uniform(-np.pi, np.pi, m)]
    return np.c_[boxes, rng.normal(size=(m, 2)) * 5] if velocity else boxes


def random_pose(rng, tilt=0.08):
    pose = np.eye(4)
    pose[:3, :3] = Rotation.from_euler("xyz", [*rng.uniform(-tilt, tilt, 2), rng.uniform(-np.pi, np.pi)]).as_matrix()
    pose[:3, 3] = rng.normal(size=3) * 100
    return pose


@pytest.mark.parametrize("seed", range(5))
def test_transform_boxes_round_trip_is_exact(seed):
    rng = np.random.default_rng(seed)
    boxes, pose = random_boxes(rng), random_pose(rng)
    back = untransform_boxes(transform_boxes(boxes, pose), pose)
    np.testing.assert_allclose(back[:, :6], boxes[:, :6], atol=1e-9)
    np.testing.assert_allclose(wrap_angle(back[:, 6] - boxes[:, 6]), 0, atol=1e-12)
    np.testing.assert_allclose(back[:, 7:], boxes[:, 7:], atol=1e-12)
    forward = transform_boxes(untransform_boxes(boxes, pose), pose)
    np.testing.assert_allclose(wrap_angle(forward[:, 6] - boxes[:, 6]), 0, atol=1e-12)


def test_yaw_only_transform_matches_closed_form():
    rng = np.random.default_rng(0)
    boxes = random_boxes(rng)
    pose = np.eye(4)
    pose[:3, :3] = Rotation.from_euler("z", 0.7).as_matrix()
    out = transform_boxes(boxes, pose)
    np.testing.assert_allclose(wrap_angle(out[:, 6] - boxes[:, 6] - 0.7), 0, atol=1e-12)
    # Corners transform like points when there is no tilt.
    np.testing.assert_allclose(box_corners(out), transform_points(box_corners(boxes).reshape(-1, 3), pose)
                               .reshape(-1, 8, 3), atol=1e-9)


def test_heading_maps_are_inverse_under_tilt():
    rotation = Rotation.from_euler("xyz", [0.3, -0.2, 1.0]).as_matrix()
    h = np.linspace(-np.pi, np.pi, 721)
    np.testing.assert_allclose(wrap_angle(unrotate_heading(rotate_heading(h, rotation), rotation) - h), 0, atol=1e-12)


def test_points_in_boxes_counts_faces_and_rotation():
    box = np.array([[1.0, 2.0, 0.5, 4.0, 2.0, 1.0, np.pi / 2]])   # length along +y after rotation
    points = np.array([[1.0, 3.9, 0.5], [1.0, 4.1, 0.5], [2.9, 2.0, 0.5], [1.9, 2.0, 0.5],
                       [1.0, 2.0, 1.0], [1.0, 2.0, 1.01]])
    inside = count_points_in_boxes(points, box)
    assert inside.tolist() == [3]


def test_invert_pose():
    pose = random_pose(np.random.default_rng(1))
    np.testing.assert_allclose(invert_pose(pose) @ pose, np.eye(4), atol=1e-12)


def test_frame_validates_shapes():
    Frame(points=np.zeros((5, 4), np.float32))
    with pytest.raises(ValueError, match="start with x, y, z"):
        Frame(points=np.zeros((5, 4)), channels=("intensity", "x", "y", "z"))
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        Frame(points=np.zeros((5, 3)))
    with pytest.raises(ValueError, match="names"):
        Frame(points=np.zeros((5, 4)), boxes=np.zeros((2, 7)), names=["Car"])
    frame = Frame(points=np.arange(8, dtype=np.float32).reshape(2, 4), boxes=np.ones((2, 7)),
                  names=["Car", "Cyclist"], box_meta={"num_points": np.array([3, 0])})
    assert frame.channel("intensity").tolist() == [3.0, 7.0]
    assert frame.select_boxes(frame.box_meta["num_points"] > 0).names.tolist() == ["Car"]
    assert frame.to_torch().to_numpy().points.dtype == np.float32
    assert Frame(points=np.zeros((0, 4)), boxes=np.zeros((0, 9))).boxes.shape == (0, 9)
    assert Frame(points=np.zeros((0, 4)), boxes=[]).boxes.shape == (0, 7)
