import hashlib

import numpy as np
import pytest

from pointmae.data.boxes import count_points_in_boxes, wrap_angle
from pointmae.data.kitti import KittiObjectDataset
from pointmae.data.synthetic import SyntheticWorld, sensor_preset
from pointmae.data.synthetic.kitti_writer import write_synthetic_kitti
from pointmae.data.synthetic.raycast import BOX, CYLINDER, SPHERE, GroundField, Primitives, cast_rays
from pointmae.data.synthetic.world import occlusion_level

# A coarse sensor keeps the tests fast; the full presets are exercised by the benchmark.
COARSE = sensor_preset("hdl64").with_(azimuth_resolution_deg=1.0)


def flat_ground(height=-1.7):
    return GroundField(0.0, 0.0, height, np.zeros((0, 2)), np.zeros(0), np.zeros(0))


def cast(prims, sensor=COARSE, ground=None, max_range=100.0):
    d, el, az = sensor.ray_directions()
    return d, cast_rays(d, el, az, ground or flat_ground(), prims, max_range, np.zeros(len(d)))


def make_prims(rows):
    kind = np.array([r[0] for r in rows])
    params = np.zeros((len(rows), 7))
    for i, r in enumerate(rows):
        params[i, :len(r[1])] = r[1]
    n = len(rows)
    return Primitives(kind, params, np.full(n, 0.5), np.zeros(n), np.zeros(n), np.arange(n))


def test_ray_hits_match_analytic_surfaces():
    prims = make_prims([(BOX, (10.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.3)),
                        (CYLINDER, (0.0, 10.0, -1.7, 1.0, 0.5)),
                        (SPHERE, (-10.0, 0.0, 0.0, 1.0))])
    d, hit = cast(prims)
    p = d * np.where(np.isfinite(hit.t), hit.t, 0)[:, None]
    for k in range(3):
        sel = hit.primitive == k
        assert sel.sum() > 5
        q = p[sel]
        if k == 0:    # on the surface of the rotated box
            c, s = np.cos(0.3), np.sin(0.3)
            local = np.c_[(q[:, 0] - 10) * c + q[:, 1] * s, -(q[:, 0] - 10) * s + q[:, 1] * c, q[:, 2]]
            np.testing.assert_allclose(np.abs(local).max(axis=1), 1.0, atol=1e-9)
        elif k == 1:  # on the side or the top of the cylinder
            radial = np.hypot(q[:, 0], q[:, 1] - 10)
            assert np.all(np.isclose(radial, 0.5, atol=1e-9) | np.isclose(q[:, 2], 1.0, atol=1e-9))
        else:
            np.testing.assert_allclose(np.linalg.norm(q - [-10, 0, 0], axis=1), 1.0, atol=1e-9)
        np.testing.assert_allclose(np.linalg.norm(hit.normal[sel], axis=1), 1.0, atol=1e-9)
    ground = hit.primitive == -1
    np.testing.assert_allclose(p[ground, 2], -1.7, atol=1e-9)


def test_occlusion_is_real():
    # A small box right behind a big one gets no ray; without the big one it does.
    big, small = (BOX, (10.0, 0.0, 0.0, 0.5, 2.0, 2.0, 0.0)), (BOX, (20.0, 0.0, 0.0, 0.5, 1.0, 1.0, 0.0))
    _, hit = cast(make_prims([big, small]))
    assert (hit.primitive == 1).sum() == 0 and hit.unoccluded[1] > 0
    _, alone = cast(make_prims([small]))
    assert (alone.primitive == 0).sum() == hit.unoccluded[1]


def test_culling_matches_brute_force():
    rng = np.random.default_rng(0)
    rows = [(BOX, (*rng.uniform(-30, 30, 2), rng.uniform(-1, 2), *rng.uniform(0.2, 3, 3), rng.uniform(-3, 3)))
            for _ in range(15)] + [(SPHERE, (*rng.uniform(-30, 30, 2), 0.5, 1.0)), (CYLINDER, (0.5, 0.2, -2, 3, 1.5))]
    d, hit = cast(make_prims(rows))
    # brute force: every primitive against every ray
    from pointmae.data.synthetic.raycast import _INTERSECT
    prims = make_prims(rows)
    best = flat_ground().intersect(d)[0]
    for k in range(len(prims)):
        best = np.minimum(best, _INTERSECT[int(prims.kind[k])](d, prims.params[k])[0])
    best[best > 100] = np.inf
    np.testing.assert_array_equal(np.isfinite(best), np.isfinite(hit.t))
    np.testing.assert_allclose(hit.t[np.isfinite(best)], best[np.isfinite(best)])


def test_world_is_deterministic_and_order_independent():
    a = SyntheticWorld(seed=7, sensor=COARSE, frames_per_sequence=3)
    b = SyntheticWorld(seed=7, sensor=COARSE, frames_per_sequence=3)
    fa, fb = a.frame(1, 2), b.frame(1, 2)
    a.frame(0, 0)
    assert hashlib.sha1(fa.points.tobytes()).digest() == hashlib.sha1(a.frame(1, 2).points.tobytes()).digest()
    np.testing.assert_array_equal(fa.points, fb.points)
    np.testing.assert_array_equal(fa.boxes, fb.boxes)
    assert not np.array_equal(SyntheticWorld(seed=8, sensor=COARSE).frame(1, 2).points.shape, fa.points.shape) \
        or not np.array_equal(SyntheticWorld(seed=8, sensor=COARSE).frame(1, 2).points, fa.points)


def test_frame_content_is_plausible():
    world = SyntheticWorld(seed=1, sensor=COARSE, frames_per_sequence=4)
    frame = world.frame(0, 0)
    assert frame.channels == ("x", "y", "z", "intensity", "ring")
    assert set(frame.names) <= {"Car", "Van", "Truck", "Pedestrian", "Cyclist"} and "Car" in frame.names
    r = np.linalg.norm(frame.points[:, :3], axis=1)
    assert r.min() >= COARSE.min_range - 0.1 and r.max() <= COARSE.max_range + 0.1
    assert 0 <= frame.channel("intensity").min() and frame.channel("intensity").max() <= 1
    assert frame.channel("ring").max() <= 63
    # The ground is about mount_height below the sensor.
    assert abs(np.median(frame.points[frame.channel("ring") > 40, 2]) + COARSE.mount_height) < 0.3
    # Returns of an object lie inside its label box (up to range noise at the faces).
    inside = count_points_in_boxes(frame.points, frame.boxes)
    has = frame.box_meta["num_points"] > 0
    assert has.sum() > 5
    own = frame.box_meta["num_points"]
    assert inside[has].sum() >= 0.97 * own[has].sum()
    many = own >= 20                # a few noisy returns of a small object may cross its box's faces
    assert (inside[many] >= 0.85 * own[many]).all()
    # Sizes are realistic.
    cars = frame.boxes[frame.names == "Car"]
    assert (cars[:, 3] > 2.5).all() and (cars[:, 3] < 5.5).all() and (cars[:, 5] > 1.1).all()
    assert set(np.unique(frame.box_meta["occluded"])) <= {0, 1, 2, 3}


def test_agents_and_ego_move_consistently():
    world = SyntheticWorld(seed=2, sensor=COARSE, frames_per_sequence=3)
    scene = world.scene(0)
    f0, f1 = world.frame(0, 0), world.frame(0, 1)
    assert f1.timestamp - f0.timestamp == pytest.approx(0.1)
    np.testing.assert_allclose(f1.pose[0, 3] - f0.pose[0, 3], scene.ego_speed * 0.1, atol=1e-9)
    # A moving track: world displacement over 0.1 s equals its velocity x 0.1 s.
    common = np.intersect1d(f0.box_meta["track_id"], f1.box_meta["track_id"])
    for track in common[:10]:
        b0 = f0.boxes[f0.box_meta["track_id"] == track][0]
        b1 = f1.boxes[f1.box_meta["track_id"] == track][0]
        w0 = f0.pose[:3, :3] @ b0[:3] + f0.pose[:3, 3]
        w1 = f1.pose[:3, :3] @ b1[:3] + f1.pose[:3, 3]
        v_world = f0.pose[:2, :2] @ b0[7:9]
        np.testing.assert_allclose((w1 - w0)[:2], v_world * 0.1, atol=1e-6)


def test_agents_never_overlap_during_a_sequence():
    from pointmae.data.boxes import box_corners, points_in_boxes
    from pointmae.data.synthetic.scene import generate_scene
    for seq in range(8):
        scene = generate_scene(np.random.default_rng([0, seq]), 2.0)
        for t in (0.0, 1.0, 2.0):
            boxes = np.array([a.box_at(t, scene.slope) for a in scene.agents])[:, :7]
            probes = np.concatenate([box_corners(boxes), boxes[:, None, :3]], axis=1)      # (M, 9, 3)
            shrunk = boxes * np.r_[1, 1, 1, 0.98, 0.98, 0.98, 1]
            inside = points_in_boxes(probes.reshape(-1, 3), shrunk).reshape(len(boxes), 9, len(boxes)).any(axis=1)
            np.fill_diagonal(inside, False)
            assert not inside.any(), (seq, t, np.argwhere(inside)[:3])


def test_occlusion_levels():
    assert occlusion_level([1.0, 0.5, 0.1, -1]).tolist() == [0, 1, 2, 3]


def test_kitti_layout_written_and_read_back(tmp_path):
    world = SyntheticWorld(seed=4, sensor=COARSE, frames_per_sequence=2)
    write_synthetic_kitti(tmp_path, world, 3, progress=False)
    assert (tmp_path / "ImageSets" / "trainval.txt").read_text().split() == ["000000", "000001", "000002"]
    dataset = KittiObjectDataset(tmp_path, split="trainval")
    frame = dataset[2]
    truth = world.frame(1, 0)
    assert frame.sequence_id == truth.sequence_id and frame.timestamp == truth.timestamp
    np.testing.assert_allclose(frame.pose, truth.pose)
    np.testing.assert_array_equal(frame.points, truth.points[:, :4])
    # Labels: the camera-visible subset of the truth, boxes equal up to the file's 4 decimals.
    order = [list(truth.box_meta["track_id"]).index(t) for t in frame.box_meta["track_id"]]
    assert 0 < len(order) < len(truth.boxes)
    np.testing.assert_allclose(frame.boxes[:, :6], truth.boxes[order, :6], atol=2e-4)
    np.testing.assert_allclose(wrap_angle(frame.boxes[:, 6] - truth.boxes[order, 6]), 0, atol=2e-4)
    np.testing.assert_allclose(frame.boxes[:, 7:], truth.boxes[order, 7:], atol=1e-9)
    assert (frame.boxes[:, 0] > 0).all()                       # in front of the camera
    assert (frame.box_meta["num_points"] >= 0).all()
    assert all(frame.names == truth.names[order])


def test_label_all_writes_360_degrees(tmp_path):
    world = SyntheticWorld(seed=4, sensor=COARSE, frames_per_sequence=2)
    write_synthetic_kitti(tmp_path, world, 1, label_fov="all", progress=False)
    frame = KittiObjectDataset(tmp_path, split="trainval")[0]
    assert len(frame.boxes) == len(world.frame(0, 0).boxes)
    assert (frame.boxes[:, 0] < 0).any()


def test_nuscenes_like_preset():
    sensor = sensor_preset("nuscenes32").with_(azimuth_resolution_deg=1.0)
    frame = SyntheticWorld(seed=0, sensor=sensor).frame(0, 0)
    intensity = frame.channel("intensity")
    assert intensity.max() > 1 and np.all(intensity == np.round(intensity)) and intensity.max() <= 255
    assert frame.channel("ring").max() <= 31
    with pytest.raises(ValueError, match="unknown sensor preset"):
        sensor_preset("hdl128")


def test_make_synthetic_cli(tmp_path):
    import importlib.util
    from pathlib import Path
    spec = importlib.util.spec_from_file_location("make_synthetic", Path(__file__).parents[2] / "tools" / "make_synthetic.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    tool.main([str(tmp_path), "--frames", "1", "--sensor", "nuscenes32", "--bev", "1", "--no-progress"])
    assert (tmp_path / "training" / "velodyne" / "000000.bin").stat().st_size > 16 * 10000
    assert (tmp_path / "bev" / "000000.png").is_file()


def test_written_dataset_is_byte_identical_across_runs(tmp_path):
    for run in ("a", "b"):
        write_synthetic_kitti(tmp_path / run, SyntheticWorld(seed=11, sensor=COARSE, frames_per_sequence=2), 3,
                              progress=False)
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert files_a == files_b and len(files_a) > 10
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel


def test_motion_distortion_skews_the_sweep_by_ego_motion():
    plain = SyntheticWorld(seed=2, sensor=COARSE)
    skewed = SyntheticWorld(seed=2, sensor=COARSE, motion_distortion=True)
    speed = plain.scene(0).ego_speed
    assert speed > 0
    a, b = plain.frame(0, 3), skewed.frame(0, 3)
    assert a.num_points == b.num_points
    shift = (b.points[:, :3] - a.points[:, :3]).astype(np.float64)
    azimuth = np.arctan2(a.points[:, 1], a.points[:, 0])
    ahead, behind = np.abs(azimuth) < 0.1, np.abs(azimuth) > np.pi - 0.1
    # Straight ahead the firing time is the frame time; behind, +-0.05 s: +-speed * 0.05 m along x.
    assert np.abs(shift[ahead, 0]).max() < 0.02 * speed
    assert np.abs(np.abs(shift[behind, 0]) - 0.05 * speed).max() < 0.03 * speed
    np.testing.assert_array_equal(b.points[:, 3:], a.points[:, 3:])
