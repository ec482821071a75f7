"""KITTI object benchmark protocol (pointmae/eval/kitti.py).

Expected values are worked out by hand from the devkit's rules (evaluate_object.cpp; AP_R40 from
Simonelli et al. 2019), and a plain loop transcription of the devkit's per-frame, per-threshold
matching (below, `_reference_curves`) checks the vectorised implementation on random scenes."""
import math

import numpy as np
import pytest

from pointmae.data.kitti import KittiObjectDataset, KittiObjects, read_labels, write_labels
from pointmae.data.kitti_detections import detections_to_kitti_objects, frame_to_kitti_objects
from pointmae.eval.kitti import (DIFFICULTIES, MIN_OVERLAP, N_SAMPLE_PTS, camera_boxes_for_iou, evaluate_kitti,
                                 evaluate_kitti_folders, evaluate_kitti_predictions, image_box_overlap,
                                 recall_thresholds)
from pointmae.ops import box_iou_3d, box_iou_bev


# ------------------------------------------------------------------------------------------ helpers
def objects(rows, scores=None):
    """rows: (name, truncated, occluded, alpha, (l, t, r, b), (h, w, l), (x, y, z), ry)."""
    n = len(rows)
    get = lambda i, default: [r[i] for r in rows] if rows else default  # noqa: E731
    return KittiObjects(names=np.array(get(0, []), dtype=str), truncated=np.array(get(1, []), float),
                        occluded=np.array(get(2, []), np.int64), alpha=np.array(get(3, []), float),
                        bbox_2d=np.array(get(4, []), float).reshape(-1, 4),
                        dims_hwl=np.array(get(5, []), float).reshape(-1, 3),
                        location=np.array(get(6, []), float).reshape(-1, 3), rotation_y=np.array(get(7, []), float),
                        score=np.ones(n) if scores is None else np.asarray(scores, float),
                        lines=np.arange(1, n + 1))


def car(x=0.0, z=20.0, height_px=60.0, name="Car", occluded=0, truncated=0.0, left=100.0):
    """A car at (x, 1.6, z) in the camera frame with a 2D box of the given pixel height."""
    return (name, truncated, occluded, 0.3, (left, 150.0, left + 1.5 * height_px, 150.0 + height_px),
            (1.5, 1.8, 4.0), (x, 1.6, z), 0.2)


def as_detections(gt: KittiObjects, scores, keep=None) -> KittiObjects:
    keep = np.arange(len(gt)) if keep is None else np.asarray(keep, dtype=np.int64)
    return KittiObjects(names=gt.names[keep], truncated=np.full(len(keep), -1.0),
                        occluded=np.full(len(keep), -1, np.int64), alpha=gt.alpha[keep], bbox_2d=gt.bbox_2d[keep],
                        dims_hwl=gt.dims_hwl[keep], location=gt.location[keep], rotation_y=gt.rotation_y[keep],
                        score=np.asarray(scores, float), lines=np.arange(1, len(keep) + 1))


def many_cars(n, per_frame=4):
    """n moderate-and-easy cars spread over frames (no two overlap)."""
    frames = []
    for start in range(0, n, per_frame):
        count = min(per_frame, n - start)
        frames.append(objects([car(x=-12.0 + 8.0 * i, left=50.0 + 200.0 * i) for i in range(count)]))
    return frames


def ap(result, metric="3d", difficulty="moderate", recall="R40", cls="Car", overlap="strict"):
    return result.get(cls, metric, difficulty, recall, overlap)


# ------------------------------------------------------------------------- the real KITTI samples
@pytest.fixture(scope="module")
def kitti_frames(shared_data):
    dataset = KittiObjectDataset(shared_data / "kitti", split=None)
    return [dataset[i] for i in range(len(dataset))]


def test_ground_truth_as_predictions_scores_100_on_real_samples(kitti_frames):
    # The devkit's recall discretisation needs many ground truths (one threshold per recall step of
    # 1/40, which takes at least 41 ground truths per class and level: with n <= 40 found out of n,
    # only n of the 41 positions get a threshold): the five real frames, each repeated 50 times as
    # separate frames, through the pointmae contract (sensor-frame boxes).
    frames, predictions = [], []
    for copy in range(50):
        for frame in kitti_frames:
            f = frame.select_boxes(np.ones(len(frame.boxes), bool))
            f.frame_id = f"{copy:02d}{frame.frame_id}"
            frames.append(f)
            rng = np.random.default_rng(len(frames))
            predictions.append({"frame_id": f.frame_id, "boxes": f.boxes, "names": f.names,
                                "scores": rng.uniform(0.1, 1.0, len(f.boxes))})
    result = evaluate_kitti_predictions(predictions, frames, classes=("Car", "Pedestrian"))
    for overlap in ("strict", "loose"):
        for cls in ("Car", "Pedestrian"):
            for metric in ("bbox", "bev", "3d", "aos"):
                for difficulty in DIFFICULTIES:
                    for recall in ("R40", "R11"):
                        value = ap(result, metric, difficulty, recall, cls, overlap)
                        if result.num_gt[(cls, difficulty)] == 0:
                            assert math.isnan(value)
                        else:
                            # 2D boxes are re-projected from the 3D labels (not the annotated ones) and
                            # still overlap them above 0.7; 3D boxes round-trip exactly; alpha is
                            # recomputed from the 3D box, within 0.02 rad of the annotated one.
                            tolerance = 0.01 if metric == "aos" else 1e-9
                            assert value == pytest.approx(100.0, abs=tolerance), (overlap, cls, metric, difficulty)
    assert result.num_gt[("Car", "moderate")] == 150         # frames 1, 3, 4: 3 moderate cars, x50
    assert result.num_gt[("Car", "easy")] == 50


def test_few_ground_truths_give_the_devkits_low_ap(kitti_frames):
    # Three valid cars, all found: the devkit takes one threshold per TP (3 of the 41 positions), so
    # precision is 1 at positions 0..2 and 0 after: R40 = 2/40, R11 = 1/11 (position 0 only).
    gt = [frame_to_kitti_objects(f) for f in kitti_frames]
    dt = [as_detections(g, np.ones(int((g.names != "DontCare").sum())), np.flatnonzero(g.names != "DontCare"))
          for g in gt]
    result = evaluate_kitti(gt, dt, classes=("Car",))
    assert ap(result, "3d", "moderate", "R40") == pytest.approx(100 * 2 / 40)
    assert ap(result, "3d", "moderate", "R11") == pytest.approx(100 * 1 / 11)


def test_label_folder_entry_matches_in_memory(tmp_path, kitti_frames, shared_data):
    label_dir = shared_data / "kitti" / "training" / "label_2"
    result_dir = tmp_path / "results"
    gt, dt = [], []
    for frame in kitti_frames:
        labels = read_labels(label_dir / f"{frame.frame_id}.txt")
        care = labels.names != "DontCare"
        det = KittiObjects(**{k: getattr(labels, k)[care] for k in labels.__dataclass_fields__})
        det.score = np.linspace(0.9, 0.5, len(det))
        write_labels(result_dir / f"{frame.frame_id}.txt", det, with_score=True, decimals=2)
        gt.append(labels)
        dt.append(det)
    from_folders = evaluate_kitti_folders(result_dir, label_dir)
    in_memory = evaluate_kitti(gt, dt)
    assert from_folders.ap.keys() == in_memory.ap.keys()
    for key, value in in_memory.ap.items():
        assert from_folders.ap[key] == pytest.approx(value, nan_ok=True), key
    with pytest.raises(Exception, match="16"):
        evaluate_kitti_folders(label_dir, label_dir)       # label files have no score column


# ------------------------------------------------------------------------- hand-built known APs
def test_half_detected_with_top_scores():
    # 200 valid cars, the first 100 found exactly, no false positives. The devkit picks a threshold at
    # TP number 1, 5, 10, 15, ..., 100 (recall (i+1)/200 reaching each 1/40 step): 21 thresholds with
    # precision 1, positions 21..40 stay 0. R40 = 20/40; R11 counts positions 0, 4, ..., 20: 6/11.
    gt = many_cars(200)
    dt, found = [], 0
    for frame in gt:
        keep = [i for i in range(len(frame)) if found + i < 100]
        scores = 1.0 - (found + np.arange(len(keep))) / 1000.0
        dt.append(as_detections(frame, scores, keep))
        found += len(keep)
    result = evaluate_kitti(gt, dt, classes=("Car",))
    for metric in ("bbox", "bev", "3d", "aos"):
        assert ap(result, metric, "moderate", "R40") == pytest.approx(50.0)
        assert ap(result, metric, "moderate", "R11") == pytest.approx(600 / 11)
    precision = result.precision[("strict", "Car", "3d", "moderate")]
    np.testing.assert_array_equal(precision, np.r_[np.ones(21), np.zeros(20)])


def test_false_positive_with_the_top_score():
    # 100 cars all found; one extra detection far from everything scores highest. At every threshold
    # that FP is counted: precision(t) = TP(t) / (TP(t) + 1), increasing in TP, so after the monotone
    # filter every position holds 100/101. The 41 thresholds cover all positions.
    gt = many_cars(100)
    dt = []
    for index, frame in enumerate(gt):
        det = as_detections(frame, 0.9 - 0.001 * (4 * index + np.arange(len(frame))))
        if index == 0:
            fp = objects([car(x=40.0, z=60.0, left=900.0)], scores=[0.99])
            det = KittiObjects(**{k: np.concatenate([getattr(det, k), getattr(fp, k)])
                                  for k in det.__dataclass_fields__})
        dt.append(det)
    result = evaluate_kitti(gt, dt, classes=("Car",))
    assert ap(result, "3d", "moderate", "R40") == pytest.approx(100 * 100 / 101)
    assert ap(result, "3d", "moderate", "R11") == pytest.approx(100 * 100 / 101)
    # The same FP with the lowest score is never above a threshold: 100.
    dt[0].score[-1] = 0.01
    assert ap(evaluate_kitti(gt, dt, classes=("Car",)), "3d", "moderate", "R40") == pytest.approx(100.0)


def test_shifting_boxes_lowers_3d_and_bev_not_2d():
    gt = many_cars(100)
    def shifted(dx=0.0, dy=0.0):
        out = []
        for frame in gt:
            det = as_detections(frame, np.linspace(0.9, 0.5, len(frame)))
            det.location = det.location + [dx, dy, 0.0]
            out.append(det)
        return out
    # 0.8 m along camera x of a 4 m x 1.8 m car turned by ry = 0.2 (so mostly along its length):
    # BEV IoU ~ 0.58, between the loose 0.5 and the strict 0.7: strict BEV / 3D AP 0, loose 100.
    # The 2D boxes are untouched: 2D AP stays 100.
    iou_bev = box_iou_bev(camera_boxes_for_iou([[0, 1.6, 20]], [[1.5, 1.8, 4.0]], [0.2]),
                          camera_boxes_for_iou([[0.8, 1.6, 20]], [[1.5, 1.8, 4.0]], [0.2])).item()
    assert 0.55 < iou_bev < 0.65
    result = evaluate_kitti(gt, shifted(dx=0.8), classes=("Car",))
    assert ap(result, "bbox") == pytest.approx(100.0)
    assert ap(result, "aos") == pytest.approx(100.0)
    assert ap(result, "bev") == 0.0 and ap(result, "3d") == 0.0
    assert ap(result, "bev", overlap="loose") == pytest.approx(100.0)
    assert ap(result, "3d", overlap="loose") == pytest.approx(100.0)
    # Shifting down by 0.5 m of a 1.5 m high box: BEV untouched, 3D IoU = 1.0 / 2.0 = 0.5: strict 0,
    # loose needs > 0.5 (strictly): also 0.
    result = evaluate_kitti(gt, shifted(dy=0.5), classes=("Car",))
    assert ap(result, "bev") == pytest.approx(100.0)
    assert ap(result, "3d") == 0.0 and ap(result, "3d", overlap="loose") == 0.0
    assert ap(result, "bbox") == pytest.approx(100.0)
    # A small shift keeps everything.
    assert ap(evaluate_kitti(gt, shifted(dx=0.05), classes=("Car",)), "3d") == pytest.approx(100.0)


def test_orientation_similarity():
    # Every detection's alpha off by pi/2: each TP adds (1 + cos(pi/2)) / 2 = 0.5: AOS = 50 where AP = 100.
    gt = many_cars(100)
    dt = [as_detections(f, np.linspace(0.9, 0.5, len(f))) for f in gt]
    for d in dt:
        d.alpha = d.alpha + np.pi / 2
    result = evaluate_kitti(gt, dt, classes=("Car",))
    assert ap(result, "bbox") == pytest.approx(100.0)
    assert ap(result, "aos") == pytest.approx(50.0)
    # alpha = -10 anywhere: AOS is not evaluated (as the devkit).
    dt[0].alpha[0] = -10.0
    assert ("strict", "Car", "aos", "moderate") not in evaluate_kitti(gt, dt, classes=("Car",)).ap


def _with(frame: KittiObjects, rows, scores=None) -> KittiObjects:
    extra = objects(rows, scores)
    return KittiObjects(**{k: np.concatenate([getattr(frame, k), getattr(extra, k)])
                           for k in frame.__dataclass_fields__})


def test_dontcare_region_hides_a_false_positive_in_2d_only():
    gt = many_cars(100)
    dt = [as_detections(f, np.linspace(0.9, 0.5, len(f))) for f in gt]
    # A top-scoring detection inside a DontCare region of frame 0 (2D box inside it; 3D far away).
    dontcare = ("DontCare", -1, -1, -10, (800.0, 100.0, 1000.0, 250.0), (-1, -1, -1), (-1000, -1000, -1000), -10)
    gt[0] = _with(gt[0], [dontcare])
    dt[0] = _with(dt[0], [car(x=30.0, z=50.0, left=850.0, height_px=60.0)], scores=[0.99])
    result = evaluate_kitti(gt, dt, classes=("Car",))
    assert ap(result, "bbox") == pytest.approx(100.0)             # ignored: inside DontCare
    assert ap(result, "3d") == pytest.approx(100 * 100 / 101)     # DontCare has no 3D box: a FP
    assert ap(result, "bev") == pytest.approx(100 * 100 / 101)
    # Moved out of the region it is a FP in 2D as well.
    dt[0].bbox_2d[-1] = (300.0, 300.0, 390.0, 360.0)
    assert ap(evaluate_kitti(gt, dt, classes=("Car",)), "bbox") == pytest.approx(100 * 100 / 101)


def test_neighbouring_classes_are_ignored_not_false_positives():
    gt = many_cars(100)
    dt = [as_detections(f, np.linspace(0.9, 0.5, len(f))) for f in gt]
    # Frame 0 also has a Van (GT); a top-scoring "Car" detection on it is not a FP for Car ...
    gt[0] = _with(gt[0], [car(x=30.0, z=30.0, left=900.0, name="Van")])
    dt[0] = _with(dt[0], [car(x=30.0, z=30.0, left=900.0)], scores=[0.99])
    assert ap(evaluate_kitti(gt, dt, classes=("Car",)), "3d") == pytest.approx(100.0)
    # ... but on a Truck it is.
    gt[0].names[-1] = "Truck"
    assert ap(evaluate_kitti(gt, dt, classes=("Car",)), "3d") == pytest.approx(100 * 100 / 101)
    # Person_sitting for Pedestrian: the same rule.
    peds = [objects([("Pedestrian", 0.0, 0, 0.0, (50.0 + 200 * i, 100.0, 90.0 + 200 * i, 200.0), (1.7, 0.6, 0.8),
                      (-10.0 + 5 * i, 1.6, 15.0), 0.0) for i in range(4)]) for _ in range(25)]
    pdt = [as_detections(f, np.linspace(0.9, 0.5, len(f))) for f in peds]
    sitting = ("Person_sitting", 0.0, 0, 0.0, (1000.0, 100.0, 1040.0, 200.0), (1.2, 0.6, 0.8), (12.0, 1.6, 15.0), 0.0)
    peds[0] = _with(peds[0], [sitting])
    pdt[0] = _with(pdt[0], [("Pedestrian",) + sitting[1:]], scores=[0.99])
    assert ap(evaluate_kitti(peds, pdt, classes=("Pedestrian",)), "3d", cls="Pedestrian") == pytest.approx(100.0)
    # And a Van detected as "Van" plays no part in Car.
    gt[0].names[-1] = "Van"
    dt[0].names[-1] = "Van"
    assert ap(evaluate_kitti(gt, dt, classes=("Car",)), "3d") == pytest.approx(100.0)


def test_difficulty_assignment():
    # Per frame: easy car, 30 px high car (moderate, not easy), occluded=1 (moderate), truncated 0.4
    # (hard only), occluded=3 (never).
    rows = [car(left=50.0), car(x=-8.0, height_px=30.0, left=300.0), car(x=8.0, occluded=1, left=500.0),
            car(x=16.0, truncated=0.4, left=700.0), car(x=-16.0, occluded=2, left=900.0),
            car(x=24.0, occluded=3, left=1100.0)]
    gt = [objects(rows) for _ in range(50)]
    result = evaluate_kitti(gt, [as_detections(f, np.linspace(0.9, 0.4, 6)) for f in gt], classes=("Car",))
    assert result.num_gt[("Car", "easy")] == 50
    assert result.num_gt[("Car", "moderate")] == 150
    assert result.num_gt[("Car", "hard")] == 250
    # Detecting only the hard-only car (truncated 0.4): hard AP < 100, and in easy/moderate it is
    # matched to an ignored ground truth: no FP there, but nothing found either: AP 0.
    only = [as_detections(f, [0.9], keep=[3]) for f in gt]
    result = evaluate_kitti(gt, only, classes=("Car",))
    assert ap(result, "3d", "easy") == 0.0 and ap(result, "3d", "moderate") == 0.0
    assert 0.0 < ap(result, "3d", "hard") < 100.0


def test_small_detections_are_ignored():
    # A false positive 20 px high (below the 25 px of moderate/hard, 40 px of easy) is never counted.
    gt = many_cars(100)
    dt = [as_detections(f, np.linspace(0.9, 0.5, len(f))) for f in gt]
    dt[0] = _with(dt[0], [car(x=30.0, z=60.0, left=900.0, height_px=20.0)], scores=[0.99])
    result = evaluate_kitti(gt, dt, classes=("Car",))
    for difficulty in DIFFICULTIES:
        assert ap(result, "3d", difficulty) == pytest.approx(100.0)
    # 30 px: ignored for easy only.
    dt[0].bbox_2d[-1, 3] = dt[0].bbox_2d[-1, 1] + 30.0
    result = evaluate_kitti(gt, dt, classes=("Car",))
    assert ap(result, "3d", "easy") == pytest.approx(100.0)
    assert ap(result, "3d", "moderate") == pytest.approx(100 * 100 / 101)


def test_recall_thresholds_by_hand():
    # 4 ground truths: each TP is its own recall step (recall jumps 0.25 > 1/40).
    np.testing.assert_array_equal(recall_thresholds([0.1, 0.9, 0.5], 4), [0.9, 0.5, 0.1])
    # 80 ground truths, 80 TPs: 41 thresholds (TP 1, 2, 4, 6, ..., 80).
    thresholds = recall_thresholds(np.arange(80, 0, -1) / 100.0, 80)
    assert len(thresholds) == N_SAMPLE_PTS
    np.testing.assert_allclose(thresholds[:3], [0.80, 0.79, 0.77])
    assert thresholds[-1] == pytest.approx(0.01)
    # All n found: one threshold per TP up to n = 41, then 41: full AP needs >= 41 ground truths.
    for n, expected in ((40, 40), (41, 41), (42, 41), (100, 41)):
        assert len(recall_thresholds(np.arange(n, 0, -1) / 1000.0, n)) == expected


def test_image_overlap_and_camera_iou_conventions():
    a = np.array([[0.0, 0.0, 10.0, 10.0]])
    b = np.array([[5.0, 0.0, 15.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    np.testing.assert_allclose(image_box_overlap(a, b), [[50 / 150, 0.0]])
    np.testing.assert_allclose(image_box_overlap(a, b, 0), [[0.5, 0.0]])
    # Camera frame, y down: a box resting 0.75 m lower shares half its 1.5 m height.
    one = camera_boxes_for_iou([[2.0, 1.5, 10.0]], [[1.5, 1.8, 4.0]], [0.7])
    lower = camera_boxes_for_iou([[2.0, 2.25, 10.0]], [[1.5, 1.8, 4.0]], [0.7])
    assert box_iou_bev(one, lower).item() == pytest.approx(1.0)
    assert box_iou_3d(one, lower).item() == pytest.approx(0.75 / 2.25)
    # ry turns the box in the x-z plane: l along x at ry = 0, along -z at ry = pi/2.
    along_x = camera_boxes_for_iou([[0.0, 0.0, 10.0]], [[1.0, 1.0, 4.0]], [0.0])
    probe_x = camera_boxes_for_iou([[1.5, 0.0, 10.0]], [[1.0, 1.0, 1.0]], [0.0])
    probe_z = camera_boxes_for_iou([[0.0, 0.0, 11.5]], [[1.0, 1.0, 1.0]], [0.0])
    assert box_iou_bev(along_x, probe_x).item() > 0 and box_iou_bev(along_x, probe_z).item() == 0
    along_z = camera_boxes_for_iou([[0.0, 0.0, 10.0]], [[1.0, 1.0, 4.0]], [np.pi / 2])
    assert box_iou_bev(along_z, probe_z).item() > 0 and box_iou_bev(along_z, probe_x).item() == 0


def test_bad_input_is_named():
    gt = many_cars(4)
    with pytest.raises(ValueError, match="one entry per frame"):
        evaluate_kitti(gt, [])
    with pytest.raises(ValueError, match="classes"):
        evaluate_kitti(gt, gt, classes=("Truck",))
    bad = as_detections(gt[0], [0.5] * 4)
    bad.location[0, 0] = np.nan
    with pytest.raises(ValueError, match=r"dt_annos\[0\].*non-finite"):
        evaluate_kitti(gt, [bad])


# ----------------------------------------------------------- vectorised vs the devkit loop, random
def _reference_curves(gt_annos, dt_annos, cls, metric, level, min_overlap):
    """evaluate_object.cpp's eval_class, transcribed loop for loop (precision and AOS, 41 points)."""
    min_height, max_occ, max_trunc = [(40, 0, 0.15), (25, 1, 0.30), (25, 2, 0.50)][level]
    neighbour = {"car": "van", "pedestrian": "person_sitting"}.get(cls)
    frames = []
    for gt, dt in zip(gt_annos, dt_annos):
        names = [n.lower() for n in gt.names]
        care = [i for i, n in enumerate(names) if n != "dontcare"]
        dc = [i for i, n in enumerate(names) if n == "dontcare"]
        ig_gt = []
        for i in care:
            valid = 1 if names[i] == cls else (0 if names[i] == neighbour else -1)
            height = gt.bbox_2d[i, 3] - gt.bbox_2d[i, 1]
            ignore = gt.occluded[i] > max_occ or gt.truncated[i] > max_trunc or height < min_height
            ig_gt.append(0 if valid == 1 and not ignore else (1 if valid == 0 or (ignore and valid == 1) else -1))
        ig_dt = []
        for j in range(len(dt)):
            height = int(abs(dt.bbox_2d[j, 1] - dt.bbox_2d[j, 3]))
            ig_dt.append(1 if height < min_height else (0 if dt.names[j].lower() == cls else -1))
        if metric == "bbox":
            ov = image_box_overlap(dt.bbox_2d, gt.bbox_2d[care])
        elif len(dt) and care:
            g = camera_boxes_for_iou(gt.location[care], gt.dims_hwl[care], gt.rotation_y[care])
            d = camera_boxes_for_iou(dt.location, dt.dims_hwl, dt.rotation_y)
            ov = (box_iou_bev if metric == "bev" else box_iou_3d)(d, g).numpy()
        else:
            ov = np.zeros((len(dt), len(care)))
        dc_ov = image_box_overlap(dt.bbox_2d, gt.bbox_2d[dc], 0) if metric == "bbox" else np.zeros((len(dt), 0))
        alphas = (gt.alpha[care], dt.alpha)
        frames.append((ig_gt, ig_dt, ov, dc_ov, dt.score, alphas))

    def stats(frame, compute_fp, thresh):
        ig_gt, ig_dt, ov, dc_ov, score, (ga, da) = frame
        assigned = [False] * len(ig_dt)
        low = [compute_fp and score[j] < thresh for j in range(len(ig_dt))]
        tp = fp = fn = 0
        sims, v = [], []
        for i in range(len(ig_gt)):
            if ig_gt[i] == -1:
                continue
            det, valid, max_ov, assigned_ignored = -1, -1e7, 0.0, False
            for j in range(len(ig_dt)):
                if ig_dt[j] == -1 or assigned[j] or low[j]:
                    continue
                o = ov[j, i]
                if not compute_fp and o > min_overlap and score[j] > valid:
                    det, valid = j, score[j]
                elif compute_fp and o > min_overlap and (o > max_ov or assigned_ignored) and ig_dt[j] == 0:
                    max_ov, det, valid, assigned_ignored = o, j, 1, False
                elif compute_fp and o > min_overlap and valid == -1e7 and ig_dt[j] == 1:
                    det, valid, assigned_ignored = j, 1, True
            if valid == -1e7 and ig_gt[i] == 0:
                fn += 1
            elif valid != -1e7 and (ig_gt[i] == 1 or ig_dt[det] == 1):
                assigned[det] = True
            elif valid != -1e7:
                tp += 1
                v.append(score[det])
                sims.append((1 + math.cos(ga[i] - da[det])) / 2)
                assigned[det] = True
        if compute_fp:
            fp = sum(1 for j in range(len(ig_dt)) if not (assigned[j] or ig_dt[j] != 0 or low[j]))
            for c in range(dc_ov.shape[1]):
                for j in range(len(ig_dt)):
                    if assigned[j] or ig_dt[j] != 0 or low[j]:
                        continue
                    if dc_ov[j, c] > min_overlap:
                        assigned[j] = True
                        fp -= 1
        return tp, fp, fn, sum(sims), v

    n_gt = sum(sum(1 for x in f[0] if x == 0) for f in frames)
    if n_gt == 0:
        return None, None
    scores = sorted([s for f in frames for s in stats(f, False, 0)[4]], reverse=True)
    thresholds, current = [], 0.0
    for i, s in enumerate(scores):
        left = (i + 1) / n_gt
        right = (i + 2) / n_gt if i < len(scores) - 1 else left
        if (right - current) < (current - left) and i < len(scores) - 1:
            continue
        thresholds.append(s)
        current += 1 / 40
    precision, aos = np.zeros(41), np.zeros(41)
    for t, thresh in enumerate(thresholds):
        tp = fp = sim = 0
        for f in frames:
            a, b, _, s, _ = stats(f, True, thresh)
            tp, fp, sim = tp + a, fp + b, sim + s
        precision[t] = tp / (tp + fp) if tp + fp else 0.0
        aos[t] = sim / (tp + fp) if tp + fp else 0.0
    for t in range(len(thresholds)):
        precision[t], aos[t] = precision[t:].max(), aos[t:].max()
    return precision, aos


def _random_scene(rng, num_frames):
    gts, dts = [], []
    for _ in range(num_frames):
        rows, det_rows, det_scores = [], [], []
        for _ in range(rng.integers(0, 7)):
            name = rng.choice(["Car", "Car", "Car", "Van", "Pedestrian", "Person_sitting", "Truck", "DontCare"])
            x, z = rng.uniform(-15, 15), rng.uniform(5, 50)
            dims = (1.5, 1.7, 4.0) if name in ("Car", "Van", "Truck") else (1.7, 0.6, 0.8)
            left, top, height = rng.uniform(0, 1100), rng.uniform(100, 200), rng.uniform(15, 90)
            box = (left, top, left + height * rng.uniform(0.5, 2), top + height)
            row = (name, rng.choice([0.0, 0.1, 0.2, 0.4, 0.7]), int(rng.integers(0, 4)), rng.uniform(-3, 3), box,
                   dims, (x, 1.6, z), rng.uniform(-3, 3))
            if name == "DontCare":
                row = (name, -1, -1, -10, box, (-1, -1, -1), (-1000, -1000, -1000), -10)
            rows.append(row)
            if name != "DontCare":
                for _ in range(rng.choice([0, 1, 1, 2])):      # missed, found, or found twice
                    jitter = rng.normal(0, [8, 8, 8, 8])
                    shift = rng.normal(0, 0.3, 3)
                    det_rows.append((rng.choice([name, "Car", "Pedestrian"]), -1, -1, row[3] + rng.normal(0, 0.3),
                                     tuple(np.array(box) + jitter), dims, tuple(np.array(row[6]) + shift),
                                     row[7] + rng.normal(0, 0.2)))
                    det_scores.append(float(rng.choice([rng.uniform(), 0.5])))   # some tied scores
        for _ in range(rng.integers(0, 3)):                    # free false positives
            left, top = rng.uniform(0, 1100), rng.uniform(100, 200)
            det_rows.append((rng.choice(["Car", "Pedestrian", "Cyclist"]), -1, -1, 0.0,
                             (left, top, left + 50, top + rng.uniform(10, 60)), (1.5, 1.7, 4.0),
                             (rng.uniform(-15, 15), 1.6, rng.uniform(5, 50)), 0.0))
            det_scores.append(float(rng.uniform()))
        gts.append(objects(rows))
        dts.append(objects(det_rows, det_scores))
    return gts, dts


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_the_devkit_loop_on_random_scenes(seed):
    gts, dts = _random_scene(np.random.default_rng(seed), 40)
    result = evaluate_kitti(gts, dts, classes=("Car", "Pedestrian"), overlap_sets=("strict", "loose"))
    checked = 0
    for overlap in ("strict", "loose"):
        for cls in ("Car", "Pedestrian"):
            for metric in ("bbox", "bev", "3d"):
                for level, difficulty in enumerate(DIFFICULTIES):
                    threshold = MIN_OVERLAP[overlap][metric][cls.lower()]
                    precision, aos = _reference_curves(gts, dts, cls.lower(), metric, level, threshold)
                    got = result.precision[(overlap, cls, metric, difficulty)]
                    if precision is None:
                        assert np.isnan(got).all()
                        continue
                    np.testing.assert_allclose(got, precision, atol=1e-12,
                                               err_msg=f"{overlap} {cls} {metric} {difficulty}")
                    if metric == "bbox":
                        np.testing.assert_allclose(result.precision[(overlap, cls, "aos", difficulty)], aos,
                                                   atol=1e-12)
                    checked += precision.any()
    assert checked > 10      # the scenes exercise non-trivial curves


# ----------------------------------------------------- sensor-frame predictions -> KITTI objects
def test_predictions_outside_the_image_are_dropped(kitti_frames):
    frame = kitti_frames[3]
    calib = frame.meta["calib"]
    behind = frame.boxes[:1].copy()
    behind[0, 0] = -20.0                        # behind the LiDAR / camera
    side = frame.boxes[:1].copy()
    side[0, :2] = (2.0, 30.0)                   # far to the left, outside the field of view
    boxes = np.r_[frame.boxes, behind, side]
    objects_, keep = detections_to_kitti_objects(boxes, ["Car"] * len(boxes), np.ones(len(boxes)), calib)
    np.testing.assert_array_equal(keep, [True] * len(frame.boxes) + [False, False])
    # The projected 2D box of a real label agrees with the annotated one (KITTI annotates the image
    # extent of the object, we project the 3D box: a few pixels).
    np.testing.assert_allclose(objects_.bbox_2d[0], frame.box_meta["bbox_2d"][0], atol=25)
    np.testing.assert_allclose(objects_.alpha[0], frame.box_meta["alpha"][0], atol=0.02)


def test_projection_of_a_box_straddling_the_camera(kitti_frames):
    # A long box beside the car, reaching from behind the camera to 10 m ahead: its visible part runs
    # to the image's left border (the points where its edges cross the near plane project far
    # left), so the clipped 2D box starts at 0; projecting only its corners in front would not.
    from pointmae.data.kitti_detections import project_boxes_to_image
    calib = kitti_frames[3].meta["calib"]
    box = np.array([[3.0, 3.0, -0.8, 14.0, 1.8, 1.5, 0.0]])       # x from -4 m to 10 m, 3 m to the left
    bbox, visible = project_boxes_to_image(box, calib, (1242, 375))
    assert visible[0]
    assert bbox[0, 0] == 0.0 and bbox[0, 2] > 100.0
    # Fully behind: not visible; far to the side: not visible; a normal box: inside the image.
    behind = np.array([[-10.0, 0.0, -0.8, 4.0, 1.8, 1.5, 0.0]])
    side = np.array([[5.0, 40.0, -0.8, 4.0, 1.8, 1.5, 0.0]])
    ahead = np.array([[20.0, 0.0, -0.8, 4.0, 1.8, 1.5, 0.0]])
    bbox, visible = project_boxes_to_image(np.r_[behind, side, ahead], calib, (1242, 375))
    np.testing.assert_array_equal(visible, [False, False, True])
    assert 0 < bbox[2, 0] < bbox[2, 2] < 1241 and 0 < bbox[2, 1] < bbox[2, 3] < 374


def test_camera_frame_iou_equals_the_devkits_polygons():
    # The devkit builds each box's ground polygon in the camera x-z plane: corners (+-l/2, +-w/2)
    # turned by [[cos ry, sin ry], [-sin ry, cos ry]] and moved to (x, z); the 3D overlap multiplies
    # the polygon intersection by the overlap of [y - h, y]. Shapely on those polygons is the oracle.
    from shapely.geometry import Polygon
    rng = np.random.default_rng(0)
    n = 40
    location = np.c_[rng.uniform(-3, 3, n), rng.uniform(1, 2, n), rng.uniform(8, 14, n)]
    dims = np.c_[rng.uniform(1.2, 2, n), rng.uniform(1.5, 2, n), rng.uniform(3, 5, n)]
    ry = rng.uniform(-np.pi, np.pi, n)

    def polygon(i):
        c, s = np.cos(ry[i]), np.sin(ry[i])
        corners = np.array([[1, 1], [1, -1], [-1, -1], [-1, 1]]) * [dims[i, 2] / 2, dims[i, 1] / 2]
        turned = corners @ np.array([[c, s], [-s, c]]).T
        return Polygon(turned + [location[i, 0], location[i, 2]])

    boxes = camera_boxes_for_iou(location, dims, ry)
    bev, iou3d = box_iou_bev(boxes, boxes).numpy(), box_iou_3d(boxes, boxes).numpy()
    overlapping = 0
    for i in range(n):
        for j in range(n):
            a, b = polygon(i), polygon(j)
            inter = a.intersection(b).area
            assert bev[i, j] == pytest.approx(inter / a.union(b).area, abs=1e-9)
            dy = max(0.0, min(location[i, 1], location[j, 1]) - max(location[i, 1] - dims[i, 0],
                                                                  location[j, 1] - dims[j, 0]))
            volume = inter * dy
            union = np.prod(dims[i]) + np.prod(dims[j]) - volume
            assert iou3d[i, j] == pytest.approx(volume / union, abs=1e-9)
            overlapping += 0 < inter and i != j
    assert overlapping > 50


def test_negative_dimensions_outside_dontcare_are_an_error():
    gt = many_cars(4)
    bad = as_detections(gt[0], [0.5] * 4)
    bad.dims_hwl[1, 2] = -4.0
    with pytest.raises(ValueError, match=r"dt_annos\[0\].*negative box dimensions"):
        evaluate_kitti(gt, [bad])


def test_root_entry_equals_the_frame_entry(kitti_frames, shared_data):
    from pointmae.eval.kitti import evaluate_kitti_root
    rng = np.random.default_rng(3)
    jitter = np.array([1, 1, 1, 0, 0, 0, 0])
    predictions = [{"frame_id": f.frame_id, "boxes": f.boxes + rng.normal(0, 0.05, f.boxes.shape) * jitter,
                    "names": f.names, "scores": rng.uniform(size=len(f.boxes))} for f in kitti_frames]
    from_root = evaluate_kitti_root(predictions, shared_data / "kitti", split=None)
    from_frames = evaluate_kitti_predictions(predictions, kitti_frames)
    for key, value in from_frames.ap.items():
        assert from_root.ap[key] == pytest.approx(value, nan_ok=True), key
    with pytest.raises(ValueError, match="no entry for 1 ground-truth frame"):
        evaluate_kitti_root(predictions[1:], shared_data / "kitti", split=None)


def test_a_subset_of_metrics_and_the_summary():
    gt = many_cars(60)
    dt = [as_detections(f, np.linspace(0.9, 0.5, len(f))) for f in gt]
    result = evaluate_kitti(gt, dt, classes=("Car",), overlap_sets=("strict",), metrics=("3d",))
    assert set(k[2] for k in result.ap) == {"3d"}
    text = result.summary()
    assert "Car AP_R40@0.70 (strict; ground truths 60, 60, 60):" in text and "3d  : 100.00, 100.00, 100.00" in text
    assert result.to_flat_dict()["Car/3d_R11/hard@strict"] == pytest.approx(100.0)


def test_mean_ap_skips_classes_without_ground_truth():
    gt = many_cars(100)
    half = [as_detections(f, np.linspace(0.9, 0.5, len(f))) if i % 2 == 0 else as_detections(f, [], [])
            for i, f in enumerate(gt)]
    result = evaluate_kitti(gt, half, classes=("Car", "Pedestrian", "Cyclist"))
    car = result.get("Car", "3d")
    assert 0 < car < 100 and np.isnan(result.get("Pedestrian", "3d"))
    assert result.mean_ap("3d") == pytest.approx(car)
    assert np.isnan(result.mean_ap("3d", classes=("Cyclist",)))
