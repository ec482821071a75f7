"""gather_points / gather_points_backward / group_points against the pure-PyTorch reference."""
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from pointmae.ops import gather_points, group_points
from pointmae.ops import reference as ref

ops = torch.ops.pointmae


@st.composite
def gather_inputs(draw):
    n = draw(st.integers(0, 40))
    c = draw(st.integers(1, 5))
    q = draw(st.integers(0, 12))
    k = draw(st.integers(1, 8))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    kind = draw(st.sampled_from(["random", "all_same_index", "all_padding", "duplicate_features", "huge"]))
    features = torch.randn(n, c, generator=g, dtype=torch.float64)
    if kind == "duplicate_features" and n > 0:
        features = features[:1].expand(n, c).clone()
    if kind == "huge":
        features = features * 1e300
    if n == 0 or kind == "all_padding":
        idx = torch.full((q, k), -1, dtype=torch.int64)
    elif kind == "all_same_index":
        idx = torch.full((q, k), draw(st.integers(0, n - 1)), dtype=torch.int64)
    else:
        idx = torch.randint(-1, n, (q, k), generator=g)
    return features, idx


@given(gather_inputs(), st.sampled_from([torch.float32, torch.float64]))
def test_forward_and_backward_match_reference(inputs, dtype):
    features, idx = inputs
    features = features.to(dtype)  # huge float64 values become inf in float32: gathered as they are
    out = ops.gather_points(features, idx)
    torch.testing.assert_close(out, ref.gather_points(features, idx), rtol=0, atol=0)
    grad_out = torch.randn(out.shape, dtype=dtype)
    grad = ops.gather_points_backward(grad_out, idx, features.shape[0])
    torch.testing.assert_close(grad, ref.gather_points_backward(grad_out, idx, features.shape[0]))


def test_padding_rows_are_zero_and_get_no_gradient():
    features = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    idx = torch.tensor([[1, -1, 0, 1]])
    out = gather_points(features, idx)
    assert out.tolist() == [[[3.0, 4.0], [0.0, 0.0], [1.0, 2.0], [3.0, 4.0]]]
    out.sum().backward()
    assert features.grad.tolist() == [[1.0, 1.0], [2.0, 2.0]]


def test_nan_features_are_gathered_not_hidden():
    features = torch.tensor([[float("nan")], [1.0]])
    out = gather_points(features, torch.tensor([[0, 1, -1]]))
    assert torch.isnan(out[0, 0, 0]) and out[0, 1, 0] == 1 and out[0, 2, 0] == 0


def test_half():
    features = torch.randn(30, 4).half()
    idx = torch.randint(-1, 30, (10, 6))
    out = gather_points(features, idx)
    torch.testing.assert_close(out, ref.gather_points(features, idx), rtol=0, atol=0)
    grad_out = torch.randn(out.shape).half()
    torch.testing.assert_close(ops.gather_points_backward(grad_out, idx, 30),
                               ref.gather_points_backward(grad_out, idx, 30), rtol=1e-3, atol=1e-3)


def test_non_contiguous_inputs():
    features = torch.randn(6, 20, dtype=torch.float64).t()       # (20, 6), not contiguous
    idx = torch.randint(-1, 20, (8, 10)).t()                      # (10, 8), not contiguous
    torch.testing.assert_close(gather_points(features, idx), ref.gather_points(features, idx), rtol=0, atol=0)


def test_padded_layout_uses_local_indices():
    features = torch.randn(3, 7, 2)
    idx = torch.randint(-1, 7, (3, 4, 5))
    out = gather_points(features, idx)
    assert out.shape == (3, 4, 5, 2)
    for b in range(3):
        torch.testing.assert_close(out[b], ref.gather_points(features[b], idx[b]), rtol=0, atol=0)


def test_group_points_relative_to_centres():
    points = torch.randn(2, 16, 3, dtype=torch.float64, requires_grad=True)
    centers = points[:, :4].detach().clone().requires_grad_()
    idx = torch.randint(-1, 16, (2, 4, 6))
    out = group_points(points, centers, idx)
    for b in range(2):
        expected = ref.gather_points(points[b].detach(), idx[b]) - centers[b].detach()[:, None]
        expected[idx[b] < 0] = 0
        torch.testing.assert_close(out[b].detach(), expected)
    assert torch.autograd.gradcheck(lambda p, c: group_points(p, c, idx), (points, centers))


def test_gradcheck_and_double_backward():
    features = torch.randn(9, 3, dtype=torch.float64, requires_grad=True)
    idx = torch.tensor([[0, 3, 3, -1], [8, 0, 3, 2], [-1, -1, 8, 8]])
    assert torch.autograd.gradcheck(lambda f: gather_points(f, idx), (features,))
    assert torch.autograd.gradgradcheck(lambda f: gather_points(f, idx), (features,))


def test_opcheck():
    features = torch.randn(12, 4, requires_grad=True)
    idx = torch.randint(-1, 12, (5, 3))
    torch.library.opcheck(ops.gather_points, (features, idx))
    grad_out = torch.randn(5, 3, 4, requires_grad=True)
    torch.library.opcheck(ops.gather_points_backward, (grad_out, idx, 12))


def test_torch_compile_fullgraph():
    features = torch.randn(20, 3, requires_grad=True)
    idx = torch.randint(-1, 20, (6, 4))

    @torch.compile(fullgraph=True, backend="aot_eager")
    def f(feat, i):
        return (gather_points(feat, i) * 2).sum()

    loss = f(features, idx)
    loss.backward()
    expected = ref.gather_points_backward(torch.full((6, 4, 3), 2.0), idx, 20)
    torch.testing.assert_close(features.grad, expected)
    torch.testing.assert_close(loss, (ref.gather_points(features.detach(), idx) * 2).sum())


def test_backward_is_deterministic_with_many_collisions():
    features = torch.randn(5, 8)
    idx = torch.randint(0, 5, (4000, 16))                   # every point collected thousands of times
    grad_out = torch.randn(4000, 16, 8)
    a = ops.gather_points_backward(grad_out, idx, 5)
    b = ops.gather_points_backward(grad_out, idx, 5)
    assert torch.equal(a, b)
    # Ordered float32 sums (increasing entry index) equal a sequential float32 index_add_.
    seq = torch.zeros(5, 8).index_add_(0, idx.reshape(-1), grad_out.reshape(-1, 8))
    torch.testing.assert_close(a, seq, rtol=1e-5, atol=1e-4)


def test_thread_count_does_not_change_results():
    # Up to 8 threads the CPU backward scans idx per thread; beyond, it builds an inverse index
    # (counting sort). Both sum every point's entries in the same order: identical bits.
    features = torch.randn(500, 6)
    idx = torch.randint(-1, 500, (3000, 8))
    grad_out = torch.randn(3000, 8, 6)
    threads = torch.get_num_threads()
    results = []
    try:
        for t in (1, 2, 3, 12):
            torch.set_num_threads(t)
            results.append(ops.gather_points_backward(grad_out, idx, 500))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(results[0], r) for r in results[1:])
    torch.testing.assert_close(results[0], ref.gather_points_backward(grad_out, idx, 500), rtol=1e-5, atol=1e-5)


def test_kitti_point_features(shared_data):
    path = shared_data / "kitti" / "training" / "velodyne" / "000001.bin"
    if not path.exists():
        pytest.skip(f"{path} missing")
    points = torch.from_numpy(np.fromfile(path, dtype=np.float32).reshape(-1, 4))
    idx = torch.randint(-1, points.shape[0], (2048, 32), generator=torch.Generator().manual_seed(0))
    out = gather_points(points, idx)
    torch.testing.assert_close(out, ref.gather_points(points, idx), rtol=0, atol=0)
    grad = ops.gather_points_backward(torch.ones_like(out), idx, points.shape[0])
    counts = torch.bincount(idx[idx >= 0], minlength=points.shape[0]).float()
    torch.testing.assert_close(grad, counts[:, None].expand(-1, 4))


@pytest.mark.parametrize("features, idx, match", [
    (torch.randn(4, 3).int(), torch.zeros(2, 2, dtype=torch.int64), "features"),
    (torch.randn(4), torch.zeros(2, 2, dtype=torch.int64), "features"),
    (torch.randn(4, 3), torch.zeros(2, 2, dtype=torch.int32), "idx"),
    (torch.randn(4, 3), torch.zeros(2, dtype=torch.int64), "idx"),
    (torch.randn(4, 3), torch.full((2, 2), 4, dtype=torch.int64), "idx"),
    (torch.randn(4, 3), torch.full((2, 2), -2, dtype=torch.int64), "idx"),
])
def test_bad_inputs_name_the_argument(features, idx, match):
    with pytest.raises(ValueError, match=match):
        ops.gather_points(features, idx)


def test_bad_backward_inputs():
    idx = torch.zeros(2, 3, dtype=torch.int64)
    with pytest.raises(ValueError, match="grad_out"):
        ops.gather_points_backward(torch.randn(2, 4, 5), idx, 4)
    with pytest.raises(ValueError, match="num_points"):
        ops.gather_points_backward(torch.randn(2, 3, 5), idx, -1)
    with pytest.raises(ValueError, match="idx"):
        ops.gather_points_backward(torch.randn(2, 3, 5), idx + 7, 4)
    with pytest.raises(ValueError, match="idx"):
        gather_points(torch.randn(2, 5, 3), torch.zeros(3, 4, 2, dtype=torch.int64))


def test_cuda_matches_cpu(cuda_device):
    features = torch.randn(300, 7, dtype=torch.float64)
    idx = torch.randint(-1, 300, (200, 16))
    out = gather_points(features.to(cuda_device), idx.to(cuda_device))
    torch.testing.assert_close(out.cpu(), gather_points(features, idx), rtol=0, atol=0)
    grad_out = torch.randn(200, 16, 7, dtype=torch.float64)
    a = ops.gather_points_backward(grad_out.to(cuda_device), idx.to(cuda_device), 300)
    b = ops.gather_points_backward(grad_out.to(cuda_device), idx.to(cuda_device), 300)
    assert torch.equal(a, b)
    torch.testing.assert_close(a.cpu(), ops.gather_points_backward(grad_out, idx, 300))
    with pytest.raises(ValueError, match="idx"):
        ops.gather_points(features.to(cuda_device), idx)


def test_cuda_backward_is_bit_identical_to_cpu_and_empty_inputs(cuda_device):
    # Both backends sum every point's entries in increasing entry order in the same accumulation type:
    # the same bits, float16 included (summed in float32). Empty idx / zero channels launch nothing.
    g = torch.Generator().manual_seed(4)
    idx = torch.randint(-1, 50, (400, 32), generator=g)  # ~250 entries per point
    for dtype in (torch.float32, torch.float16):
        grad_out = torch.randn(400, 32, 6, generator=g).to(dtype)
        got = ops.gather_points_backward(grad_out.to(cuda_device), idx.to(cuda_device), 50)
        assert torch.equal(got.cpu(), ops.gather_points_backward(grad_out, idx, 50))
    features = torch.randn(50, 6, generator=g).to(cuda_device)
    assert gather_points(features, idx[:0].to(cuda_device)).shape == (0, 32, 6)
    assert gather_points(features[:, :0], idx.to(cuda_device)).shape == (400, 32, 0)
    assert torch.equal(ops.gather_points_backward(torch.zeros(0, 32, 6, device=cuda_device),
                                                  idx[:0].to(cuda_device), 50).cpu(), torch.zeros(50, 6))
