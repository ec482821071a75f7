"""Farthest point sampling: exact parity with the naive reference, edge cases, API, errors."""
import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

import pointmae.ops as ops
from pointmae.ops import reference

fps_op = torch.ops.pointmae.fps


# ---------------------------------------------------------------- input generators
def _cloud(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """One (n, 3) cloud of a given adversarial kind."""
    if kind == "normal":
        return rng.normal(size=(n, 3))
    if kind == "grid":  # many exact duplicates and many exact distance ties
        return rng.integers(-2, 3, size=(n, 3)).astype(np.float64)
    if kind == "identical":
        return np.tile(rng.normal(size=(1, 3)), (n, 1))
    if kind == "collinear":
        return rng.normal(size=(n, 1)) * np.array([[1.0, -2.0, 0.5]]) + 3.0
    if kind == "coplanar":
        uv = rng.normal(size=(n, 2))
        return uv[:, :1] * np.array([[1.0, 1.0, 0.0]]) + uv[:, 1:] * np.array([[0.0, 1.0, 1.0]])
    if kind == "large":  # squared distances overflow float32 to +inf: ties at inf
        return rng.normal(size=(n, 3)) * 1e25
    if kind == "tiny":  # squared distances underflow to 0 / subnormals
        return rng.normal(size=(n, 3)) * 1e-25
    raise AssertionError(kind)


KINDS = ["normal", "grid", "identical", "collinear", "coplanar", "large", "tiny"]


@st.composite
def batches(draw, max_clouds=4, max_points=40, max_samples=40):
    """(points, offsets, num_samples, start_idx) with uneven, possibly empty clouds."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    sizes = draw(st.lists(st.integers(0, max_points), min_size=1, max_size=max_clouds))
    kinds = draw(st.lists(st.sampled_from(KINDS), min_size=len(sizes), max_size=len(sizes)))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    num_samples = draw(st.integers(0, min(min(sizes), max_samples)))
    if num_samples == 0 and draw(st.booleans()):
        sizes[0] = 0  # empty clouds are fine when nothing is sampled
    clouds = [_cloud(k, n, rng) for k, n in zip(kinds, sizes)]
    points = torch.from_numpy(np.concatenate(clouds, 0).reshape(-1, 3)).to(dtype)
    offsets = ops.offsets_from_sizes(sizes)
    start_idx = torch.tensor([int(rng.integers(0, max(n, 1))) for n in sizes], dtype=torch.int64)
    return points, offsets, num_samples, start_idx


def _assert_valid(idx, offsets, num_samples):
    """Every row: distinct indices, all inside its own cloud."""
    assert idx.dtype == torch.int64 and idx.shape == (offsets.numel() - 1, num_samples)
    for b in range(offsets.numel() - 1):
        row = idx[b].tolist()
        assert len(set(row)) == len(row)
        assert all(offsets[b] <= i < offsets[b + 1] for i in row)


# ---------------------------------------------------------------- parity with the reference
@given(batches())
def test_matches_reference_on_adversarial_batches(batch):
    points, offsets, num_samples, start_idx = batch
    got = fps_op(points, offsets, num_samples, start_idx)
    want = reference.fps(points, offsets, num_samples, start_idx)
    assert torch.equal(got, want)
    _assert_valid(got, offsets, num_samples)


@given(batches(max_clouds=2, max_points=3000, max_samples=40))
def test_matches_reference_on_adversarial_multi_bucket_clouds(batch):
    # Clouds of up to 3000 points span many KD-tree buckets: the pruning is exercised on duplicates,
    # ties, degenerate boxes (collinear / coplanar / identical) and overflowing distances.
    points, offsets, num_samples, start_idx = batch
    got = fps_op(points, offsets, num_samples, start_idx)
    assert torch.equal(got, reference.fps(points, offsets, num_samples, start_idx))
    _assert_valid(got, offsets, num_samples)


@pytest.mark.parametrize("n, m", [(70000, 60), (3000, 3000)])
def test_matches_reference_large_clouds(n, m):
    # 70000 points in one cloud takes the within-cloud parallel path (on >= 2 threads, in the early
    # samples that rescan most of the cloud); 3000 -> 3000 selects every point, exercising the
    # exhausted buckets.
    g = torch.Generator().manual_seed(n)
    points = torch.randn(n, 3, generator=g) * torch.tensor([20.0, 20.0, 2.0])
    offsets = torch.tensor([0, n])
    start = torch.tensor([n // 2])
    got = fps_op(points, offsets, m, start)
    assert torch.equal(got, reference.fps(points, offsets, m, start))
    if m == n:
        assert torch.equal(got[0].sort().values, torch.arange(n))


def test_matches_reference_batch_of_clouds():
    # Seven clouds on two threads: the across-clouds parallel path, uneven sizes.
    g = torch.Generator().manual_seed(1)
    sizes = [900, 50, 2500, 700, 64, 65, 3000]
    points = torch.rand(sum(sizes), 3, generator=g, dtype=torch.float64)
    offsets = ops.offsets_from_sizes(sizes)
    start = torch.tensor([5, 0, 2499, 0, 63, 64, 1])
    got = fps_op(points, offsets, 50, start)
    assert torch.equal(got, reference.fps(points, offsets, 50, start))


def test_half_matches_reference():
    g = torch.Generator().manual_seed(2)
    points = (torch.randn(500, 3, generator=g) * 4).half()
    offsets = torch.tensor([0, 200, 500])
    start = torch.tensor([3, 7])
    got = fps_op(points, offsets, 64, start)
    assert torch.equal(got, reference.fps(points, offsets, 64, start))
    _assert_valid(got, offsets, 64)


def test_real_kitti_sweep_matches_reference(shared_data):
    path = shared_data / "kitti" / "training" / "velodyne" / "000001.bin"
    points = torch.from_numpy(np.fromfile(path, dtype=np.float32).reshape(-1, 4)[:, :3].copy())
    assert points.shape == (120268, 3)
    offsets = torch.tensor([0, points.shape[0]])
    start = torch.tensor([0])
    got = fps_op(points, offsets, 200, start)
    assert torch.equal(got, reference.fps(points, offsets, 200, start))
    # A longer run is at least valid (the reference would take too long here).
    _assert_valid(fps_op(points, offsets, 4096, start), offsets, 4096)


def test_real_nuscenes_sweep_matches_reference(shared_data):
    files = sorted((shared_data / "nuscenes" / "samples" / "LIDAR_TOP").glob("*.pcd.bin"))
    if not files:
        pytest.skip("no nuScenes sweep in the shared data")
    raw = torch.from_numpy(np.fromfile(files[0], dtype=np.float32).reshape(-1, 5)[:, :3].copy())
    half = raw.shape[0] // 2
    # Two uneven "clouds" made of the two halves of the sweep, float64.
    points, offsets = raw.double(), torch.tensor([0, half, raw.shape[0]])
    start = torch.tensor([10, 0])
    got = fps_op(points, offsets, 100, start)
    assert torch.equal(got, reference.fps(points, offsets, 100, start))


# ---------------------------------------------------------------- semantics
def test_duplicates_never_repeat_and_identical_cloud_is_increasing():
    points = torch.ones(10, 3)
    idx = ops.fps(points, num_samples=10)
    assert idx.tolist() == [list(range(10))]
    idx = fps_op(points, torch.tensor([0, 10]), 5, torch.tensor([4]))
    assert idx.tolist() == [[4, 0, 1, 2, 3]]
    # Two distinct locations, each five times: both locations first, then the duplicates in order.
    points = torch.tensor([[0.0, 0, 0]] * 5 + [[1.0, 0, 0]] * 5)
    assert ops.fps(points, num_samples=10).tolist() == [[0, 5, 1, 2, 3, 4, 6, 7, 8, 9]]


def test_known_small_example():
    points = torch.tensor([[0.0, 0, 0], [1, 0, 0], [10, 0, 0], [5, 0, 0], [-3, 0, 0]])
    # from 0: farthest is 10 (idx 2); then min dists: [1, 25, 9] for idx 1, 3, 4 -> idx 3 (5, dist 25)
    assert ops.fps(points, num_samples=3).tolist() == [[0, 2, 3]]


def test_padded_input_returns_local_indices():
    g = torch.Generator().manual_seed(3)
    padded = torch.randn(3, 50, 3, generator=g)
    local = ops.fps(padded, num_samples=8)
    packed = ops.fps(padded.reshape(150, 3), torch.tensor([0, 50, 100, 150]), num_samples=8)
    assert local.shape == (3, 8)
    assert torch.equal(local, packed - torch.tensor([[0], [50], [100]]))
    assert int(local.min()) >= 0 and int(local.max()) < 50


def test_non_contiguous_input():
    g = torch.Generator().manual_seed(4)
    wide = torch.randn(300, 5, generator=g)
    points = wide[:, 1:4]
    assert not points.is_contiguous()
    offsets = torch.tensor([0, 100, 300])
    start = torch.tensor([0, 0])
    assert torch.equal(fps_op(points, offsets, 20, start), fps_op(points.contiguous(), offsets, 20, start))


def test_zero_samples_and_empty_batch():
    points = torch.randn(5, 3)
    out = ops.fps(points, torch.tensor([0, 0, 5]), num_samples=0)
    assert out.shape == (2, 0) and out.dtype == torch.int64
    out = fps_op(torch.empty(0, 3), torch.tensor([0]), 4, torch.empty(0, dtype=torch.int64))
    assert out.shape == (0, 4)


def test_single_point_clouds():
    points = torch.tensor([[1.0, 2, 3], [4, 5, 6]])
    assert ops.fps(points, torch.tensor([0, 1, 2]), num_samples=1).tolist() == [[0], [1]]


def test_deterministic():
    g = torch.Generator().manual_seed(5)
    points = torch.randint(0, 4, (60000, 3), generator=g).float()  # heavy ties
    offsets = torch.tensor([0, 60000])
    start = torch.tensor([17])
    a = fps_op(points, offsets, 300, start)
    b = fps_op(points, offsets, 300, start)
    assert torch.equal(a, b)
    _assert_valid(a, offsets, 300)


def test_same_result_for_any_thread_count():
    g = torch.Generator().manual_seed(6)
    points = torch.randn(100000, 3, generator=g)
    offsets = torch.tensor([0, 30000, 100000])
    start = torch.tensor([0, 1])
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            # a batch (parallel across clouds) and one large cloud (parallel within the cloud)
            results.append((fps_op(points, offsets, 256, start),
                            fps_op(points[30000:], torch.tensor([0, 70000]), 256, start[1:])))
    finally:
        torch.set_num_threads(before)
    (batch_1, single_1), (batch_2, single_2) = results
    assert torch.equal(batch_1, batch_2)
    assert torch.equal(single_1, single_2)
    assert torch.equal(batch_2[1:] - 30000, single_2)


def test_random_start_is_reproducible_and_in_range():
    points = torch.randn(1000, 3)
    offsets = torch.tensor([0, 10, 1000])
    a = ops.fps(points, offsets, 5, start="random", generator=torch.Generator().manual_seed(7))
    b = ops.fps(points, offsets, 5, start="random", generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    _assert_valid(a, offsets, 5)
    starts = {tuple(ops.fps(points, offsets, 1, start="random",
                            generator=torch.Generator().manual_seed(s))[:, 0].tolist()) for s in range(8)}
    assert len(starts) > 1  # the start does depend on the generator
    # the rest of the sequence is plain FPS from the drawn start
    start = a[:, 0] - offsets[:-1]
    assert torch.equal(a, reference.fps(points, offsets, 5, start))


# ---------------------------------------------------------------- torch integration
def test_opcheck():
    g = torch.Generator().manual_seed(8)
    points = torch.randn(40, 3, generator=g, dtype=torch.float64)
    torch.library.opcheck(fps_op, (points, torch.tensor([0, 15, 40]), 6, torch.tensor([1, 2])))
    torch.library.opcheck(fps_op, (points.float(), torch.tensor([0, 40]), 0, torch.tensor([0])))


def test_torch_compile_fullgraph():
    @torch.compile(fullgraph=True, backend="eager")
    def sample_centres(pts):
        idx = ops.fps(pts, num_samples=4)
        return torch.gather(pts, 1, idx.unsqueeze(-1).expand(-1, -1, 3))

    padded = torch.randn(2, 30, 3)
    idx = ops.fps(padded, num_samples=4)
    assert torch.equal(sample_centres(padded), torch.gather(padded, 1, idx.unsqueeze(-1).expand(-1, -1, 3)))


# ---------------------------------------------------------------- bad inputs
def _raises(match, fn, exc=ValueError):
    with pytest.raises(exc, match=match):
        fn()


def test_bad_points():
    off = torch.tensor([0, 4])
    s = torch.tensor([0])
    _raises(r"`points`.*float32, float64 or float16.*Long", lambda: fps_op(torch.zeros(4, 3, dtype=torch.long), off, 1, s))
    _raises(r"`points`.*\(N, 3\).*\[4, 4\]", lambda: fps_op(torch.zeros(4, 4), off, 1, s))
    _raises(r"`points`.*\(N, 3\).*\[12\]", lambda: fps_op(torch.zeros(12), off, 1, s))
    _raises(r"`points`.*\(N, C\) or padded", lambda: ops.fps(torch.zeros(1, 2, 4, 3), num_samples=1))
    _raises(r"`points`.*padded.*offsets", lambda: ops.fps(torch.zeros(2, 4, 3), off, num_samples=1))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_points(bad):
    points = torch.zeros(7, 3)
    points[5, 1] = bad
    _raises(r"`points` must be finite.*cloud 1.*row 5.*local index 2",
            lambda: ops.fps(points, torch.tensor([0, 3, 7]), num_samples=1))


def test_huge_but_finite_points_are_accepted():
    points = torch.full((4, 3), 3e38)  # the sum overflows, the coordinates are finite
    points[1] = -3e38
    assert ops.fps(points, num_samples=2).tolist() == [[0, 1]]


def test_bad_offsets():
    p = torch.zeros(6, 3)
    _raises(r"`offsets`.*non-decreasing", lambda: ops.fps(p, torch.tensor([0, 4, 2, 6]), num_samples=1))
    _raises(r"`offsets`.*end at the number of points 6, got 5", lambda: ops.fps(p, torch.tensor([0, 5]), num_samples=1))
    _raises(r"`offsets`.*start at 0", lambda: ops.fps(p, torch.tensor([1, 6]), num_samples=1))
    _raises(r"`offsets`.*int64.*Int", lambda: ops.fps(p, torch.tensor([0, 6], dtype=torch.int32), num_samples=1))
    _raises(r"`offsets`.*1-D", lambda: ops.fps(p, torch.tensor([[0, 6]]), num_samples=1))


def test_bad_num_samples():
    p = torch.zeros(6, 3)
    off = torch.tensor([0, 2, 6])
    _raises(r"`num_samples` must be >= 0, got -1", lambda: ops.fps(p, off, num_samples=-1))
    _raises(r"cloud 0 has 2 points, fewer than num_samples = 3", lambda: ops.fps(p, off, num_samples=3))
    _raises(r"`num_samples` must be an int", lambda: ops.fps(p, off, num_samples=2.5))
    _raises(r"`num_samples` must be an int", lambda: ops.fps(p, off, num_samples=float("nan")))


def test_bad_start():
    p = torch.zeros(6, 3)
    off = torch.tensor([0, 2, 6])
    _raises(r"`start` must be 'first' or 'random'", lambda: ops.fps(p, off, num_samples=1, start="centre"))
    _raises(r"`start_idx`\[1\] = 4 is outside cloud 1 of 4 points", lambda: fps_op(p, off, 1, torch.tensor([0, 4])))
    _raises(r"`start_idx`\[0\] = -1", lambda: fps_op(p, off, 1, torch.tensor([-1, 0])))
    _raises(r"`start_idx`.*\(B,\) = \(2,\).*\[3\]", lambda: fps_op(p, off, 1, torch.tensor([0, 0, 0])))
    _raises(r"`start_idx` must be int64", lambda: fps_op(p, off, 1, torch.tensor([0, 0], dtype=torch.int32)))


# ---------------------------------------------------------------- CUDA (skipped without a GPU)
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_matches_cpu(cuda_device, dtype):
    g = torch.Generator().manual_seed(9)
    sizes = [5000, 1, 300, 70000]  # a large cloud takes the multi-block path
    points = (torch.randn(sum(sizes), 3, generator=g) * 30).to(dtype)
    points[100:200] = points[0]  # duplicates
    offsets = ops.offsets_from_sizes(sizes)
    start = torch.tensor([0, 0, 299, 12345])
    want = fps_op(points, offsets, 1, start)
    got = fps_op(points.to(cuda_device), offsets.to(cuda_device), 1, start.to(cuda_device))
    assert torch.equal(got.cpu(), want)
    pts2 = torch.cat([points[:5000], points[5301:]])
    off2 = ops.offsets_from_sizes([5000, 70000])
    st2 = torch.tensor([3, 12345])
    want = fps_op(pts2, off2, 700, st2)
    got = fps_op(pts2.to(cuda_device), off2.to(cuda_device), 700, st2.to(cuda_device))
    assert torch.equal(got.cpu(), want)
    assert torch.equal(fps_op(pts2.to(cuda_device), off2.to(cuda_device), 700, st2.to(cuda_device)), got)


@pytest.mark.cuda
def test_cuda_many_small_clouds_and_half(cuda_device):
    g = torch.Generator().manual_seed(10)
    points = torch.randint(0, 3, (64 * 300, 3), generator=g).half()  # ties everywhere
    offsets = torch.arange(65) * 300
    start = torch.arange(64) % 300
    want = fps_op(points, offsets, 300, start)
    got = fps_op(points.to(cuda_device), offsets.to(cuda_device), 300, start.to(cuda_device))
    assert torch.equal(got.cpu(), want)


@pytest.mark.cuda
def test_cuda_real_kitti(cuda_device, shared_data):
    path = shared_data / "kitti" / "training" / "velodyne" / "000001.bin"
    points = torch.from_numpy(np.fromfile(path, dtype=np.float32).reshape(-1, 4)[:, :3].copy())
    offsets = torch.tensor([0, points.shape[0]])
    want = fps_op(points, offsets, 4096, torch.tensor([0]))
    got = ops.fps(points.to(cuda_device), offsets.to(cuda_device), 4096)
    assert torch.equal(got.cpu(), want)


@pytest.mark.cuda
def test_cuda_device_mismatch(cuda_device):
    p = torch.zeros(4, 3, device=cuda_device)
    _raises(r"`offsets` must be on cuda", lambda: fps_op(p, torch.tensor([0, 4]), 1, torch.tensor([0], device=cuda_device)))
    _raises(r"`start_idx` must be on the same device", lambda: fps_op(p, torch.tensor([0, 4], device=cuda_device), 1, torch.tensor([0])))


@pytest.mark.cuda
def test_cuda_edge_cases(cuda_device):
    # Nothing to sample (no launch: a grid of 0 blocks is an error), and on the multi-block path (a
    # cloud of >= 16384 points) a last slice of one point and every point sampled, so that the last
    # step has a single unselected point left.
    for sizes, num_samples in (([], 3), ([0, 4, 0], 0)):
        points = torch.rand(sum(sizes), 3, device=cuda_device)
        offsets = ops.offsets_from_sizes(sizes).to(cuda_device)
        out = fps_op(points, offsets, num_samples, torch.zeros(len(sizes), dtype=torch.int64, device=cuda_device))
        assert out.shape == (len(sizes), num_samples) and out.device.type == cuda_device.type
    g = torch.Generator().manual_seed(11)
    n = 16385
    points = torch.randint(0, 20, (n + 2500, 3), generator=g).float()  # ties everywhere
    offsets = ops.offsets_from_sizes([2500, n])  # the small cloud leaves most of its blocks empty
    start = torch.tensor([1, n - 1])
    for num_samples in (3, 2000):
        want = fps_op(points, offsets, num_samples, start)
        got = fps_op(points.to(cuda_device), offsets.to(cuda_device), num_samples, start.to(cuda_device))
        assert torch.equal(got.cpu(), want)
    single = ops.offsets_from_sizes([n])
    want = fps_op(points[:n], single, n, torch.tensor([5]))
    got = fps_op(points[:n].to(cuda_device), single.to(cuda_device), n, torch.tensor([5], device=cuda_device))
    assert torch.equal(got.cpu(), want)
