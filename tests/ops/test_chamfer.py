"""chamfer_distance (+ backward) and the Chamfer losses against the pure-PyTorch reference."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from pointmae.ops import chamfer_distance, chamfer_loss_l1, chamfer_loss_l2, offsets_from_sizes, safe_sqrt
from pointmae.ops import reference as ref

ops = torch.ops.pointmae


def _cloud(kind, n, g, dtype):
    if n == 0:
        return torch.zeros(0, 3, dtype=dtype)
    if kind == "random":
        return torch.randn(n, 3, generator=g, dtype=torch.float64).to(dtype)
    if kind == "grid":          # many exact ties
        return torch.randint(-2, 3, (n, 3), generator=g).to(dtype)
    if kind == "identical":
        return torch.randn(1, 3, generator=g, dtype=torch.float64).to(dtype).expand(n, 3).clone()
    if kind == "collinear":
        t = torch.randint(-5, 6, (n, 1), generator=g).to(torch.float64)
        return (t * torch.tensor([[1.0, 2.0, -0.5]])).to(dtype)
    if kind == "coplanar":
        p = torch.randn(n, 3, generator=g, dtype=torch.float64)
        p[:, 2] = 1.5
        return p.to(dtype)
    if kind == "huge":          # squared distances overflow to inf in float32 (and in float64 at 1e200)
        return (torch.randn(n, 3, generator=g, dtype=torch.float64) * (1e200 if dtype == torch.float64 else 1e25)
                ).to(dtype)
    raise AssertionError(kind)


@st.composite
def cloud_pairs(draw, dtype=torch.float64):
    b = draw(st.integers(1, 4))
    x_sizes = draw(st.lists(st.integers(0, 40), min_size=b, max_size=b))
    y_sizes = draw(st.lists(st.integers(0, 40), min_size=b, max_size=b))
    kind = draw(st.sampled_from(["random", "grid", "identical", "collinear", "coplanar", "huge"]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    x = torch.cat([_cloud(kind, n, g, dtype) for n in x_sizes])
    y = torch.cat([_cloud(kind, n, g, dtype) for n in y_sizes])
    if draw(st.booleans()) and y.shape[0] > 0:     # duplicates of x inside y
        take = min(x.shape[0], y.shape[0])
        y[:take] = x[:take]
    return x, offsets_from_sizes(x_sizes), y, offsets_from_sizes(y_sizes)


def _assert_same(result, expected):
    for got, want in zip(result, expected):
        assert got.dtype == want.dtype and got.shape == want.shape
        assert torch.equal(torch.nan_to_num(got, nan=-7.0), torch.nan_to_num(want, nan=-7.0)), (got, want)


@given(cloud_pairs(), st.sampled_from([torch.float32, torch.float64]))
def test_forward_matches_reference_bit_for_bit(pair, dtype):
    x, xo, y, yo = pair
    x, y = x.to(dtype), y.to(dtype)
    _assert_same(ops.chamfer_distance(x, xo, y, yo), ref.chamfer_distance(x, xo, y, yo))


@given(cloud_pairs())
def test_backward_matches_reference(pair):
    x, xo, y, yo = pair
    both = torch.cat([x, y])
    if both.numel() and both.abs().max() > 1e100:    # overflowing squared distances: no useful gradient
        return
    gx, gy = torch.randn(x.shape[0], dtype=x.dtype), torch.randn(y.shape[0], dtype=y.dtype)
    _, idx_x, _, idx_y = ops.chamfer_distance(x, xo, y, yo)
    got = ops.chamfer_distance_backward(gx, gy, x, y, idx_x, idx_y)
    xr, yr = x.clone().requires_grad_(), y.clone().requires_grad_()
    dx, dy = ref.chamfer_distance_differentiable(xr, xo, yr, yo)
    total = (torch.where(torch.isinf(dx), 0, dx) * gx).sum() + (torch.where(torch.isinf(dy), 0, dy) * gy).sum()
    want = (torch.autograd.grad(total, (xr, yr), allow_unused=True) if total.requires_grad else (None, None))
    want = [w if w is not None else torch.zeros_like(t) for w, t in zip(want, (x, y))]
    torch.testing.assert_close(got[0], want[0])
    torch.testing.assert_close(got[1], want[1])


def test_ties_go_to_the_lowest_index_and_empty_partner_gives_inf():
    x = torch.tensor([[0.0, 0.0, 0.0], [5.0, 5.0, 5.0]])
    y = torch.tensor([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    dist_x, idx_x, dist_y, idx_y = chamfer_distance(x, torch.tensor([0, 1, 2]), y, torch.tensor([0, 4, 4]))
    assert idx_x.tolist() == [0, -1] and dist_x[0] == 1 and math.isinf(dist_x[1])
    assert idx_y.tolist() == [0, 0, 0, 0] and dist_y.tolist() == [1.0, 1.0, 1.0, 1.0]


def test_nan_ranks_after_inf():
    nan, big = float("nan"), 3e38
    y = torch.tensor([[nan, 0.0, 0.0], [big, 0.0, 0.0], [-big, 0.0, 0.0]])
    x = torch.tensor([[0.0, 0.0, 0.0], [nan, nan, nan]])
    dist_x, idx_x, _, _ = chamfer_distance(x, None, y, None)
    assert idx_x.tolist() == [1, 0]                         # first +inf beats NaN; all NaN -> index 0
    assert math.isinf(dist_x[0]) and math.isnan(dist_x[1])
    _assert_same(ops.chamfer_distance(x, torch.tensor([0, 2]), y, torch.tensor([0, 3])),
                 ref.chamfer_distance(x, torch.tensor([0, 2]), y, torch.tensor([0, 3])))


def test_vector_lanes_and_tail_with_ties():
    # Sizes around the SIMD width (8 floats / 4 doubles) with exact ties spread over lanes and tail.
    for dtype in (torch.float32, torch.float64):
        for m in (1, 3, 4, 7, 8, 9, 15, 16, 17, 33):
            y = torch.zeros(m, 3, dtype=dtype)
            y[:, 0] = torch.tensor([(-1.0) ** j * (1 + (j % 3)) for j in range(m)], dtype=dtype)
            x = torch.zeros(5, 3, dtype=dtype)
            x[:, 1] = torch.arange(5, dtype=dtype)
            xo, yo = torch.tensor([0, 5]), torch.tensor([0, m])
            _assert_same(ops.chamfer_distance(x, xo, y, yo), ref.chamfer_distance(x, xo, y, yo))


def test_half_matches_reference():
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(70, 3, generator=g).half(), torch.randn(50, 3, generator=g).half()
    xo, yo = torch.tensor([0, 30, 70]), torch.tensor([0, 25, 50])
    _assert_same(ops.chamfer_distance(x, xo, y, yo), ref.chamfer_distance(x, xo, y, yo))


def test_padded_layout():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(3, 10, 3, generator=g), torch.randn(3, 7, 3, generator=g)
    dist_x, idx_x, dist_y, idx_y = chamfer_distance(x, None, y, None)
    assert dist_x.shape == idx_x.shape == (3, 10) and dist_y.shape == idx_y.shape == (3, 7)
    for b in range(3):
        d, i, e, j = ref.chamfer_distance(x[b], torch.tensor([0, 10]), y[b], torch.tensor([0, 7]))
        _assert_same((dist_x[b], idx_x[b], dist_y[b], idx_y[b]), (d, i, e, j))


def test_non_contiguous_input():
    x = torch.randn(3, 40, dtype=torch.float64).t()
    y = torch.randn(3, 30, dtype=torch.float64).t()
    xo, yo = torch.tensor([0, 40]), torch.tensor([0, 30])
    _assert_same(ops.chamfer_distance(x, xo, y, yo), ref.chamfer_distance(x, xo, y, yo))


def test_gradcheck():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(13, 3, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randn(11, 3, generator=g, dtype=torch.float64, requires_grad=True)
    xo, yo = torch.tensor([0, 6, 13]), torch.tensor([0, 5, 11])

    def f(a, b):
        dist_x, _, dist_y, _ = chamfer_distance(a, xo, b, yo)
        return dist_x, dist_y

    assert torch.autograd.gradcheck(f, (x, y))
    assert torch.autograd.gradcheck(lambda a, b: chamfer_loss_l2(a, xo, b, yo, reduction="none"), (x, y))
    assert torch.autograd.gradcheck(lambda a, b: chamfer_loss_l1(a, xo, b, yo), (x, y))


def test_losses_match_reference_and_point_mae_definition():
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(4, 32, 3, generator=g, dtype=torch.float64), torch.randn(4, 20, 3, generator=g,
                                                                                dtype=torch.float64)
    xo, yo = torch.arange(5) * 32, torch.arange(5) * 20
    xp, yp = x.reshape(-1, 3), y.reshape(-1, 3)
    for loss, variant in ((chamfer_loss_l2, "l2"), (chamfer_loss_l1, "l1")):
        for reduction in ("mean", "none"):
            want = ref.chamfer_loss(xp, xo, yp, yo, variant, reduction)
            torch.testing.assert_close(loss(xp, xo, yp, yo, reduction=reduction), want)
            torch.testing.assert_close(loss(x, None, y, None, reduction=reduction), want)
    # The L2 loss against its definition via a dense distance matrix.
    d = torch.cdist(x, y) ** 2
    want = (d.min(2).values.mean(1) + d.min(1).values.mean(1)).mean()
    torch.testing.assert_close(chamfer_loss_l2(x, None, y, None), want)


def test_uneven_packed_losses():
    g = torch.Generator().manual_seed(4)
    xs, ys = [1, 17, 5], [3, 1, 40]
    x = torch.randn(sum(xs), 3, generator=g, dtype=torch.float64)
    y = torch.randn(sum(ys), 3, generator=g, dtype=torch.float64)
    xo, yo = offsets_from_sizes(xs), offsets_from_sizes(ys)
    torch.testing.assert_close(chamfer_loss_l2(x, xo, y, yo, reduction="none"),
                               ref.chamfer_loss(x, xo, y, yo, "l2", "none"))


def test_l1_gradient_is_finite_when_points_coincide():
    x = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([[0.0, 0.0, 0.0], [3.0, 0.0, 0.0]], dtype=torch.float64, requires_grad=True)
    chamfer_loss_l1(x, None, y, None).backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(y.grad).all()
    assert x.grad[0].tolist() == [0.0, 0.0, 0.0]
    t = torch.tensor([0.0, 4.0, float("nan")], requires_grad=True)
    s = safe_sqrt(t)
    s[:2].sum().backward()
    s = s.detach()
    assert s[:2].tolist() == [0.0, 2.0] and math.isnan(s[2]) and t.grad.tolist()[:2] == [0.0, 0.25]


def test_loss_with_empty_cloud_is_an_error():
    x, y = torch.randn(5, 3), torch.randn(4, 3)
    with pytest.raises(ValueError, match="cloud 1"):
        chamfer_loss_l2(x, torch.tensor([0, 5, 5]), y, torch.tensor([0, 2, 4]))
    with pytest.raises(ValueError, match="at least one point"):
        chamfer_loss_l1(torch.randn(2, 0, 3), None, torch.randn(2, 4, 3), None)
    with pytest.raises(ValueError, match="reduction"):
        chamfer_loss_l2(x, None, y, None, reduction="sum")


def test_opcheck():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(20, 3, generator=g, requires_grad=True)
    y = torch.randn(15, 3, generator=g, requires_grad=True)
    xo, yo = torch.tensor([0, 8, 20]), torch.tensor([0, 10, 15])
    torch.library.opcheck(ops.chamfer_distance, (x, xo, y, yo))
    _, idx_x, _, idx_y = ops.chamfer_distance(x.detach(), xo, y.detach(), yo)
    torch.library.opcheck(ops.chamfer_distance_backward, (torch.randn(20), torch.randn(15), x.detach(), y.detach(),
                                                          idx_x, idx_y))


def test_torch_compile_fullgraph():
    g = torch.Generator().manual_seed(6)
    x = torch.randn(4, 32, 3, generator=g, requires_grad=True)
    y = torch.randn(4, 32, 3, generator=g)

    @torch.compile(fullgraph=True, backend="aot_eager")
    def loss_fn(a, b):
        return chamfer_loss_l2(a, None, b, None)

    loss = loss_fn(x, y)
    loss.backward()
    x2 = x.detach().clone().requires_grad_()
    eager = chamfer_loss_l2(x2, None, y, None)
    eager.backward()
    torch.testing.assert_close(loss, eager)
    torch.testing.assert_close(x.grad, x2.grad)


def test_deterministic_and_thread_independent():
    g = torch.Generator().manual_seed(7)
    x = torch.randint(-3, 4, (3000, 3), generator=g).float()    # heavy ties and many points per target
    y = torch.randint(-3, 4, (500, 3), generator=g).float()
    xo, yo = torch.tensor([0, 1000, 3000]), torch.tensor([0, 100, 500])
    gx, gy = torch.randn(3000, generator=g), torch.randn(500, generator=g)
    threads = torch.get_num_threads()
    results = []
    try:
        for t in (1, max(2, threads), max(2, threads)):
            torch.set_num_threads(t)
            fwd = ops.chamfer_distance(x, xo, y, yo)
            results.append((*fwd, *ops.chamfer_distance_backward(gx, gy, x, y, fwd[1], fwd[3])))
    finally:
        torch.set_num_threads(threads)
    for other in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(results[0], other))


def test_real_lidar_sweeps(shared_data):
    kitti = shared_data / "kitti" / "training" / "velodyne" / "000001.bin"
    scans = sorted((shared_data / "nuscenes" / "samples" / "LIDAR_TOP").glob("*.pcd.bin"))
    if not kitti.exists() or not scans:
        pytest.skip("KITTI / nuScenes samples missing")
    g = torch.Generator().manual_seed(8)
    k = torch.from_numpy(np.fromfile(kitti, dtype=np.float32).reshape(-1, 4))[:, :3]
    n = torch.from_numpy(np.fromfile(scans[0], dtype=np.float32).reshape(-1, 5))[:, :3]
    # Two sub-sampled sweeps per side (a sensor-noise perturbation as the partner), uneven sizes.
    x = torch.cat([k[torch.randperm(k.shape[0], generator=g)[:1500]], n[torch.randperm(n.shape[0], generator=g)[:900]]])
    y = torch.cat([k[torch.randperm(k.shape[0], generator=g)[:1100]], n[torch.randperm(n.shape[0], generator=g)[:700]]])
    xo, yo = torch.tensor([0, 1500, 2400]), torch.tensor([0, 1100, 1800])
    _assert_same(ops.chamfer_distance(x, xo, y, yo), ref.chamfer_distance(x, xo, y, yo))


@pytest.mark.parametrize("args, match", [
    ((torch.randn(4, 3).int(), torch.tensor([0, 4]), torch.randn(4, 3), torch.tensor([0, 4])), "`x`"),
    ((torch.randn(4, 2), torch.tensor([0, 4]), torch.randn(4, 3), torch.tensor([0, 4])), "`x`"),
    ((torch.randn(4, 3), torch.tensor([0, 4]), torch.randn(4, 3).double(), torch.tensor([0, 4])), "`y`"),
    ((torch.randn(4, 3), torch.tensor([0, 4]), torch.randn(4, 3, 1), torch.tensor([0, 4])), "`y`"),
    ((torch.randn(4, 3), torch.tensor([0, 3]), torch.randn(4, 3), torch.tensor([0, 4])), "x_offsets"),
    ((torch.randn(4, 3), torch.tensor([0, 3, 1, 4]), torch.randn(4, 3), torch.tensor([0, 1, 2, 4])), "x_offsets"),
    ((torch.randn(4, 3), torch.tensor([0, 4]), torch.randn(4, 3), torch.tensor([0, 4.0])), "y_offsets"),
    ((torch.randn(4, 3), torch.tensor([0, 4]), torch.randn(4, 3), torch.tensor([0, 2, 4])), "y_offsets"),
    ((torch.randn(4, 3), torch.tensor([1, 4]), torch.randn(4, 3), torch.tensor([0, 4])), "x_offsets"),
    # The pair check shared with knn / ball_query (csrc/common/checks.h check_point_pair).
    ((torch.randn(4, 3), torch.tensor([0, 4]), torch.randn(4, 3), torch.tensor([0, 2, 4])),
     r"`x_offsets` and `y_offsets` must describe the same number of clouds B .*got 1 and 2 clouds"),
    ((torch.randn(4, 3), torch.tensor([0, 4]), torch.randn(4, 3).double(), torch.tensor([0, 4])),
     "`y` must have the dtype of `x`"),
])
def test_bad_inputs_name_the_argument(args, match):
    with pytest.raises(ValueError, match=match):
        ops.chamfer_distance(*args)


def test_bad_backward_inputs_and_layouts():
    x, y = torch.randn(4, 3), torch.randn(5, 3)
    ix, iy = torch.zeros(4, dtype=torch.int64), torch.zeros(5, dtype=torch.int64)
    with pytest.raises(ValueError, match="grad_dist_x"):
        ops.chamfer_distance_backward(torch.randn(3), torch.randn(5), x, y, ix, iy)
    with pytest.raises(ValueError, match="idx_y"):
        ops.chamfer_distance_backward(torch.randn(4), torch.randn(5), x, y, ix, iy + 4)
    with pytest.raises(ValueError, match="idx_x"):
        ops.chamfer_distance_backward(torch.randn(4), torch.randn(5), x, y, ix.int(), iy)
    with pytest.raises(ValueError, match="padded"):
        chamfer_distance(torch.randn(2, 4, 3), None, torch.randn(8, 3), None)
    with pytest.raises(ValueError, match="offsets"):
        chamfer_distance(torch.randn(2, 4, 3), torch.tensor([0, 4, 8]), torch.randn(2, 4, 3), None)


def test_cuda_matches_cpu(cuda_device):
    g = torch.Generator().manual_seed(9)
    sizes_x, sizes_y = [0, 1, 33, 700, 2, 300], [5, 0, 33, 1000, 1, 257]
    for dtype in (torch.float32, torch.float64):
        x = torch.randint(-4, 5, (sum(sizes_x), 3), generator=g).to(dtype)
        y = torch.randn(sum(sizes_y), 3, generator=g, dtype=dtype)
        xo, yo = offsets_from_sizes(sizes_x), offsets_from_sizes(sizes_y)
        cpu = ops.chamfer_distance(x, xo, y, yo)
        dev = ops.chamfer_distance(x.to(cuda_device), xo.to(cuda_device), y.to(cuda_device), yo.to(cuda_device))
        _assert_same([t.cpu() for t in dev], cpu)
        gx, gy = torch.randn(x.shape[0], dtype=dtype), torch.randn(y.shape[0], dtype=dtype)
        gc = ops.chamfer_distance_backward(gx, gy, x, y, cpu[1], cpu[3])
        args = [t.to(cuda_device) for t in (gx, gy, x, y, cpu[1], cpu[3])]
        gd1 = ops.chamfer_distance_backward(*args)
        gd2 = ops.chamfer_distance_backward(*args)
        assert all(torch.equal(a, b) for a, b in zip(gd1, gd2))
        for a, b in zip(gd1, gc):
            torch.testing.assert_close(a.cpu(), b)
    xh = torch.randn(100, 3, generator=g).half()
    o = torch.tensor([0, 100])
    _assert_same([t.cpu() for t in ops.chamfer_distance(xh.to(cuda_device), o.to(cuda_device), xh.to(cuda_device) * 0.5,
                                                         o.to(cuda_device))],
                 ops.chamfer_distance(xh, o, xh * 0.5, o))


def test_cuda_backward_is_bit_identical_to_cpu(cuda_device):
    # Every operation of the gradient is rounded on its own (chamfer_core.h add_distance_gradient): left
    # to nvcc, `o + 2g * (a - b)` became a fused multiply-add and the sums over the partner points that
    # chose a point differed from the CPU in the last bit.
    g = torch.Generator().manual_seed(12)
    sizes_x, sizes_y = [0, 40, 700, 3], [6, 0, 900, 50]
    xo, yo = offsets_from_sizes(sizes_x), offsets_from_sizes(sizes_y)
    for dtype in (torch.float32, torch.float64, torch.float16):
        x = torch.randn(sum(sizes_x), 3, generator=g).to(dtype)
        y = (torch.randn(sum(sizes_y), 3, generator=g) * 0.3).to(dtype)  # many y points choose the same x
        _, idx_x, _, idx_y = ops.chamfer_distance(x, xo, y, yo)
        gx, gy = torch.randn(x.shape[0], generator=g).to(dtype), torch.randn(y.shape[0], generator=g).to(dtype)
        cpu = ops.chamfer_distance_backward(gx, gy, x, y, idx_x, idx_y)
        gpu = ops.chamfer_distance_backward(*(t.to(cuda_device) for t in (gx, gy, x, y, idx_x, idx_y)))
        for got, want in zip(gpu, cpu):
            assert got.dtype == want.dtype and torch.equal(got.cpu(), want), dtype
