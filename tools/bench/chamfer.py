"""Benchmarks of chamfer_distance and gather_points (forward + backward).

Competitors, pure PyTorch, measured in the same run with the same thread count:
- Chamfer: the usual dense version, torch.cdist -> min both ways -> sum -> backward (an N x M matrix
  per cloud, twice more in the backward).
- gather: features[idx] with autograd (its backward is an accumulating index_put, i.e. index_add).
"""
import torch

from bench.harness import Case

from pointmae.ops import chamfer_distance, gather_points

NOTES = [
    "chamfer rows: forward + backward of sum(dist_x) + sum(dist_y); competitor `torch.cdist` = cdist -> min both "
    "ways -> square -> sum -> backward on padded (B, N, 3) clouds",
    "gather rows: forward + backward of sum(out * w); competitor = features[idx] (autograd: index_put accumulate)",
]


def _chamfer_case(device, b, n, m, label, threads, memory, repeat):
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(b, n, 3, generator=g).to(device).requires_grad_()
    y = torch.randn(b, m, 3, generator=g).to(device).requires_grad_()

    def ours():
        x.grad = y.grad = None
        dist_x, _, dist_y, _ = chamfer_distance(x, None, y, None)
        (dist_x.sum() + dist_y.sum()).backward()

    def cdist():
        x.grad = y.grad = None
        d = torch.cdist(x, y)
        (d.min(2).values.square().sum() + d.min(1).values.square().sum()).backward()

    return Case(op="chamfer fwd+bwd", size=label, threads=threads, ours=ours, competitors={"torch.cdist": cdist},
                memory=memory, repeat=repeat)


def _gather_case(device, n, c, q, k, threads, repeat):
    g = torch.Generator(device="cpu").manual_seed(1)
    features = torch.randn(n, c, generator=g).to(device).requires_grad_()
    idx = torch.randint(0, n, (q, k), generator=g).to(device)
    w = torch.randn(q, k, c, generator=g).to(device)

    def ours():
        features.grad = None
        (gather_points(features, idx) * w).sum().backward()

    def indexing():
        features.grad = None
        (features[idx] * w).sum().backward()

    return Case(op="gather fwd+bwd", size=f"features ({n}, {c}), idx ({q}, {k})", threads=threads, ours=ours,
                competitors={"torch indexing": indexing}, repeat=repeat)


def cases(device, quick):
    threads = torch.get_num_threads()
    if quick:
        return [
            _chamfer_case(device, 4, 256, 256, "4 clouds x 256 vs 256", threads, True, 3),
            _chamfer_case(device, 64, 32, 32, "64 patches x 32 vs 32", threads, False, 3),
            _gather_case(device, 2048, 3, 128, 32, threads, 3),
        ]
    rows = [
        _chamfer_case(device, 32, 2048, 2048, "32 clouds x 2048 vs 2048", threads, True, 5),
        _chamfer_case(device, 32 * 26, 32, 32, "Point-MAE: 32*26 masked patches x 32 vs 32", threads, True, 10),
        _chamfer_case(device, 128, 1024, 1024, "128 clouds x 1024 vs 1024", threads, True, 5),
        _chamfer_case(device, 1, 8192, 8192, "1 cloud x 8192 vs 8192", threads, True, 5),
    ]
    # Small ops are also measured on one thread: on a loaded machine the cost of waking a second
    # thread can dominate them.
    for t in sorted({1, threads}):
        if t == 1 and device.type == "cpu":
            rows.append(_chamfer_case(device, 32 * 26, 32, 32, "Point-MAE: 32*26 masked patches x 32 vs 32", t,
                                      False, 10))
        rows.append(_gather_case(device, 32 * 1024, 3, 32 * 64, 32, t, 10))       # Point-MAE grouping of xyz
        rows.append(_gather_case(device, 32 * 1024, 384, 32 * 64, 32, t, 5))     # grouping of token features
    return rows
