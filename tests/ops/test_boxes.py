"""Rotated box IoU (BEV, 3D) and rotated BEV NMS: pointmae.ops.boxes against the pure-PyTorch
reference, shapely polygons, closed-form cases and invariances."""
import importlib.util
import math
import pickle

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from pointmae.ops import boxes as box_ops
from pointmae.ops import reference as ref

# Only the shapely cross-checks need shapely; without it they skip and every other test (the CUDA
# ones on a GPU machine that lacks shapely included) still runs.
needs_shapely = pytest.mark.skipif(importlib.util.find_spec("shapely") is None, reason="shapely not installed")


def bev_polygon(box):
    from shapely.geometry import Polygon
    return Polygon(ref.box_corners_bev(box).tolist())

OPS = [("box_iou_bev", box_ops.box_iou_bev, ref.box_iou_bev), ("box_iou_3d", box_ops.box_iou_3d, ref.box_iou_3d)]


def box(x=0.0, y=0.0, z=0.0, dx=1.0, dy=1.0, dz=1.0, h=0.0):
    return [x, y, z, dx, dy, dz, h]


def t(rows, dtype=torch.float64):
    return torch.tensor(rows, dtype=dtype).reshape(-1, 7)


def shapely_iou_bev(a, b):
    pa, pb = bev_polygon(a), bev_polygon(b)
    union = pa.area + pb.area - pa.intersection(pb).area
    return pa.intersection(pb).area / union if union > 0 else 0.0


def shapely_iou_3d(a, b):
    pa, pb = bev_polygon(a), bev_polygon(b)
    a, b = a.tolist(), b.tolist()
    zo = max(0.0, min(a[2] + a[5] / 2, b[2] + b[5] / 2) - max(a[2] - a[5] / 2, b[2] - b[5] / 2))
    inter = pa.intersection(pb).area * zo
    union = pa.area * a[5] + pb.area * b[5] - inter
    return inter / union if union > 0 and inter > 0 else 0.0


# ---------------------------------------------------------------------------------------- strategies
coord = st.floats(-20, 20, allow_nan=False, width=32)
size = st.floats(0.0625, 10, allow_nan=False, width=32)
heading = st.floats(-6.25, 6.25, allow_nan=False, width=32)  # about +-2 pi, exact in float32
random_box = st.builds(box, coord, coord, st.floats(-3, 3, width=32), size, size, size, heading)


@st.composite
def adversarial_pair(draw):
    """(a, b) where b is a near-degenerate variant of a: the cases that break naive clipping."""
    a = draw(random_box)
    x, y, z, dx, dy, dz, h = a
    kind = draw(st.sampled_from(["same", "pi", "two_pi", "tiny_turn", "touch_x", "touch_y", "corner",
                                 "nested", "zero_area", "far", "huge", "tiny", "large_coords", "collinear_strip"]))
    c, s = math.cos(h), math.sin(h)
    eps = draw(st.sampled_from([0.0, 1e-12, 1e-7, 1e-4]))
    if kind == "same":
        b = list(a)
    elif kind == "pi":
        b = box(x, y, z, dx, dy, dz, h + math.pi)
    elif kind == "two_pi":
        b = box(x, y, z, dx, dy, dz, h - 2 * math.pi)
    elif kind == "tiny_turn":  # nearly parallel edges
        b = box(x + eps, y, z, dx, dy, dz, h + eps)
    elif kind == "touch_x":  # sharing an edge (up to eps)
        b = box(x + c * (dx + eps), y + s * (dx + eps), z, dx, dy, dz, h)
    elif kind == "touch_y":
        b = box(x - s * (dy - eps), y + c * (dy - eps), z, dx, dy, dz, h)
    elif kind == "corner":  # touching at one corner, rotated 45 degrees
        r = math.hypot(dx, dy) / 2 + math.sqrt(2) / 2 * min(dx, dy) / 2
        b = box(x + r, y, z, min(dx, dy) / 2, min(dx, dy) / 2, dz, math.pi / 4)
    elif kind == "nested":
        b = box(x, y, z + dz / 4, dx / 3, dy / 3, dz / 3, h + draw(heading))
    elif kind == "zero_area":
        b = box(x, y, z, dx, 0.0, dz, h)
    elif kind == "far":
        b = box(x + 1e3, y - 1e3, z, dx, dy, dz, h)
    elif kind == "huge":
        b = box(x, y, z, 1e4, 1e4, 1e3, h + 0.3)
    elif kind == "tiny":
        b = box(x, y, z, 1e-3, 2e-3, 1e-3, h + 0.7)
    elif kind == "large_coords":
        a = box(x + 1e5, y - 1e5, z, dx, dy, dz, h)
        b = box(x + 1e5 + dx / 3, y - 1e5, z, dx, dy, dz, h + 0.2)
    else:  # collinear_strip: zero-width boxes along one line
        a = box(x, y, z, dx, 0.0, dz, h)
        b = box(x + c * dx / 2, y + s * dx / 2, z, dx, 0.0, dz, h)
    return a, b


boxes_lists = st.lists(random_box, min_size=0, max_size=5)


# --------------------------------------------------------------------------------- parity: reference
@pytest.mark.parametrize("name,fn,ref_fn", OPS)
@given(a=boxes_lists, b=boxes_lists)
def test_random_matches_reference(name, fn, ref_fn, a, b):
    a, b = t(a), t(b)
    torch.testing.assert_close(fn(a, b), ref_fn(a, b), atol=1e-9, rtol=0)
    # float32 through the same kernel, against the float64 reference
    torch.testing.assert_close(fn(a.float(), b.float()), ref_fn(a, b).float(), atol=2e-4, rtol=0)


@needs_shapely
@pytest.mark.parametrize("name,fn,ref_fn", OPS)
@given(pair=adversarial_pair())
def test_adversarial_matches_reference_and_shapely(name, fn, ref_fn, pair):
    a, b = t(pair[0]), t(pair[1])
    both = torch.cat([a, b])
    got = fn(both, both)
    assert torch.isfinite(got).all() and (got >= 0).all() and (got <= 1).all()
    # The references work in world coordinates, where 1e5 offsets cost them ~1e-6 of cancellation in
    # the shoelace sum; IoU is translation invariant, so they get the pair moved next to the origin.
    # The kernel must match that from the original, far-away coordinates.
    near = both.clone()
    near[:, :2] -= both[:1, :2]
    torch.testing.assert_close(got, ref_fn(near, near), atol=1e-7, rtol=0)
    shapely_fn = shapely_iou_bev if name == "box_iou_bev" else shapely_iou_3d
    expected = torch.tensor([[shapely_fn(p, q) for q in near] for p in near], dtype=torch.float64)
    torch.testing.assert_close(got, expected, atol=1e-7, rtol=0)
    torch.testing.assert_close(got, got.T, atol=0, rtol=0)  # bit-for-bit symmetric
    # float32: against the float64 reference on the float32-rounded boxes
    both32 = both.float()
    got32 = fn(both32, both32)
    assert torch.isfinite(got32).all() and (got32 >= 0).all() and (got32 <= 1).all()
    torch.testing.assert_close(got32, got32.T, atol=0, rtol=0)
    near32 = both32.double()
    near32[:, :2] -= near32[:1, :2].clone()
    torch.testing.assert_close(got32.double(), ref_fn(near32, near32), atol=5e-5, rtol=0)


@needs_shapely
@pytest.mark.parametrize("name,fn,ref_fn", OPS)
@given(a=st.lists(random_box, min_size=1, max_size=6), b=st.lists(random_box, min_size=1, max_size=6))
def test_random_matches_shapely(name, fn, ref_fn, a, b):
    a, b = t(a), t(b)
    shapely_fn = shapely_iou_bev if name == "box_iou_bev" else shapely_iou_3d
    expected = torch.tensor([[shapely_fn(p, q) for q in b] for p in a], dtype=torch.float64)
    torch.testing.assert_close(fn(a, b), expected, atol=1e-9, rtol=0)


# ---------------------------------------------------------------------------------------- closed form
def test_axis_aligned_overlaps():
    a = t([box(0, 0, 0, 2, 2, 2)])
    b = t([box(1, 0, 0, 2, 2, 2), box(1, 1, 0, 2, 2, 2), box(2, 0, 0, 2, 2, 2), box(5, 5, 0, 2, 2, 2),
           box(0, 0, 1, 2, 2, 2), box(0.5, 0, 0, 1, 1, 1)])
    # BEV: overlap 1x2 -> 2/6; 1x1 -> 1/7; touching edge -> 0; apart -> 0; same footprint -> 1; nested -> 1/4
    torch.testing.assert_close(box_ops.box_iou_bev(a, b),
                               torch.tensor([[2 / 6, 1 / 7, 0, 0, 1, 1 / 4]], dtype=torch.float64))
    # 3D: 4/12; 2/14; 0; 0; z overlap 1 -> 4/12; nested volume 1 of 8 -> 1/8
    torch.testing.assert_close(box_ops.box_iou_3d(a, b),
                               torch.tensor([[4 / 12, 2 / 14, 0, 0, 4 / 12, 1 / 8]], dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_square_against_itself_turned_45_degrees(dtype):
    # The intersection is a regular octagon of area 8(sqrt 2 - 1) for a 2x2 square: IoU = 1/sqrt(2).
    a = t([box(3, -4, 0, 2, 2, 2, 0.25)], dtype)
    b = t([box(3, -4, 0, 2, 2, 2, 0.25 + math.pi / 4)], dtype)
    expected = torch.tensor([[1 / math.sqrt(2)]], dtype=dtype)
    torch.testing.assert_close(box_ops.box_iou_bev(a, b), expected)
    torch.testing.assert_close(box_ops.box_iou_3d(a, b), expected)


def test_rectangle_crossing_itself_at_right_angle():
    # 4x1 and the same turned by 90 degrees: a 1x1 overlap, union 4 + 4 - 1 = 7.
    a = t([box(0, 0, 0, 4, 1, 1, 0.0), box(0, 0, 0, 4, 1, 1, math.pi / 2)])
    torch.testing.assert_close(box_ops.box_iou_bev(a, a), torch.tensor([[1, 1 / 7], [1 / 7, 1]], dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_identical_disjoint_and_heading_periodicity(dtype):
    base = box(10, -3, 1, 4.2, 1.8, 1.5, 0.7)
    variants = t([base, base[:6] + [0.7 + math.pi], base[:6] + [0.7 - 2 * math.pi], base[:6] + [0.7 + 3 * math.pi]],
                 dtype)
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    for fn in (box_ops.box_iou_bev, box_ops.box_iou_3d):
        torch.testing.assert_close(fn(variants, variants), torch.ones(4, 4, dtype=dtype), atol=tol, rtol=0)
        far = t([box(100, 100, 1, 4.2, 1.8, 1.5, 0.7)], dtype)
        assert (fn(variants, far) == 0).all()


def test_zero_size_boxes_give_zero_not_nan():
    a = t([box(0, 0, 0, 0, 0, 0), box(0, 0, 0, 2, 0, 1), box(0, 0, 0, 2, 2, 0), box(0, 0, 0, 2, 2, 2)])
    bev, iou3d = box_ops.box_iou_bev(a, a), box_ops.box_iou_3d(a, a)
    assert torch.isfinite(bev).all() and torch.isfinite(iou3d).all()
    # Only boxes with area (BEV) / volume (3D) overlap anything, themselves included.
    assert bev.tolist() == [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]]
    assert iou3d.tolist() == [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]]


@given(a=st.lists(random_box, min_size=1, max_size=4), b=st.lists(random_box, min_size=1, max_size=4),
       angle=st.floats(-math.pi, math.pi), shift=st.tuples(st.floats(-50, 50), st.floats(-50, 50), st.floats(-5, 5)))
def test_invariant_to_moving_both_boxes_together(a, b, angle, shift):
    a, b = t(a), t(b)

    def move(boxes):
        out = boxes.clone()
        c, s = math.cos(angle), math.sin(angle)
        out[:, 0] = c * boxes[:, 0] - s * boxes[:, 1] + shift[0]
        out[:, 1] = s * boxes[:, 0] + c * boxes[:, 1] + shift[1]
        out[:, 2] = boxes[:, 2] + shift[2]
        out[:, 6] = boxes[:, 6] + angle
        return out

    for fn in (box_ops.box_iou_bev, box_ops.box_iou_3d):
        torch.testing.assert_close(fn(move(a), move(b)), fn(a, b), atol=1e-9, rtol=0)
        torch.testing.assert_close(fn(b, a), fn(a, b).T, atol=0, rtol=0)


def test_extra_columns_ignored_and_non_contiguous():
    torch.manual_seed(0)
    a = torch.randn(6, 9, dtype=torch.float64)
    a[:, 3:6] = a[:, 3:6].abs() + 0.5
    b = torch.randn(7, 5, dtype=torch.float64).T  # (5, 7), column-major: not contiguous
    b[:, 3:6] = b[:, 3:6].abs() + 0.5
    assert not b.is_contiguous()
    torch.testing.assert_close(box_ops.box_iou_bev(a, b), ref.box_iou_bev(a[:, :7], b.contiguous()))
    torch.testing.assert_close(box_ops.box_iou_3d(a, b), ref.box_iou_3d(a[:, :7], b.contiguous()))


def test_batched_padded_input():
    torch.manual_seed(1)
    a = torch.rand(3, 4, 7, dtype=torch.float64) * 4
    b = torch.rand(3, 5, 8, dtype=torch.float64) * 4
    got = box_ops.box_iou_bev(a, b)
    assert got.shape == (3, 4, 5)
    for i in range(3):
        torch.testing.assert_close(got[i], box_ops.box_iou_bev(a[i], b[i]))


@pytest.mark.parametrize("fn", [box_ops.box_iou_bev, box_ops.box_iou_3d])
@pytest.mark.parametrize("n,m", [(0, 0), (0, 3), (3, 0)])
def test_empty_inputs(fn, n, m):
    a, b = torch.rand(n, 7), torch.rand(m, 8)
    out = fn(a, b)
    assert out.shape == (n, m) and out.dtype == torch.float32


def test_half_precision_runs_and_is_close():
    torch.manual_seed(2)
    a = torch.rand(8, 7) * 3
    b = torch.rand(6, 7) * 3
    got = box_ops.box_iou_bev(a.half(), b.half())
    assert got.dtype == torch.float16
    torch.testing.assert_close(got.float(), box_ops.box_iou_bev(a.half().float(), b.half().float()), atol=2e-3, rtol=0)


# ------------------------------------------------------------------------------------------------ NMS
def greedy_from_matrix(iou, scores, thr):
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    kept = []
    for i in order:
        if all(iou[i, k] <= thr for k in kept):
            kept.append(i)
    return kept


@st.composite
def nms_inputs(draw):
    n = draw(st.integers(0, 12))
    centres = draw(st.lists(st.tuples(st.floats(-4, 4), st.floats(-4, 4)), min_size=n, max_size=n))
    rows = [box(x, y, 0, draw(size) / 3 + 0.5, draw(size) / 3 + 0.5, 1.0, draw(heading)) for x, y in centres]
    if n and draw(st.booleans()):  # exact duplicates
        rows += rows[: draw(st.integers(1, n))]
    # few distinct score values so that ties are common
    scores = draw(st.lists(st.sampled_from([0.1, 0.5, 0.5, 0.9, 1.0, -2.0]), min_size=len(rows), max_size=len(rows)))
    thr = draw(st.sampled_from([0.0, 0.1, 0.3, 0.5, 0.7, 1.0]))
    return t(rows) if rows else torch.zeros(0, 7, dtype=torch.float64), torch.tensor(scores, dtype=torch.float64), thr


@given(inputs=nms_inputs())
def test_nms_matches_reference_greedy(inputs):
    boxes, scores, thr = inputs
    kept = box_ops.nms_bev(boxes, scores, thr)
    assert kept.dtype == torch.int64
    assert kept.tolist() == ref.nms_bev(boxes, scores, thr).tolist()
    # descending score, ties by index
    assert [(-float(scores[i]), i) for i in kept] == sorted((-float(scores[i]), i) for i in kept)


def test_nms_matches_greedy_over_iou_matrix_at_scale():
    torch.manual_seed(3)
    n = 400
    boxes = torch.cat([torch.rand(n, 2) * 30, torch.zeros(n, 1), torch.rand(n, 3) * 3 + 0.5,
                       torch.rand(n, 1) * 6.3], 1)
    scores = torch.rand(n).round(decimals=2)  # ties
    iou = box_ops.box_iou_bev(boxes, boxes)
    for thr in (0.0, 0.2, 0.5):
        kept = box_ops.nms_bev(boxes, scores, thr)
        assert kept.tolist() == greedy_from_matrix(iou, scores, thr)
    assert box_ops.nms_bev(boxes, scores, 1.0).tolist() == sorted(range(n), key=lambda i: (-float(scores[i]), i))


@pytest.mark.parametrize("threads", [1, 2])
def test_nms_both_cpu_schedules_agree(threads):
    # One thread: lazy greedy scan. Several: per-box overlap lists in one parallel region, then greedy.
    torch.manual_seed(8)
    n = 600
    det = torch.cat([torch.rand(n, 2) * 20, torch.zeros(n, 1), torch.rand(n, 3) * 2 + 1, torch.rand(n, 1) * 6], 1)
    scores = torch.rand(n).round(decimals=2)
    iou = box_ops.box_iou_bev(det, det)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        for thr in (0.0, 0.25, 0.6):
            assert box_ops.nms_bev(det, scores, thr).tolist() == greedy_from_matrix(iou, scores, thr)
    finally:
        torch.set_num_threads(before)


def test_nms_simple_cases():
    boxes = t([box(0, 0, 0, 2, 2, 1), box(0.1, 0, 0, 2, 2, 1), box(5, 5, 0, 2, 2, 1), box(0, 0, 0, 2, 2, 1, math.pi)])
    scores = torch.tensor([0.9, 0.95, 0.3, 0.95], dtype=torch.float64)
    assert box_ops.nms_bev(boxes, scores, 0.5).tolist() == [1, 2]
    assert box_ops.nms_bev(boxes, scores, 1.0).tolist() == [1, 3, 0, 2]
    assert box_ops.nms_bev(boxes[:0], scores[:0], 0.5).tolist() == []
    assert box_ops.nms_bev(boxes[:1], scores[:1], 0.5).tolist() == [0]


def test_nms_packed_and_padded_batches():
    torch.manual_seed(4)
    boxes = torch.cat([torch.rand(10, 2) * 5, torch.zeros(10, 1), torch.rand(10, 3) + 1, torch.rand(10, 1)], 1)
    scores = torch.rand(10)
    offsets = torch.tensor([0, 4, 4, 10])
    kept = box_ops.nms_bev(boxes, scores, 0.3, offsets=offsets)
    expected = torch.cat([box_ops.nms_bev(boxes[:4], scores[:4], 0.3), box_ops.nms_bev(boxes[4:], scores[4:], 0.3) + 4])
    assert kept.tolist() == expected.tolist()
    padded = box_ops.nms_bev(boxes.view(2, 5, 7), scores.view(2, 5), 0.3)
    assert [k.tolist() for k in padded] == [box_ops.nms_bev(boxes[i * 5:(i + 1) * 5], scores[i * 5:(i + 1) * 5], 0.3)
                                            .tolist() for i in range(2)]
    with pytest.raises(ValueError, match="offsets"):
        box_ops.nms_bev(boxes, scores, 0.3, offsets=torch.tensor([0, 6, 4, 10]))


# --------------------------------------------------------------------------------------------- real data
@pytest.fixture(scope="module")
def nuscenes_boxes(shared_data):
    with open(shared_data / "nuscenes" / "n015-2018-07-24-11-22-45+0800.pkl", "rb") as f:
        info = pickle.load(f)["data_list"][0]
    # (x, y, z, l, w, h, yaw) + (vx, vy): 9 columns, the last two must be ignored
    rows = [inst["bbox_3d"] + list(inst["velocity"]) for inst in info["instances"]]
    return torch.tensor(rows, dtype=torch.float64)


def test_nuscenes_ground_truth_boxes(nuscenes_boxes):
    gt = nuscenes_boxes
    assert gt.shape == (69, 9)
    torch.manual_seed(5)
    # detections: the ground truth jittered, three times over
    det = gt.repeat(3, 1)
    det[:, :2] += torch.randn(det.shape[0], 2, dtype=torch.float64) * 0.3
    det[:, 6] += torch.randn(det.shape[0], dtype=torch.float64) * 0.2
    iou = box_ops.box_iou_bev(det, gt)
    torch.testing.assert_close(iou, ref.box_iou_bev(det, gt))
    torch.testing.assert_close(box_ops.box_iou_3d(det, gt), ref.box_iou_3d(det, gt))
    assert torch.allclose(box_ops.box_iou_bev(gt, gt).diagonal(), torch.ones(69, dtype=torch.float64))
    scores = torch.rand(det.shape[0], dtype=torch.float64)
    kept = box_ops.nms_bev(det.float(), scores.float(), 0.1)
    assert kept.tolist() == greedy_from_matrix(box_ops.box_iou_bev(det.float(), det.float()), scores.float(), 0.1)


# ----------------------------------------------------------------------------------- torch.library / compile
def _sample(n=5, m=4, dtype=torch.float64, device="cpu"):
    g = torch.Generator().manual_seed(6)
    a = torch.cat([torch.rand(n, 3, generator=g) * 3, torch.rand(n, 3, generator=g) + 0.5,
                   torch.rand(n, 1, generator=g) * 6], 1)
    b = torch.cat([torch.rand(m, 3, generator=g) * 3, torch.rand(m, 3, generator=g) + 0.5,
                   torch.rand(m, 1, generator=g) * 6], 1)
    return a.to(device, dtype), b.to(device, dtype)


@pytest.mark.parametrize("op", [torch.ops.pointmae.box_iou_bev.default, torch.ops.pointmae.box_iou_3d.default])
def test_opcheck_iou(op):
    a, b = _sample()
    torch.library.opcheck(op, (a, b))
    torch.library.opcheck(op, (a.float(), b[:0].float()))


def test_opcheck_nms():
    a, _ = _sample(n=8)
    torch.library.opcheck(torch.ops.pointmae.nms_bev.default, (a, torch.rand(8, dtype=torch.float64), 0.2))


def test_torch_compile_fullgraph():
    a, b = _sample(n=12, m=7, dtype=torch.float32)
    scores = torch.linspace(0, 1, 12)

    def detect(a, b, scores):
        iou = box_ops.box_iou_bev(a, b) + box_ops.box_iou_3d(a, b)
        kept = torch.ops.pointmae.nms_bev.default(a, scores, 0.1)
        return iou, a.index_select(0, kept)

    compiled = torch.compile(detect, fullgraph=True, backend="aot_eager")
    got, expected = compiled(a, b, scores), detect(a, b, scores)
    torch.testing.assert_close(got[0], expected[0])
    torch.testing.assert_close(got[1], expected[1])


def test_deterministic():
    a, b = _sample(n=300, m=200, dtype=torch.float32)
    scores = torch.rand(300).round(decimals=1)
    for fn in (box_ops.box_iou_bev, box_ops.box_iou_3d):
        assert torch.equal(fn(a, b), fn(a, b))
    assert torch.equal(box_ops.nms_bev(a, scores, 0.2), box_ops.nms_bev(a, scores, 0.2))


def test_no_gradient_flows():
    a, b = _sample()
    a.requires_grad_(True)
    out = box_ops.box_iou_bev(a, b)
    assert not out.requires_grad


# ------------------------------------------------------------------------------------------------ devices
def test_cpu_cuda_parity(cuda_device):
    torch.manual_seed(7)
    n = 700
    boxes = torch.cat([torch.rand(n, 2) * 40, torch.rand(n, 1), torch.rand(n, 3) * 4 + 0.2, torch.rand(n, 1) * 7], 1)
    boxes[::7] = boxes[1::7][: boxes[::7].shape[0]]  # duplicates
    scores = torch.rand(n).round(decimals=2)
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        a = boxes.to(dtype)
        for fn in (box_ops.box_iou_bev, box_ops.box_iou_3d):
            torch.testing.assert_close(fn(a.to(cuda_device), a[:300].to(cuda_device)).cpu(), fn(a, a[:300]),
                                       atol=tol, rtol=0)
        kept_gpu = box_ops.nms_bev(a.to(cuda_device), scores.to(cuda_device), 0.3)
        assert kept_gpu.device.type == "cuda"
        assert kept_gpu.cpu().tolist() == box_ops.nms_bev(a, scores, 0.3).tolist()
    half = box_ops.box_iou_bev(boxes[:50].half().to(cuda_device), boxes[:40].half().to(cuda_device))
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float().cpu(), box_ops.box_iou_bev(boxes[:50].half().float(),
                                                                       boxes[:40].half().float()), atol=2e-3, rtol=0)
    empty = box_ops.box_iou_bev(boxes[:0].to(cuda_device), boxes.to(cuda_device))
    assert empty.shape == (0, n)
    assert box_ops.nms_bev(boxes[:0].to(cuda_device), scores[:0].to(cuda_device), 0.5).numel() == 0


def test_cuda_iou_rows_beyond_one_grid(cuda_device):
    # gridDim.y is capped at 65535 row tiles of 16 boxes; more rows are covered by the grid-stride loop.
    n = 65535 * 16 + 37
    torch.manual_seed(8)
    a = torch.cat([torch.rand(n, 3) * 20, torch.rand(n, 3) * 4 + 0.2, torch.rand(n, 1) * 7], 1)
    b = a[torch.tensor([0, n - 1, n // 2])]
    got = box_ops.box_iou_bev(a.to(cuda_device), b.to(cuda_device)).cpu()
    torch.testing.assert_close(got, box_ops.box_iou_bev(a, b), atol=1e-5, rtol=0)
    assert got[0, 0] > 0.999 and got[n - 1, 1] > 0.999 and got[n // 2, 2] > 0.999


def test_device_determinism(device):
    a, b = _sample(n=130, m=70, dtype=torch.float32, device=device)
    scores = torch.rand(130).round(decimals=1).to(device)
    assert torch.equal(box_ops.box_iou_bev(a, b), box_ops.box_iou_bev(a, b))
    assert torch.equal(box_ops.nms_bev(a, scores, 0.1), box_ops.nms_bev(a, scores, 0.1))


# -------------------------------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize("fn,op", [(box_ops.box_iou_bev, "box_iou_bev"), (box_ops.box_iou_3d, "box_iou_3d")])
def test_iou_bad_inputs(fn, op):
    good = torch.rand(3, 7) + 0.1
    with pytest.raises(ValueError, match=r"`boxes_a` must be a 2-D tensor \(N, >=7\).*got shape \[3, 6\]"):
        fn(good[:, :6], good)
    with pytest.raises(ValueError, match=r"`boxes_b` must be a 2-D tensor.*got shape \[7\]"):
        fn(good, good[0])
    with pytest.raises(ValueError, match=r"`boxes_a` must be float32, float64 or float16, got Long"):
        fn(good.long(), good.long())
    with pytest.raises(ValueError, match=r"`boxes_b` must have the dtype of `boxes_a`"):
        fn(good, good.double())
    with pytest.raises(ValueError, match=r"batched input"):
        fn(good[None], good)
    bad = good.clone()
    bad[1, 4] = -1.0
    with pytest.raises(ValueError, match=r"`boxes_b` must have non-negative sizes.*row 1"):
        fn(good, bad)
    for value in (float("nan"), float("inf")):
        bad = good.clone()
        bad[2, 6] = value
        with pytest.raises(ValueError, match=r"`boxes_a` must hold finite values.*row 2"):
            fn(bad, good)
    # NaN in an ignored extra column is fine
    extra = torch.cat([good, torch.full((3, 1), float("nan"))], 1)
    assert torch.isfinite(fn(extra, good)).all()


def test_iou_wrong_device_meta():
    good = torch.rand(3, 7) + 0.1
    with pytest.raises((ValueError, RuntimeError), match=r"boxes_b|device|meta"):
        box_ops.box_iou_bev(good, good.to("meta"))


def test_nms_bad_inputs():
    boxes = torch.rand(4, 7) + 0.1
    scores = torch.rand(4)
    with pytest.raises(ValueError, match=r"`scores` must be a 1-D tensor \(N,\) with N = boxes.size\(0\) = 4, got shape \[3\]"):
        box_ops.nms_bev(boxes, scores[:3], 0.5)
    with pytest.raises(ValueError, match=r"`scores` must be a floating-point tensor"):
        box_ops.nms_bev(boxes, torch.arange(4), 0.5)
    with pytest.raises(ValueError, match=r"`scores` must not contain NaN"):
        box_ops.nms_bev(boxes, torch.tensor([0.1, float("nan"), 0.2, 0.3]), 0.5)
    for thr in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"`iou_threshold` must be in \[0, 1\]"):
            box_ops.nms_bev(boxes, scores, thr)
    with pytest.raises(ValueError, match=r"`boxes` must be a 2-D tensor"):
        box_ops.nms_bev(boxes[:, :5], scores, 0.5)
    with pytest.raises(ValueError, match=r"`boxes` must be float32, float64 or float16"):
        box_ops.nms_bev(boxes.int(), scores, 0.5)
    bad = boxes.clone()
    bad[3, 3] = -2
    with pytest.raises(ValueError, match=r"`boxes` must have non-negative sizes.*row 3"):
        box_ops.nms_bev(bad, scores, 0.5)
    bad[3, 3] = float("nan")
    with pytest.raises(ValueError, match=r"`boxes` must hold finite values.*row 3"):
        box_ops.nms_bev(bad, scores, 0.5)


def test_nms_scores_on_other_device(cuda_device):
    boxes = torch.rand(4, 7) + 0.1
    with pytest.raises(ValueError, match=r"`scores` must be on the same device as `boxes`"):
        box_ops.nms_bev(boxes, torch.rand(4, device=cuda_device), 0.5)
    with pytest.raises(ValueError, match=r"`boxes_b` must be on the same device as `boxes_a`"):
        box_ops.box_iou_bev(boxes, boxes.to(cuda_device))
