import numpy as np
import pytest

from pointmae.data.boxes import count_points_in_boxes, wrap_angle
from pointmae.data.errors import DataError
from pointmae.data.kitti import (KittiObjectDataset, camera_to_lidar_boxes, lidar_to_camera_boxes,
                                 observation_angle, points_in_camera_fov, read_calibration, read_labels)
from pointmae.data.points_io import read_bin_points

# SOURCES.md's cross-check counts (points inside each non-DontCare box, their count rule).
REFERENCE_COUNTS = {"000000": [412], "000001": [72, 9, 18], "000002": [1361, 79], "000003": [716],
                    "000004": [79, 26]}


@pytest.fixture(scope="module")
def kitti(shared_data):
    return KittiObjectDataset(shared_data / "kitti", split=None)


def test_every_labelled_box_contains_points(kitti):
    assert kitti.frame_ids == sorted(REFERENCE_COUNTS)
    for frame in kitti:
        assert frame.points.shape[1] == 4 and frame.points.dtype == np.float32
        assert len(frame.boxes) == len(REFERENCE_COUNTS[frame.frame_id])
        assert (frame.box_meta["num_points"] > 0).all(), frame.frame_id
        # Our rule (inside the box, faces included, calibration tilt honoured) gives counts at or
        # below the reference; with the box grown by 10 cm every reference count is reached.
        grown = count_points_in_boxes(frame.points, frame.boxes, margin=0.1)
        ref = np.array(REFERENCE_COUNTS[frame.frame_id])
        assert (frame.box_meta["num_points"] <= ref).all() and (ref <= grown).all(), frame.frame_id


def test_label_lidar_round_trip_on_real_labels(kitti):
    for frame in kitti:
        labels = read_labels(kitti.path("label_2", frame.frame_id))
        care = labels.names != "DontCare"
        location, dims, ry = lidar_to_camera_boxes(frame.boxes, frame.meta["calib"])
        np.testing.assert_allclose(location, labels.location[care], atol=1e-9)
        np.testing.assert_allclose(dims, labels.dims_hwl[care], atol=1e-12)
        np.testing.assert_allclose(wrap_angle(ry - labels.rotation_y[care]), 0, atol=1e-12)
        # alpha in the files is rounded to 2 decimals
        np.testing.assert_allclose(wrap_angle(observation_angle(location, ry) - labels.alpha[care]), 0, atol=0.02)


def test_lidar_label_round_trip_random_boxes(kitti):
    calib = kitti[1].meta["calib"]
    rng = np.random.default_rng(0)
    boxes = np.c_[rng.uniform(0, 60, 50), rng.uniform(-20, 20, 50), rng.uniform(-2, 1, 50),
                  rng.uniform(0.5, 10, (50, 3)), rng.uniform(-np.pi, np.pi, 50)]
    back = camera_to_lidar_boxes(*lidar_to_camera_boxes(boxes, calib), calib)
    np.testing.assert_allclose(back[:, :6], boxes[:, :6], atol=1e-9)
    np.testing.assert_allclose(wrap_angle(back[:, 6] - boxes[:, 6]), 0, atol=1e-12)


def test_heading_agrees_with_the_common_approximation(kitti):
    # The widely used -(ry + pi/2) ignores the calibration's tilt; it must agree to ~0.01 rad.
    for frame in kitti:
        labels = read_labels(kitti.path("label_2", frame.frame_id))
        care = labels.names != "DontCare"
        np.testing.assert_allclose(wrap_angle(frame.boxes[:, 6] + labels.rotation_y[care] + np.pi / 2), 0, atol=0.01)


def test_fov_filter_and_difficulty(kitti, shared_data):
    frame = KittiObjectDataset(shared_data / "kitti", split=None, fov_only=True)[0]
    full = kitti[0]
    assert 0 < frame.num_points < full.num_points
    assert frame.meta["outside_fov"] == full.num_points - frame.num_points
    assert points_in_camera_fov(frame.points[:, :3], frame.meta["calib"]).all()
    assert frame.points[:, 0].min() > 0     # in front of the car
    # 000001: Truck moderate (occluded 0, 33 px tall), Car too small for any level, Cyclist occluded 3
    assert kitti[1].box_meta["difficulty"].tolist() == [1, -1, -1]
    assert len(kitti[1].meta["dontcare_bbox_2d"]) == 4


def write_frame(root, frame_id="000000", points=None, label="", calib=None):
    for sub in ("velodyne", "label_2", "calib"):
        (root / "training" / sub).mkdir(parents=True, exist_ok=True)
    pts = np.zeros((10, 4), np.float32) if points is None else points
    pts.astype("<f4").tofile(root / "training" / "velodyne" / f"{frame_id}.bin")
    (root / "training" / "label_2" / f"{frame_id}.txt").write_text(label)
    (root / "training" / "calib" / f"{frame_id}.txt").write_text(calib)
    return KittiObjectDataset(root, split=None)


@pytest.fixture
def good_calib(shared_data):
    return (shared_data / "kitti/training/calib/000001.txt").read_text()


def test_bad_bin_size_names_file(tmp_path):
    path = tmp_path / "x.bin"
    path.write_bytes(b"\0" * 18)
    with pytest.raises(DataError, match=r"x\.bin.*not a multiple of the point stride 16"):
        read_bin_points(path, 4)


def test_missing_file_named(tmp_path):
    with pytest.raises(DataError, match="nope.bin: file not found"):
        read_bin_points(tmp_path / "nope.bin", 4)


def test_nonfinite_points_error_or_counted(tmp_path, good_calib):
    pts = np.ones((10, 4), np.float32)
    pts[3, 1] = np.nan
    pts[7, 0] = np.inf
    ds = write_frame(tmp_path, points=pts, calib=good_calib)
    with pytest.raises(DataError, match=r"000000\.bin: 2 point\(s\) with NaN/Inf"):
        ds[0]
    ds.nonfinite = "drop"
    with pytest.warns(UserWarning, match="dropped 2"):
        frame = ds[0]
    assert frame.num_points == 8 and frame.meta["dropped_nonfinite"] == 2


def test_malformed_label_line_names_file_and_line(tmp_path, good_calib):
    label = "Car 0 0 0 1 2 3 4 1.5 1.6 4.0 1 1.5 10 0\nCar 0 0 0 1 2 3\n"
    with pytest.raises(DataError, match=r"label_2/000000\.txt:2: label line has 7 fields"):
        write_frame(tmp_path, label=label, calib=good_calib)[0]
    with pytest.raises(DataError, match=r"000000\.txt:1: non-numeric"):
        write_frame(tmp_path, label="Car 0 0 x 1 2 3 4 1.5 1.6 4.0 1 1.5 10 0\n", calib=good_calib)[0]


def test_malformed_calibration_names_file_and_line(tmp_path, good_calib):
    bad = good_calib.replace("R0_rect: 9.999239000000e-01 ", "R0_rect: ")
    with pytest.raises(DataError, match=r"calib/000000\.txt:5: R0_rect has 8 values"):
        write_frame(tmp_path, calib=bad)[0]
    with pytest.raises(DataError, match="missing Tr_velo_to_cam"):
        write_frame(tmp_path, calib="\n".join(l for l in good_calib.splitlines() if "velo_to" not in l))[0]
    with pytest.raises(DataError, match=r":1: malformed calibration line"):
        write_frame(tmp_path, calib="garbage\n")[0]


def test_read_calibration_values(shared_data):
    calib = read_calibration(shared_data / "kitti/training/calib/000000.txt")
    assert calib.P2[0, 0] == pytest.approx(707.0493)
    assert "Tr_imu_to_velo" in calib.extra


from hypothesis import given, strategies as st  # noqa: E402
from scipy.spatial.transform import Rotation  # noqa: E402

from pointmae.data.kitti import KittiCalibration  # noqa: E402


@given(tilt=st.tuples(*[st.floats(-0.2, 0.2)] * 3), box=st.tuples(
    st.floats(1, 70), st.floats(-30, 30), st.floats(-3, 2), st.floats(0.2, 15), st.floats(0.2, 4), st.floats(0.2, 5),
    st.floats(-np.pi, np.pi)))
def test_label_lidar_round_trip_any_calibration(tilt, box):
    """Exact both ways for arbitrary (tilted, non-identity R0_rect) calibrations."""
    base = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
    tr = np.c_[Rotation.from_euler("xyz", tilt).as_matrix() @ base, [0.1, -0.08, -0.27]]
    calib = KittiCalibration(P2=np.eye(3, 4), R0_rect=Rotation.from_euler("xyz", [0.01, -0.01, 0.005]).as_matrix(),
                             Tr_velo_to_cam=tr)
    boxes = np.array([box])
    back = camera_to_lidar_boxes(*lidar_to_camera_boxes(boxes, calib), calib)
    np.testing.assert_allclose(back[:, :6], boxes[:, :6], atol=1e-9)
    assert abs(wrap_angle(back[0, 6] - boxes[0, 6])) < 1e-9
    location, dims, ry = lidar_to_camera_boxes(boxes, calib)
    again = lidar_to_camera_boxes(camera_to_lidar_boxes(location, dims, ry, calib), calib)
    np.testing.assert_allclose(again[0], location, atol=1e-9)
    assert abs(wrap_angle(again[2][0] - ry[0])) < 1e-9
