"""voxelize / voxelize_dynamic / scatter_to_voxels against the pure-PyTorch references."""
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

from pointmae.ops import reference as R
from pointmae.ops import scatter_to_voxels, voxelize, voxelize_dynamic

KITTI_VOXEL = [0.05, 0.05, 0.1]
KITTI_RANGE = [0.0, -40.0, -3.0, 70.4, 40.0, 1.0]
SMALL_VOXEL = [0.5, 0.5, 1.0]
SMALL_RANGE = [-2.0, -2.0, -1.0, 2.0, 2.0, 1.0]  # grid 8 x 8 x 2


def _assert_same(ours, ref):
    assert len(ours) == len(ref)
    for name, a, b in zip(getattr(ours, "_fields", range(len(ours))), ours, ref):
        a = a.cpu()
        assert a.dtype == b.dtype, (name, a.dtype, b.dtype)
        assert a.shape == b.shape, (name, a.shape, b.shape)
        assert torch.equal(a, b), name


# ------------------------------------------------------------------------------------- inputs
@st.composite
def clouds(draw, max_clouds=3, max_points=40):
    """Packed clouds with adversarial structure: duplicates, one repeated point, collinear / coplanar
    points, points on voxel and range boundaries, far-away and NaN / Inf points, empty clouds."""
    sizes = draw(st.lists(st.integers(0, max_points), min_size=1, max_size=max_clouds))
    n = sum(sizes)
    channels = draw(st.integers(3, 5))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    kind = draw(st.sampled_from(["random", "lattice", "identical", "collinear", "coplanar", "boundary"]))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    pts = torch.rand(n, channels, generator=g, dtype=torch.float64) * 5 - 2.5  # some outside the range
    if kind == "lattice":  # many exact duplicates and voxel-boundary coordinates
        pts[:, :3] = torch.randint(-5, 6, (n, 3), generator=g).double() * 0.5
    elif kind == "identical" and n:
        pts[:] = pts[0]
    elif kind == "collinear":
        pts[:, 1] = 0.3
        pts[:, 2] = -0.2
    elif kind == "coplanar":
        pts[:, 2] = 0.0
    elif kind == "boundary":  # exactly on the lower / upper range edges on some axis
        edges = torch.tensor([SMALL_RANGE[:3], SMALL_RANGE[3:]], dtype=torch.float64)
        pick = torch.randint(0, 2, (n, 3), generator=g)
        mask = torch.rand(n, 3, generator=g) < 0.5
        pts[:, :3] = torch.where(mask, edges[pick, torch.arange(3)], pts[:, :3])
    if n and draw(st.booleans()):  # non-finite and very large coordinates
        specials = [float("nan"), float("inf"), -float("inf"), 1e30, -1e30, 3e38]
        count = draw(st.integers(1, max(1, n // 3)))
        rows = torch.randint(0, n, (count,), generator=g)
        cols = torch.randint(0, 3, (count,), generator=g)
        vals = torch.tensor([specials[i % len(specials)] for i in range(count)], dtype=torch.float64)
        pts[rows, cols] = vals
    offsets = torch.tensor([0] + list(np.cumsum(sizes)), dtype=torch.int64)
    return pts.to(dtype), offsets


# ------------------------------------------------------------------------------------- parity
@given(data=clouds(), max_points=st.integers(1, 4), max_voxels=st.integers(1, 12))
def test_voxelize_matches_reference(data, max_points, max_voxels):
    pts, offsets = data
    ours = voxelize(pts, offsets, SMALL_VOXEL, SMALL_RANGE, max_points, max_voxels)
    _assert_same(ours, R.voxelize_reference(pts, offsets, SMALL_VOXEL, SMALL_RANGE, max_points, max_voxels))
    # Every point is accounted for exactly once.
    assert torch.equal(ours.stats.sum(1), offsets.diff())


@given(data=clouds(), voxel=st.sampled_from([SMALL_VOXEL, [0.3, 0.7, 0.45], [2.0, 2.0, 1.5]]))
def test_voxelize_dynamic_matches_reference(data, voxel):
    pts, offsets = data
    ours = voxelize_dynamic(pts, offsets, voxel, SMALL_RANGE)
    _assert_same(ours, R.voxelize_dynamic_reference(pts, offsets, voxel, SMALL_RANGE))
    assert torch.equal(ours.stats.sum(1), offsets.diff())


@given(data=clouds(max_points=30), reduce=st.sampled_from(["mean", "max"]), ties=st.booleans())
def test_scatter_matches_reference(data, reduce, ties):
    pts, offsets = data
    dyn = voxelize_dynamic(pts, offsets, SMALL_VOXEL, SMALL_RANGE)
    feats = torch.nan_to_num(pts, nan=0.0, posinf=1.0, neginf=-1.0)
    if ties:  # many exact ties for max: the lowest point index must win
        feats = torch.round(feats)
    v = dyn.coords.shape[0]
    if reduce == "max":
        out, arg = scatter_to_voxels(feats, dyn.point_to_voxel, v, "max", return_argmax=True)
        ref, ref_arg = R.scatter_to_voxels_reference(feats, dyn.point_to_voxel, v, "max")
        assert torch.equal(out, ref)
        assert torch.equal(arg, ref_arg)
    else:
        out = scatter_to_voxels(feats, dyn.point_to_voxel, v, "mean")
        ref, _ = R.scatter_to_voxels_reference(feats, dyn.point_to_voxel, v, "mean")
        torch.testing.assert_close(out, ref)


def test_scatter_empty_voxels_and_nan():
    feats = torch.tensor([[1.0, float("nan")], [3.0, 2.0], [3.0, float("nan")], [5.0, 5.0]])
    p2v = torch.tensor([0, 0, 0, -1])
    out, arg = scatter_to_voxels(feats, p2v, 3, "max", return_argmax=True)
    assert out[0, 0] == 3.0 and arg[0, 0] == 1  # tie 3.0 / 3.0 -> lower index
    assert math.isnan(out[0, 1]) and arg[0, 1] == 0  # first NaN wins, like torch.max
    assert torch.equal(out[1:], torch.zeros(2, 2)) and torch.equal(arg[1:], torch.full((2, 2), -1))
    mean = scatter_to_voxels(feats[:, :1], p2v, 3, "mean")
    torch.testing.assert_close(mean, torch.tensor([[7.0 / 3], [0.0], [0.0]]))


def test_voxel_rule_and_order():
    # Points on the lower edge are inside, on the upper edge outside; order of first appearance.
    pts = torch.tensor([[1.9, 0.0, 0.0], [-2.0, -2.0, -1.0], [2.0, 0.0, 0.0], [1.95, 0.1, 0.2],
                        [float("nan"), 0.0, 0.0], [-1.99, -1.99, -0.99]])
    out = voxelize(pts, None, SMALL_VOXEL, SMALL_RANGE, 2, 10)
    assert out.coords.tolist() == [[0, 1, 4, 7], [0, 0, 0, 0]]
    assert out.num_points.tolist() == [2, 2]
    assert out.stats.tolist() == [[4, 1, 1, 0]]
    torch.testing.assert_close(out.voxels[0], pts[[0, 3]])
    torch.testing.assert_close(out.voxels[1], pts[[1, 5]])


def test_grid_not_a_multiple_of_voxel_size():
    # (1.0 - 0) / 0.3 = 3.33 -> 3 cells: a point at x = 0.95 (cell 3) is dropped as outside.
    pts = torch.tensor([[0.95, 0.1, 0.1], [0.85, 0.1, 0.1]], dtype=torch.float64)
    out = voxelize_dynamic(pts, None, [0.3, 1.0, 1.0], [0, 0, 0, 1, 1, 1])
    assert out.point_to_voxel.tolist() == [-1, 0]
    assert out.stats.tolist() == [[1, 1, 0]]
    _assert_same(out, R.voxelize_dynamic_reference(pts, torch.tensor([0, 2]), [0.3, 1.0, 1.0], [0, 0, 0, 1, 1, 1]))


def test_padded_input_and_non_contiguous():
    g = torch.Generator().manual_seed(0)
    padded = torch.rand(3, 50, 4, generator=g) * 4 - 2
    offsets = torch.arange(4) * 50
    hard = voxelize(padded, None, SMALL_VOXEL, SMALL_RANGE, 3, 20)
    _assert_same(hard, R.voxelize_reference(padded.reshape(150, 4), offsets, SMALL_VOXEL, SMALL_RANGE, 3, 20))
    dyn = voxelize_dynamic(padded, None, SMALL_VOXEL, SMALL_RANGE)
    assert dyn.point_to_voxel.shape == (3, 50)
    ref = R.voxelize_dynamic_reference(padded.reshape(150, 4), offsets, SMALL_VOXEL, SMALL_RANGE)
    assert torch.equal(dyn.point_to_voxel.reshape(-1), ref[0])
    wide = torch.rand(150, 8, generator=g) * 4 - 2
    strided = wide[:, ::2]
    assert not strided.is_contiguous()
    _assert_same(voxelize(strided, None, SMALL_VOXEL, SMALL_RANGE, 2, 30),
                 R.voxelize_reference(strided.contiguous(), torch.tensor([0, 150]), SMALL_VOXEL, SMALL_RANGE, 2, 30))


def test_half_points():
    g = torch.Generator().manual_seed(1)
    pts = (torch.rand(200, 4, generator=g) * 4 - 2).half()
    _assert_same(voxelize(pts, None, SMALL_VOXEL, SMALL_RANGE, 2, 50),
                 R.voxelize_reference(pts, torch.tensor([0, 200]), SMALL_VOXEL, SMALL_RANGE, 2, 50))


def test_empty_inputs():
    pts = torch.zeros(0, 4)
    out = voxelize(pts, torch.tensor([0, 0, 0]), SMALL_VOXEL, SMALL_RANGE, 5, 10)
    assert out.voxels.shape == (0, 5, 4) and out.coords.shape == (0, 4)
    assert out.voxel_offsets.tolist() == [0, 0, 0] and out.stats.tolist() == [[0] * 4] * 2
    dyn = voxelize_dynamic(pts, torch.tensor([0]), SMALL_VOXEL, SMALL_RANGE)
    assert dyn.point_to_voxel.shape == (0,) and dyn.stats.shape == (0, 3)
    assert scatter_to_voxels(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), 2).tolist() == [[0.0] * 3] * 2


def test_member_rows_grow_with_the_voxels_opened():
    # P = 600: the serial walk starts with rows for ~7000 voxels and must grow past them (~7900
    # voxels here); with 1, 2 and 4 threads (serial walk, parallel keys, shards) the same answer.
    g = torch.Generator().manual_seed(1)
    pts = torch.rand(12000, 3, generator=g) * torch.tensor([20.0, 20.0, 1.0])
    voxel, grid = [0.2, 0.2, 1.0], [0.0, 0.0, 0.0, 20.0, 20.0, 1.0]
    ref = R.voxelize_reference(pts, torch.tensor([0, 12000]), voxel, grid, 600, 12000)
    assert ref[0].shape[0] > 7000
    threads = torch.get_num_threads()
    try:
        for t in (1, 2, 4):
            torch.set_num_threads(t)
            _assert_same(voxelize(pts, None, voxel, grid, 600, 12000), ref)
    finally:
        torch.set_num_threads(threads)


def test_huge_capacity_few_voxels():
    # P and max_voxels both as large as the cloud (300k points in 3 voxels): the output is 3 x P rows,
    # and the op must not reserve max_voxels x P slots (360 GB) on the way.
    n = 300_000
    pts = torch.zeros(n, 3)
    pts[:, 0] = torch.arange(n) % 3 + 0.5
    out = voxelize(pts, None, [1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 3.0, 1.0, 1.0], n, n)
    assert out.voxels.shape == (3, n, 3)
    assert out.num_points.tolist() == [n // 3] * 3
    assert out.coords[:, 3].tolist() == [0, 1, 2]
    torch.testing.assert_close(out.voxels[1, : n // 3], pts[1::3])
    assert bool((out.voxels[1, n // 3:] == 0).all())


def test_leaves_torch_thread_settings_free():
    # With 2-3 threads a large cloud's keys are computed by a helper thread. It must not be a task on
    # torch's inter-op pool: starting that pool makes a later set_num_interop_threads() raise.
    code = ("import torch; from pointmae.ops import voxelize\n"
            "torch.set_num_threads(2)\n"
            "pts = torch.rand(100000, 4) * 4 - 2\n"
            "out = voxelize(pts, None, [0.05, 0.05, 0.1], [-2.0, -2.0, -2.0, 2.0, 2.0, 2.0], 5, 16000)\n"
            "assert out.voxels.shape[0] == 16000\n"
            "torch.set_num_interop_threads(3)\n"
            "print('ok')\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stdout + run.stderr


# ------------------------------------------------------------------------------------- real data
@pytest.fixture(scope="module")
def kitti(shared_data):
    path = shared_data / "kitti" / "training" / "velodyne" / "000001.bin"
    if not path.exists():
        pytest.skip(f"{path} not found")
    return torch.from_numpy(np.fromfile(path, dtype=np.float32).reshape(-1, 4))


def test_kitti_matches_reference_and_threads(kitti):
    offsets = torch.tensor([0, kitti.shape[0]])
    ref = R.voxelize_reference(kitti, offsets, KITTI_VOXEL, KITTI_RANGE, 5, 16000)
    # Two clouds in one batch: a small one (always walked by one thread) and the sweep again (split
    # into shards with 4 threads), each with its own voxel numbering.
    both = torch.cat([kitti[:50000], kitti])
    offsets2 = torch.tensor([0, 50000, both.shape[0]])
    ref_dyn = R.voxelize_dynamic_reference(both, offsets2, KITTI_VOXEL, KITTI_RANGE)
    threads = torch.get_num_threads()
    try:
        for t in (1, 2, 4):  # serial walk, parallel keys + serial walk, 3 shards: the same answer
            torch.set_num_threads(t)
            _assert_same(voxelize(kitti, offsets, KITTI_VOXEL, KITTI_RANGE, 5, 16000), ref)
            _assert_same(voxelize_dynamic(both, offsets2, KITTI_VOXEL, KITTI_RANGE), ref_dyn)
    finally:
        torch.set_num_threads(threads)
    assert ref[0].shape[0] == 16000 and ref[4][0, 3] > 0  # the cap binds on this sweep


def test_kitti_matches_spconv(kitti):
    """spconv's rule differs from ours in precision only: it computes ix = floor((x - x0) / vx) in
    float32 (checked exactly below, per point), we in float64, so points within float32 rounding of a
    voxel face (1913 of 120268 on this sweep at 0.05 m) can land in the neighbouring voxel. On the
    points where both precisions agree, the two voxelizations are identical: same voxels in the same
    (first appearance) order, same counts, same stored points."""
    spconv_utils = pytest.importorskip("spconv.pytorch.utils")

    def spconv_voxelize(points):
        gen = spconv_utils.PointToVoxel(vsize_xyz=KITTI_VOXEL, coors_range_xyz=KITTI_RANGE, num_point_features=4,
                                        max_num_voxels=200000, max_num_points_per_voxel=5,
                                        device=torch.device("cpu"))
        return gen.generate_voxel_with_id(points)

    _, coords, _, point_voxel = spconv_voxelize(kitti)
    xyz = kitti[:, :3]
    cell32 = torch.floor((xyz - torch.tensor(KITTI_RANGE[:3])) / torch.tensor(KITTI_VOXEL)).long()
    grid = torch.tensor([1408, 1600, 40])
    inside32 = ((cell32 >= 0) & (cell32 < grid)).all(1)
    assert torch.equal(point_voxel >= 0, inside32)
    assert torch.equal(coords[point_voxel[inside32]].long().flip(1), cell32[inside32])  # spconv = float32 rule

    cell64, status = R.voxel_cells_reference(kitti, KITTI_VOXEL, KITTI_RANGE)
    agree = (inside32 == (status == 0)) & (~inside32 | (cell32 == cell64).all(1))
    assert 0.95 * len(kitti) < agree.sum() < len(kitti)  # the rules do differ, on a few points
    same = kitti[agree]
    their_voxels, their_coords, their_counts, _ = spconv_voxelize(same)
    ours = voxelize(same, None, KITTI_VOXEL, KITTI_RANGE, 5, 200000)
    assert torch.equal(ours.coords[:, 1:], their_coords)
    assert torch.equal(ours.num_points, their_counts)
    assert torch.equal(ours.voxels, their_voxels)


def test_nuscenes_sweep(shared_data):
    files = sorted((shared_data / "nuscenes" / "samples" / "LIDAR_TOP").glob("*.pcd.bin"))
    if not files:
        pytest.skip("no nuScenes sweep")
    pts = torch.from_numpy(np.fromfile(files[0], dtype=np.float32).reshape(-1, 5))
    vs, pr = [0.075, 0.075, 0.2], [-54.0, -54.0, -5.0, 54.0, 54.0, 3.0]
    out = voxelize(pts, None, vs, pr, 10, 120000)
    _assert_same(out, R.voxelize_reference(pts, torch.tensor([0, pts.shape[0]]), vs, pr, 10, 120000))
    assert out.voxels.shape[2] == 5  # intensity and ring index are carried


# ------------------------------------------------------------------------------------- autograd / compile
def test_gradcheck_scatter():
    g = torch.Generator().manual_seed(2)
    feats = torch.randn(30, 3, generator=g, dtype=torch.float64, requires_grad=True)
    p2v = torch.randint(-1, 6, (30,), generator=g)
    for reduce in ("mean", "max"):
        assert torch.autograd.gradcheck(lambda f, r=reduce: scatter_to_voxels(f, p2v, 7, r), (feats,))


def test_max_gradient_goes_to_lowest_tied_point():
    feats = torch.tensor([[1.0], [2.0], [2.0], [0.5]], requires_grad=True)
    out = scatter_to_voxels(feats, torch.tensor([0, 0, 0, 1]), 2, "max")
    out.sum().backward()
    assert feats.grad.flatten().tolist() == [0.0, 1.0, 0.0, 1.0]


def test_opcheck():
    g = torch.Generator().manual_seed(3)
    pts = torch.rand(60, 4, generator=g) * 4 - 2
    offsets = torch.tensor([0, 25, 60])
    torch.library.opcheck(torch.ops.pointmae.voxelize.default, (pts, offsets, SMALL_VOXEL, SMALL_RANGE, 3, 10))
    torch.library.opcheck(torch.ops.pointmae.voxelize_dynamic.default, (pts, offsets, SMALL_VOXEL, SMALL_RANGE))
    p2v = voxelize_dynamic(pts, offsets, SMALL_VOXEL, SMALL_RANGE).point_to_voxel
    v = int(p2v.max()) + 1
    feats = torch.randn(60, 3, generator=g, dtype=torch.float64, requires_grad=True)
    for reduce in ("mean", "max"):
        torch.library.opcheck(torch.ops.pointmae.scatter_to_voxels.default, (feats, p2v, v, reduce))
        _, arg = torch.ops.pointmae.scatter_to_voxels(feats, p2v, v, reduce)
        torch.library.opcheck(torch.ops.pointmae.scatter_to_voxels_backward.default,
                              (torch.randn(v, 3, dtype=torch.float64), p2v, arg, 60, reduce))


def test_torch_compile_fullgraph():
    def pillar_features(points, offsets):
        dyn = voxelize_dynamic(points, offsets, SMALL_VOXEL, SMALL_RANGE)
        pooled = scatter_to_voxels(points, dyn.point_to_voxel, dyn.coords.shape[0], "max")
        hard = voxelize(points, offsets, SMALL_VOXEL, SMALL_RANGE, 3, 10)
        return pooled.sum() + hard.voxels.sum(), dyn.stats + hard.stats[:, :3]

    g = torch.Generator().manual_seed(4)
    pts = torch.rand(80, 4, generator=g) * 4 - 2
    offsets = torch.tensor([0, 30, 80])
    compiled = torch.compile(pillar_features, fullgraph=True, backend="aot_eager")
    got, expected = compiled(pts, offsets), pillar_features(pts, offsets)
    torch.testing.assert_close(got[0], expected[0])
    assert torch.equal(got[1], expected[1])


def test_deterministic():
    g = torch.Generator().manual_seed(5)
    pts = torch.round(torch.rand(40000, 4, generator=g) * 40 - 20) / 10  # many duplicates
    offsets = torch.tensor([0, 40000])
    a = voxelize(pts, offsets, SMALL_VOXEL, SMALL_RANGE, 4, 100)
    b = voxelize(pts, offsets, SMALL_VOXEL, SMALL_RANGE, 4, 100)
    _assert_same(a, b)
    dyn = voxelize_dynamic(pts, offsets, SMALL_VOXEL, SMALL_RANGE)
    feats = torch.randn(40000, 8, generator=g, requires_grad=True)
    out1 = scatter_to_voxels(feats, dyn.point_to_voxel, dyn.coords.shape[0], "mean")
    (g1,) = torch.autograd.grad(out1.square().sum(), feats)
    out2 = scatter_to_voxels(feats, dyn.point_to_voxel, dyn.coords.shape[0], "mean")
    (g2,) = torch.autograd.grad(out2.square().sum(), feats)
    assert torch.equal(out1, out2) and torch.equal(g1, g2)


# ------------------------------------------------------------------------------------- CUDA
def test_cuda_matches_cpu(cuda_device):
    g = torch.Generator().manual_seed(6)
    pts = torch.round(torch.rand(30000, 4, generator=g) * 50 - 25) / 10
    pts[::97, 0] = float("nan")
    offsets = torch.tensor([0, 0, 10000, 30000])
    for dtype in (torch.float32, torch.float64, torch.float16):
        p = pts.to(dtype)
        cpu = voxelize(p, offsets, SMALL_VOXEL, SMALL_RANGE, 3, 40)
        gpu = voxelize(p.to(cuda_device), offsets.to(cuda_device), SMALL_VOXEL, SMALL_RANGE, 3, 40)
        _assert_same(gpu, cpu)
        dcpu = voxelize_dynamic(p, offsets, SMALL_VOXEL, SMALL_RANGE)
        dgpu = voxelize_dynamic(p.to(cuda_device), offsets.to(cuda_device), SMALL_VOXEL, SMALL_RANGE)
        _assert_same(dgpu, dcpu)
    feats = torch.randn(30000, 5, generator=g, dtype=torch.float64, requires_grad=True)
    fg = feats.detach().to(cuda_device).requires_grad_()
    for reduce in ("mean", "max"):
        out_c = scatter_to_voxels(feats, dcpu.point_to_voxel, dcpu.coords.shape[0], reduce)
        out_g = scatter_to_voxels(fg, dgpu.point_to_voxel, dgpu.coords.shape[0], reduce)
        torch.testing.assert_close(out_g.cpu(), out_c)
        (gc,) = torch.autograd.grad(out_c.sum(), feats)
        (gg,) = torch.autograd.grad(out_g.sum(), fg)
        torch.testing.assert_close(gg.cpu(), gc)


def test_cuda_kitti_and_determinism(cuda_device, kitti):
    ref = voxelize(kitti, None, KITTI_VOXEL, KITTI_RANGE, 5, 16000)
    a = voxelize(kitti.to(cuda_device), None, KITTI_VOXEL, KITTI_RANGE, 5, 16000)
    b = voxelize(kitti.to(cuda_device), None, KITTI_VOXEL, KITTI_RANGE, 5, 16000)
    _assert_same(a, ref)
    _assert_same(b, ref)


def test_cuda_empty_inputs_match_cpu(cuda_device):
    # No points, no clouds, and no point inside the range: every launch is skipped or sized from the
    # data, and the outputs (empty voxels, offsets, statistics) match the CPU.
    outside = torch.full((10, 4), 5.0)
    for pts, offsets in ((torch.zeros(0, 4), torch.tensor([0, 0])), (torch.zeros(0, 4), torch.tensor([0])),
                         (outside, torch.tensor([0, 4, 10]))):
        _assert_same(voxelize(pts.to(cuda_device), offsets.to(cuda_device), SMALL_VOXEL, SMALL_RANGE, 3, 40),
                     voxelize(pts, offsets, SMALL_VOXEL, SMALL_RANGE, 3, 40))
        _assert_same(voxelize_dynamic(pts.to(cuda_device), offsets.to(cuda_device), SMALL_VOXEL, SMALL_RANGE),
                     voxelize_dynamic(pts, offsets, SMALL_VOXEL, SMALL_RANGE))


def test_cuda_scatter_mean_is_bit_identical_to_cpu(cuda_device):
    # Sums start from the voxel's first row on both backends: a sum started from 0 turned a voxel of
    # -0.0 features into +0.0 on CUDA (torch.equal and assert_close treat the two zeros as equal).
    g = torch.Generator().manual_seed(5)
    point_to_voxel = torch.randint(-1, 300, (2000,), generator=g)
    feats = torch.randn(2000, 4, generator=g)
    feats[:, 1] = -0.0
    for dtype in (torch.float32, torch.float64, torch.float16):
        f = feats.to(dtype)
        want = scatter_to_voxels(f, point_to_voxel, 300, "mean")
        got = scatter_to_voxels(f.to(cuda_device), point_to_voxel.to(cuda_device), 300, "mean").cpu()
        assert torch.equal(got, want) and torch.equal(got.signbit(), want.signbit()), dtype


# ------------------------------------------------------------------------------------- bad input
def _raises(match, fn, *args, exc=(ValueError, RuntimeError)):
    with pytest.raises(exc, match=match):
        fn(*args)


def test_bad_inputs():
    pts = torch.rand(10, 4)
    off = torch.tensor([0, 10])
    vz = voxelize
    _raises("voxel_size", vz, pts, off, [float("nan"), 0.1, 0.1], SMALL_RANGE, 5, 10)
    _raises("voxel_size", vz, pts, off, [0.0, 0.1, 0.1], SMALL_RANGE, 5, 10)
    _raises("voxel_size", vz, pts, off, [-0.1, 0.1, 0.1], SMALL_RANGE, 5, 10)
    _raises("voxel_size", vz, pts, off, [0.1, 0.1], SMALL_RANGE, 5, 10)
    _raises("point_range", vz, pts, off, SMALL_VOXEL, [0, 0, 0, 0, 1, 1], 5, 10)
    _raises("point_range", vz, pts, off, SMALL_VOXEL, [1, 0, 0, 0, 1, 1], 5, 10)
    _raises("point_range", vz, pts, off, SMALL_VOXEL, [0, 0, float("nan"), 1, 1, 1], 5, 10)
    _raises("int32", vz, pts, off, [1e-9, 1, 1], [0, 0, 0, 10, 1, 1], 5, 10)  # 1e10 cells on x
    _raises("int64", vz, pts, off, [1e-6, 1e-6, 1e-6], [0, 0, 0, 1000, 1000, 1000], 5, 10)
    _raises("max_points_per_voxel", vz, pts, off, SMALL_VOXEL, SMALL_RANGE, 0, 10)
    _raises("max_voxels", vz, pts, off, SMALL_VOXEL, SMALL_RANGE, 5, 0)
    _raises("C >= 3", vz, torch.rand(10, 2), off, SMALL_VOXEL, SMALL_RANGE, 5, 10)
    _raises("points", vz, torch.rand(10), off, SMALL_VOXEL, SMALL_RANGE, 5, 10)
    _raises("points", vz, torch.randint(0, 5, (10, 4)), off, SMALL_VOXEL, SMALL_RANGE, 5, 10)
    _raises("offsets", vz, pts, torch.tensor([0, 6, 4, 10]), SMALL_VOXEL, SMALL_RANGE, 5, 10)
    _raises("offsets", vz, pts, torch.tensor([0, 9]), SMALL_VOXEL, SMALL_RANGE, 5, 10)
    _raises("offsets", vz, pts, torch.tensor([0, 10], dtype=torch.int32), SMALL_VOXEL, SMALL_RANGE, 5, 10)
    _raises("voxel_size", voxelize_dynamic, pts, off, [0.1, float("inf"), 0.1], SMALL_RANGE)
    _raises("point_range", voxelize_dynamic, pts, off, SMALL_VOXEL, [0, 0, 0, 1, 1])
    if torch.cuda.is_available():
        _raises("offsets", vz, pts, off.cuda(), SMALL_VOXEL, SMALL_RANGE, 5, 10)
    feats = torch.rand(10, 3)
    p2v = torch.zeros(10, dtype=torch.long)
    _raises("point_to_voxel", scatter_to_voxels, feats, torch.full((10,), 5), 5)
    _raises("point_to_voxel", scatter_to_voxels, feats, torch.full((10,), -2), 5)
    _raises("point_to_voxel", scatter_to_voxels, feats, p2v[:9], 5)
    _raises("point_to_voxel", scatter_to_voxels, feats, p2v.int(), 5)
    _raises("features", scatter_to_voxels, feats.long(), p2v, 5)
    _raises("reduce", scatter_to_voxels, feats, p2v, 5, "sum")
    _raises("reduce", torch.ops.pointmae.scatter_to_voxels, feats, p2v, 5, "min")
    _raises("num_voxels", torch.ops.pointmae.scatter_to_voxels, feats, p2v, -1, "mean")


def test_points_within_an_ulp_of_voxel_faces():
    # The kernels skip the division when the product with 1 / v is far from an integer; next to a voxel
    # face they must fall back to the exact float64 quotient, like the reference.
    k = torch.arange(0, 1408, dtype=torch.float64)
    faces = (k * 0.05).float()
    near = torch.cat([faces, torch.nextafter(faces, faces + 1), torch.nextafter(faces, faces - 1)])
    near = near[(near >= 0) & (near < 70.4)]
    pts = torch.stack([near, torch.full_like(near, 0.01), torch.full_like(near, -2.95)], 1)
    for dtype in (torch.float32, torch.float64):
        p = pts.to(dtype)
        offsets = torch.tensor([0, len(p)])
        _assert_same(voxelize_dynamic(p, offsets, KITTI_VOXEL, KITTI_RANGE),
                     R.voxelize_dynamic_reference(p, offsets, KITTI_VOXEL, KITTI_RANGE))


def test_bad_backward_inputs():
    bw = torch.ops.pointmae.scatter_to_voxels_backward
    g = torch.rand(3, 2)
    p2v = torch.tensor([0, 1, 2, -1])
    arg = torch.zeros(3, 2, dtype=torch.long)
    _raises("grad_out", bw, torch.rand(3), p2v, arg, 4, "max")
    _raises("point_to_voxel", bw, g, p2v, arg, 5, "max")
    _raises("point_to_voxel", bw, g, torch.tensor([0, 1, 3, -1]), arg, 4, "mean")
    _raises("arg", bw, g, p2v, arg[:2], 4, "max")
    _raises("reduce", bw, g, p2v, arg, 4, "sum")
    assert bw(g, p2v, arg, 4, "max").shape == (4, 2)
