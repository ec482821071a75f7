"""knn and ball_query: exact parity with the reference, edge cases, autograd, compile, errors."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import pointmae.ops as ops
from pointmae.ops import reference
from pointmae.ops._batch import offsets_from_sizes

MODES = ["random", "duplicates", "identical", "collinear", "coplanar", "integer_grid", "large", "huge"]


def make_cloud(n, mode, gen, dtype):
    """n points of one adversarial family (float64 first, then rounded to `dtype`)."""
    if n == 0:
        return torch.zeros(0, 3, dtype=dtype)
    if mode == "random":
        pts = torch.rand(n, 3, generator=gen, dtype=torch.float64)
    elif mode == "duplicates":
        base = torch.rand(max(1, n // 3), 3, generator=gen, dtype=torch.float64)
        pts = base[torch.randint(0, base.shape[0], (n,), generator=gen)]
    elif mode == "identical":
        pts = torch.rand(1, 3, generator=gen, dtype=torch.float64).expand(n, 3).clone()
    elif mode == "collinear":
        t = torch.rand(n, 1, generator=gen, dtype=torch.float64)
        pts = torch.tensor([[0.3, -1.0, 2.0]], dtype=torch.float64) + t * torch.tensor([[1.0, 2.0, -0.5]],
                                                                                        dtype=torch.float64)
    elif mode == "coplanar":
        pts = torch.rand(n, 3, generator=gen, dtype=torch.float64)
        pts[:, 2] = 0.25
    elif mode == "integer_grid":  # many exactly equal distances: the tie-breaking is exercised
        pts = torch.randint(0, 4, (n, 3), generator=gen).to(torch.float64)
    elif mode == "large":  # coarse float32 spacing far from the origin
        pts = 1e7 + 1e3 * torch.rand(n, 3, generator=gen, dtype=torch.float64)
    elif mode == "huge":  # float32 squared distances overflow to inf
        pts = 1e30 * (torch.rand(n, 3, generator=gen, dtype=torch.float64) - 0.5)
    else:
        raise AssertionError(mode)
    return pts.to(dtype)


def make_batch(sizes_points, sizes_queries, mode, seed, dtype):
    """Packed (query, query_offsets, points, point_offsets); queries mix cloud points and new points."""
    gen = torch.Generator().manual_seed(seed)
    points, queries = [], []
    for n, m in zip(sizes_points, sizes_queries):
        cloud = make_cloud(n, mode, gen, dtype)
        fresh = make_cloud(m, mode, gen, dtype)
        if n > 0 and m > 0:  # half of the queries sit exactly on points (distance 0, duplicates)
            pick = torch.randint(0, n, (m // 2,), generator=gen)
            fresh[: m // 2] = cloud[pick]
        points.append(cloud)
        queries.append(fresh)
    return (torch.cat(queries), offsets_from_sizes(sizes_queries), torch.cat(points), offsets_from_sizes(sizes_points))


def assert_same(actual, expected):
    (d, i), (rd, ri) = actual, expected
    assert d.dtype == rd.dtype and i.dtype == torch.int64
    assert d.shape == rd.shape and i.shape == ri.shape
    torch.testing.assert_close(i, ri, rtol=0, atol=0)
    torch.testing.assert_close(d, rd, rtol=0, atol=0, equal_nan=False)


batches = st.integers(1, 4).flatmap(lambda b: st.tuples(st.lists(st.integers(0, 40), min_size=b, max_size=b),
                                                        st.lists(st.integers(0, 12), min_size=b, max_size=b)))


@given(sizes=batches, mode=st.sampled_from(MODES), k=st.integers(0, 48), seed=st.integers(0, 2**31 - 1),
       dtype=st.sampled_from([torch.float32, torch.float64]))
def test_knn_matches_reference(sizes, mode, k, seed, dtype):
    q, qo, p, po = make_batch(sizes[0], sizes[1], mode, seed, dtype)
    got = ops.knn(q, qo, p, po, k)
    assert_same(got, reference.knn_reference(q, qo, p, po, k))
    # Sorted ascending and padding only at the end of a row.
    d, i = got
    assert bool((d[:, 1:] >= d[:, :-1]).all()) if k > 1 and d.numel() else True
    assert bool(((i == -1) == torch.isinf(d)).all()) or mode == "huge"


@given(sizes=batches, mode=st.sampled_from(MODES), k=st.integers(0, 48), seed=st.integers(0, 2**31 - 1),
       dtype=st.sampled_from([torch.float32, torch.float64]),
       radius=st.sampled_from([0.0, 0.1, 0.35, 1.0, 2.0, 1e3, 1e31]))
def test_ball_query_matches_reference(sizes, mode, k, seed, dtype, radius):
    q, qo, p, po = make_batch(sizes[0], sizes[1], mode, seed, dtype)
    got = ops.ball_query(q, qo, p, po, radius, k)
    assert_same(got, reference.ball_query_reference(q, qo, p, po, radius, k))
    d, i = got
    limit = torch.tensor(radius * radius, dtype=dtype)
    assert bool((d[i >= 0] <= limit).all())


def test_ties_go_to_lowest_index_and_boundary_is_inside():
    # A query at the centre of a unit cube: the 8 corners are equidistant (dist2 = 0.75).
    corners = torch.tensor([[x, y, z] for x in (0.0, 1.0) for y in (0.0, 1.0) for z in (0.0, 1.0)])
    points = torch.cat([corners.flip(0), corners])  # 16 points, every distance twice
    query = torch.full((1, 3), 0.5)
    d, i = ops.knn(query, None, points, None, 5)
    assert i.tolist() == [[0, 1, 2, 3, 4]]
    assert d.tolist() == [[0.75] * 5]
    # Ball boundary included: dist2 == radius^2 exactly (1 = 1.0^2 on an integer grid).
    grid = torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [0, 2.0, 0], [0, 0, 1.0]])
    d, i = ops.ball_query(torch.zeros(1, 3), None, grid, None, 1.0, 4)
    assert i.tolist() == [[0, 1, 3, -1]]
    assert d.tolist() == [[0.0, 1.0, 1.0, math.inf]]


def test_k_larger_than_cloud_and_empty_clouds():
    q = torch.rand(5, 3)
    p = torch.rand(3, 3)
    qo = torch.tensor([0, 2, 2, 5])
    po = torch.tensor([0, 0, 1, 3])  # cloud 0 empty, cloud 1 has no queries, cloud 2 has 2 points
    d, i = ops.knn(q, qo, p, po, 4)
    assert (i[:2] == -1).all() and torch.isinf(d[:2]).all()
    assert (i[2:, :2] >= 1).all() and (i[2:, 2:] == -1).all()
    assert_same((d, i), reference.knn_reference(q, qo, p, po, 4))
    # No queries at all, k = 0, single point.
    d, i = ops.knn(torch.zeros(0, 3), None, p, None, 3)
    assert d.shape == (0, 3) and i.shape == (0, 3)
    d, i = ops.knn(q, None, p, None, 0)
    assert d.shape == (5, 0) and i.shape == (5, 0)
    d, i = ops.knn(torch.zeros(1, 3), None, torch.ones(1, 3), None, 2)
    assert i.tolist() == [[0, -1]] and d.tolist() == [[3.0, math.inf]]


@pytest.mark.parametrize("k", [128, 200])
def test_large_k(k):
    q, qo, p, po = make_batch([300, 150], [20, 10], "duplicates", 7, torch.float32)
    assert_same(ops.knn(q, qo, p, po, k), reference.knn_reference(q, qo, p, po, k))
    assert_same(ops.ball_query(q, qo, p, po, 0.4, k), reference.ball_query_reference(q, qo, p, po, 0.4, k))


def test_padded_matches_packed():
    gen = torch.Generator().manual_seed(3)
    query = torch.rand(3, 7, 3, generator=gen)
    points = torch.rand(3, 11, 3, generator=gen)
    d, i = ops.knn(query, None, points, None, 4)
    assert d.shape == (3, 7, 4) and i.shape == (3, 7, 4)
    pd, pi = ops.knn(query.reshape(-1, 3), torch.arange(4) * 7, points.reshape(-1, 3), torch.arange(4) * 11, 4)
    assert torch.equal(d.reshape(-1, 4), pd)
    assert torch.equal(i, (pi - (torch.arange(3) * 11).repeat_interleave(7)[:, None]).reshape(3, 7, 4))
    # Local indices: the neighbours really are those points of the same cloud.
    nearest = torch.gather(points, 1, i[..., :1].expand(-1, -1, 3))
    torch.testing.assert_close(((query - nearest) ** 2).sum(-1), d[..., 0])
    bd, bi = ops.ball_query(query, None, points, None, 0.3, 12)
    assert bd.shape == (3, 7, 12) and bool(((bi >= -1) & (bi < 11)).all())


def test_non_contiguous_inputs(shared_data):
    raw = np.fromfile(shared_data / "kitti/training/velodyne/000001.bin", dtype=np.float32).reshape(-1, 4)
    xyzi = torch.from_numpy(raw)[:20000]
    points = xyzi[:, :3]  # a strided view
    assert not points.is_contiguous()
    query = points[::97]
    assert_same(ops.knn(query, None, points, None, 8), reference.knn_reference(query, torch.tensor([0, query.shape[0]]),
                                                                              points, torch.tensor([0, 20000]), 8))


@pytest.fixture(scope="module")
def kitti(shared_data):
    raw = np.fromfile(shared_data / "kitti/training/velodyne/000001.bin", dtype=np.float32).reshape(-1, 4)
    assert raw.shape == (120268, 4)
    return torch.from_numpy(raw[:, :3].copy())


@pytest.mark.parametrize("k", [16, 32])
def test_kitti_sweep_matches_reference(kitti, k):
    gen = torch.Generator().manual_seed(k)
    query = kitti[torch.randperm(kitti.shape[0], generator=gen)[:128]]
    qo, po = torch.tensor([0, 128]), torch.tensor([0, kitti.shape[0]])
    got = ops.knn(query, qo, kitti, po, k)
    assert_same(got, reference.knn_reference(query, qo, kitti, po, k))
    assert_same(ops.ball_query(query, qo, kitti, po, 0.5, k), reference.ball_query_reference(query, qo, kitti, po, 0.5, k))
    # Determinism: the same call again gives the same bits.
    again = ops.knn(query, qo, kitti, po, k)
    assert torch.equal(got[0], again[0]) and torch.equal(got[1], again[1])


def test_uneven_batch_kitti_and_nuscenes(kitti, shared_data):
    files = sorted((shared_data / "nuscenes/samples/LIDAR_TOP").glob("*.pcd.bin"))
    if not files:
        pytest.skip("no nuScenes sweep in the sample data")
    nus = torch.from_numpy(np.fromfile(files[0], dtype=np.float32).reshape(-1, 5)[:, :3].copy())
    points = torch.cat([kitti[:50000], nus])
    po = offsets_from_sizes([50000, nus.shape[0]])
    query = torch.cat([kitti[:50000:500], nus[::400]])
    qo = offsets_from_sizes([100, query.shape[0] - 100])
    got = ops.knn(query, qo, points, po, 16)
    assert_same(got, reference.knn_reference(query, qo, points, po, 16))
    assert bool((got[1][:100] < 50000).all()) and bool((got[1][100:] >= 50000).all())


def test_opcheck():
    q, qo, p, po = make_batch([30, 0, 17], [5, 3, 4], "duplicates", 11, torch.float64)
    torch.library.opcheck(torch.ops.pointmae.knn.default, (q, qo, p, po, 6))
    torch.library.opcheck(torch.ops.pointmae.ball_query.default, (q, qo, p, po, 0.5, 6))


def test_gradcheck():
    gen = torch.Generator().manual_seed(5)
    q = torch.rand(6, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    p = torch.rand(25, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    qo, po = torch.tensor([0, 4, 6]), torch.tensor([0, 20, 25])
    # k = 7 > 5 points in cloud 1: the padded entries must not leak gradient.
    assert torch.autograd.gradcheck(lambda a, b: ops.knn(a, qo, b, po, 7)[0].nan_to_num(posinf=0.0), (q, p))
    assert torch.autograd.gradcheck(lambda a, b: ops.ball_query(a, qo, b, po, 0.45, 7)[0].nan_to_num(posinf=0.0),
                                    (q, p))


def test_backward_matches_index_add_and_repeats_bitwise(device):
    # The points' gradient is a scatter-add over the (Q, k) index lists; it is computed without
    # floating-point atomics, so it is the same on every run and equals the in-order sum.
    gen = torch.Generator().manual_seed(9)
    q = torch.rand(300, 3, generator=gen).to(device).requires_grad_()
    p = torch.rand(40, 3, generator=gen).to(device).requires_grad_()   # few points: many queries share one
    qo, po = torch.tensor([0, 300], device=device), torch.tensor([0, 40], device=device)
    weights = torch.rand(300, 16, generator=gen).to(device)

    def grads():
        q.grad = p.grad = None
        dist2, idx = ops.knn(q, qo, p, po, 16)
        (dist2 * weights).sum().backward()
        return q.grad.clone(), p.grad.clone(), idx

    gq, gp, idx = grads()
    for _ in range(3):
        gq2, gp2, _ = grads()
        assert torch.equal(gq, gq2) and torch.equal(gp, gp2)
    with torch.no_grad():
        diff = q.unsqueeze(1) - p[idx]
        pair = 2 * weights.unsqueeze(-1) * diff
        expected = torch.zeros_like(p).index_add_(0, idx.reshape(-1), -pair.reshape(-1, 3))
    torch.testing.assert_close(gp, expected, rtol=1e-5, atol=1e-5)


def test_torch_compile_fullgraph():
    q, qo, p, po = make_batch([40, 25], [9, 6], "random", 2, torch.float32)

    def fn(q, qo, p, po):
        d, i = ops.knn(q, qo, p, po, 5)
        bd, bi = ops.ball_query(q, qo, p, po, 0.3, 5)
        return d.sum() + bd.nan_to_num(posinf=0.0).sum(), i, bi

    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    out, expected = compiled(q, qo, p, po), fn(q, qo, p, po)
    torch.testing.assert_close(out[0], expected[0])
    assert torch.equal(out[1], expected[1]) and torch.equal(out[2], expected[2])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_matches_cpu_and_reference(cuda_device, dtype):
    for mode in MODES:
        q, qo, p, po = make_batch([500, 0, 64, 3], [100, 4, 50, 8], mode, 13, dtype)
        for k in (1, 16, 33, 128, 150):
            cpu = ops.knn(q, qo, p, po, k)
            gpu = ops.knn(q.to(cuda_device), qo.to(cuda_device), p.to(cuda_device), po.to(cuda_device), k)
            assert_same(tuple(t.cpu() for t in gpu), cpu)
            cpu = ops.ball_query(q, qo, p, po, 0.3, k)
            gpu = ops.ball_query(q.to(cuda_device), qo.to(cuda_device), p.to(cuda_device), po.to(cuda_device), 0.3, k)
            assert_same(tuple(t.cpu() for t in gpu), cpu)


def test_cuda_half_matches_reference(cuda_device):
    q, qo, p, po = make_batch([300, 77], [40, 9], "random", 17, torch.float16)
    args = (q.to(cuda_device), qo.to(cuda_device), p.to(cuda_device), po.to(cuda_device))
    assert_same(tuple(t.cpu() for t in ops.knn(*args, 16)), reference.knn_reference(q, qo, p, po, 16))
    assert_same(tuple(t.cpu() for t in ops.ball_query(*args, 0.2, 16)), reference.ball_query_reference(q, qo, p, po, 0.2, 16))


def test_cuda_single_large_cloud_and_determinism(cuda_device, kitti):
    query = kitti[::30].to(cuda_device)
    pts = kitti.to(cuda_device)
    a = ops.knn(query, None, pts, None, 32)
    b = ops.knn(query, None, pts, None, 32)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert_same(tuple(t.cpu() for t in a), ops.knn(kitti[::30], None, kitti, None, 32))


def test_cuda_edge_cases_match_cpu(cuda_device):
    # Not covered above: a cloud with queries but no points (all padding), k = 0, k larger than every
    # cloud, a cloud whose queries need several blocks with a partial last one (kThreads = 128), and
    # an empty query set (no launch: a grid of 0 blocks is an error).
    q, qo, p, po = make_batch([0, 5, 1000, 1], [7, 300, 129, 1], "integer_grid", 21, torch.float32)
    dev = [t.to(cuda_device) for t in (q, qo, p, po)]
    for k in (0, 1, 6, 200):
        assert_same(tuple(t.cpu() for t in ops.knn(*dev, k)), ops.knn(q, qo, p, po, k))
        assert_same(tuple(t.cpu() for t in ops.ball_query(*dev, 1.5, k)), ops.ball_query(q, qo, p, po, 1.5, k))
    empty = ops.knn(dev[0][:0], torch.tensor([0, 0], device=cuda_device), dev[2][:5], torch.tensor([0, 5],
                                                                                                  device=cuda_device), 3)
    assert empty[0].shape == (0, 3) and empty[1].shape == (0, 3)
    with pytest.raises(ValueError, match="float16 supports `k` <= 128 on CUDA"):
        ops.knn(dev[0].half(), dev[1], dev[2].half(), dev[3], 129)
    with pytest.raises(ValueError, match="float16 supports `k` <= 128 on CUDA"):   # also without queries
        ops.knn(dev[0][:0].half(), torch.tensor([0, 0], device=cuda_device), dev[2].half(), dev[3][[0, -1]], 129)


# ------------------------------------------------------------------------------------------ bad input
def _good():
    return torch.rand(4, 3), torch.tensor([0, 2, 4]), torch.rand(6, 3), torch.tensor([0, 3, 6])


@pytest.mark.parametrize("op", ["knn", "ball_query"])
@pytest.mark.parametrize("case, match", [
    ("query_int", "`query` must be float32"),
    ("points_rank", "`points`"),
    ("points_4_columns", r"`points` must be a 2-D tensor \(N, 3\), got shape \[6, 4\]"),
    ("dtype_mismatch", "`points` must have the dtype of `query`"),
    ("offsets_not_monotone", "`point_offsets` must be non-decreasing"),
    ("offsets_wrong_end", "`query_offsets` must end at the number of points 4"),
    ("offsets_not_zero_start", "`point_offsets` must start at 0"),
    ("offsets_int32", "`query_offsets` must be int64"),
    ("different_batch", "`query_offsets` and `point_offsets` must describe the same number of clouds"),
    ("negative_k", "`k` must be >= 0"),
    ("nan_query", "`query` must hold finite coordinates, but row 3"),
    ("inf_points", "`points` must hold finite coordinates, but row 1"),
    ("half_on_cpu", "float16 is supported on CUDA only"),
])
def test_bad_input_names_argument(op, case, match):
    q, qo, p, po = _good()
    k = 2
    if case == "query_int":
        q = q.to(torch.int32)
    elif case == "points_rank":
        p = p.reshape(2, 3, 3)
    elif case == "points_4_columns":
        p = torch.rand(6, 4)
    elif case == "dtype_mismatch":
        p = p.double()
    elif case == "offsets_not_monotone":
        po = torch.tensor([0, 4, 3, 6])
        qo = torch.tensor([0, 1, 2, 4])
    elif case == "offsets_wrong_end":
        qo = torch.tensor([0, 2, 5])
    elif case == "offsets_not_zero_start":
        po = torch.tensor([1, 3, 6])
    elif case == "offsets_int32":
        qo = qo.to(torch.int32)
    elif case == "different_batch":
        po = torch.tensor([0, 6])
    elif case == "negative_k":
        k = -1
    elif case == "nan_query":
        q[3, 1] = float("nan")
    elif case == "inf_points":
        p[1, 2] = float("inf")
    elif case == "half_on_cpu":
        q, p = q.half(), p.half()
    extra = (0.5,) if op == "ball_query" else ()
    # Through the raw op (C++ validation) and through the Python API.
    with pytest.raises(ValueError, match=match):
        getattr(torch.ops.pointmae, op)(q, qo, p, po, *extra, k)
    # (The Python API rejects a 3-D `points` itself: padded input needs both tensors padded.)
    with pytest.raises(ValueError, match=match if case != "points_rank" else "`points` \\(B, N, 3\\) padded"):
        getattr(ops, op)(q, qo, p, po, *extra, k)


@pytest.mark.parametrize("radius", [-0.1, float("nan"), float("inf")])
def test_bad_radius(radius):
    q, qo, p, po = _good()
    with pytest.raises(ValueError, match="`radius` must be a finite number >= 0"):
        ops.ball_query(q, qo, p, po, radius, 3)


def test_bad_padded_and_k_type():
    with pytest.raises(ValueError, match="padded input needs both `query`"):
        ops.knn(torch.rand(2, 3, 3), None, torch.rand(6, 3), None, 2)
    with pytest.raises(ValueError, match="same batch size B"):
        ops.knn(torch.rand(2, 3, 3), None, torch.rand(3, 4, 3), None, 2)
    with pytest.raises(ValueError, match="padded input takes no offsets"):
        ops.knn(torch.rand(2, 3, 3), torch.tensor([0, 3, 6]), torch.rand(2, 4, 3), None, 2)
    with pytest.raises(TypeError, match="`k` must be an int"):
        ops.knn(torch.rand(2, 3), None, torch.rand(4, 3), None, 2.5)


def test_wrong_device(cuda_device):
    q, qo, p, po = _good()
    with pytest.raises(ValueError, match="`points` must be on the same device as `query`"):
        ops.knn(q.to(cuda_device), qo.to(cuda_device), p, po, 2)
    with pytest.raises(ValueError, match="`query_offsets` must be on"):
        ops.knn(q.to(cuda_device), qo, p.to(cuda_device), po.to(cuda_device), 2)
