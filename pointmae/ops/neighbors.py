"""Neighbour search: k nearest neighbours (`knn`) and ball query (`ball_query`).

Both take packed batches (see pointmae/ops/_batch.py): queries (Q, 3) with `query_offsets` (B+1,)
and points (N, 3) with `point_offsets` (B+1,); query cloud b searches point cloud b only. Padded
clouds (B, Nq, 3) / (B, N, 3) are accepted too, with both offsets None.

Exactness and order (the same on the CPU, on CUDA and in pointmae/ops/reference.py):
- dist2 = dx*dx + dy*dy + dz*dz, each operation rounded in the input dtype, left to right, no fused
  multiply-add (float16 inputs, CUDA only, are computed in float32 and rounded to float16 on output);
- results are sorted ascending by (dist2, index): equal distances go to the lowest index;
- missing neighbours (a cloud with fewer than k points, or fewer than k within the radius) are padded
  with idx = -1 and dist2 = inf;
- non-finite coordinates (NaN, Inf) are rejected with a ValueError naming the argument and the row.

Backends: the CPU builds one k-d tree per cloud (parallel build and parallel queries); CUDA runs a
tiled brute force with one thread per query, so a single cloud fills the GPU. k is unbounded on both
(CUDA keeps k <= 128 in per-thread buffers and uses a slower global-memory buffer above that).

Gradients: `dist2` is differentiable with respect to `query` and `points` (d dist2 / d q = 2 (q - p));
`idx` is not. The backward accumulates into `points` with the grouping op's deterministic scatter-add
(`gather_points_backward`, pointmae/ops/grouping.py: each point sums its entries in increasing order,
no floating-point atomics), so gradients have the same bits on every run, on CPU and CUDA.
"""
from typing import Optional, Tuple

import torch

from pointmae.ops._batch import to_packed

__all__ = ["knn", "ball_query"]


def _pack_pair(op: str, query, query_offsets, points, point_offsets):
    """Packs query and points; returns (query, query_offsets, points, point_offsets, padded (B, Nq, N) or None)."""
    for name, t in (("query", query), ("points", points)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{op}: `{name}` must be a torch.Tensor, got {type(t).__name__}")
    if query.dim() == 3 or points.dim() == 3:
        if query.dim() != 3 or points.dim() != 3:
            raise ValueError(f"{op}: padded input needs both `query` (B, Nq, 3) and `points` (B, N, 3) padded, "
                             f"got query of shape {tuple(query.shape)} and points of shape {tuple(points.shape)}")
        if query.shape[0] != points.shape[0]:
            raise ValueError(f"{op}: padded `query` and `points` must have the same batch size B, got "
                             f"query of shape {tuple(query.shape)} and points of shape {tuple(points.shape)}")
    q, q_off, q_pad = to_packed(query, query_offsets, "query")
    p, p_off, p_pad = to_packed(points, point_offsets, "points")
    padded = None if q_pad is None else (q_pad[0], q_pad[1], p_pad[1])
    return q, q_off, p, p_off, padded


def _unpack(dist2, idx, padded):
    if padded is None:
        return dist2, idx
    b, nq, n = padded
    k = dist2.shape[-1]
    dist2 = dist2.reshape(b, nq, k)
    idx = idx.reshape(b, nq, k)
    base = (torch.arange(b, device=idx.device, dtype=idx.dtype) * n).view(b, 1, 1)
    return dist2, torch.where(idx < 0, idx, idx - base)


def _check_k(op: str, k) -> int:
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"{op}: `k` must be an int, got {type(k).__name__}")
    if k < 0:
        raise ValueError(f"{op}: `k` must be >= 0, got {k}")
    return k


def knn(query: torch.Tensor, query_offsets: Optional[torch.Tensor], points: torch.Tensor,
        point_offsets: Optional[torch.Tensor], k: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The k nearest neighbours of every query point among the points of its own cloud. Exact.

    Args:
        query: (Q, 3) packed query points, float32/float64 (float16 on CUDA), or padded (B, Nq, 3).
        query_offsets: (B+1,) int64 cumulative query counts, or None (one cloud, or padded input).
        points: (N, 3) packed points, the dtype and device of `query`, or padded (B, N, 3).
        point_offsets: (B+1,) int64 cumulative point counts (same B as `query_offsets`), or None.
        k: number of neighbours, >= 0. Any k; clouds with fewer than k points are padded.

    Returns:
        (dist2, idx): dist2 (Q, k) squared distances in the input dtype, ascending; idx (Q, k) int64
        indices into the packed `points` (local to the cloud for padded input, (B, Nq, k) shapes), ties
        broken by the lowest index; idx = -1 and dist2 = inf where the cloud has fewer than k points.
    """
    k = _check_k("pointmae.knn", k)
    q, q_off, p, p_off, padded = _pack_pair("pointmae.knn", query, query_offsets, points, point_offsets)
    dist2, idx = torch.ops.pointmae.knn(q, q_off, p, p_off, k)
    return _unpack(dist2, idx, padded)


def ball_query(query: torch.Tensor, query_offsets: Optional[torch.Tensor], points: torch.Tensor,
               point_offsets: Optional[torch.Tensor], radius: float, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Up to k neighbours of every query point within `radius`, nearest first. Exact.

    A point is within the ball when dist2 <= radius^2 (boundary included), with radius^2 computed in
    float64 and rounded once to the input dtype. Unlike the classic PointNet++ ball query, which
    returns the first k points found in index order, the k returned are the NEAREST ones, sorted
    ascending by dist2, ties broken by the lowest index.

    Args:
        query: (Q, 3) packed query points, float32/float64 (float16 on CUDA), or padded (B, Nq, 3).
        query_offsets: (B+1,) int64 cumulative query counts, or None (one cloud, or padded input).
        points: (N, 3) packed points, the dtype and device of `query`, or padded (B, N, 3).
        point_offsets: (B+1,) int64 cumulative point counts (same B as `query_offsets`), or None.
        radius: ball radius, finite and >= 0.
        k: maximum number of neighbours, >= 0.

    Returns:
        (dist2, idx), each (Q, k) ((B, Nq, k) for padded input, with local indices): nearest first,
        padded with idx = -1 and dist2 = inf where fewer than k points lie within the radius.
    """
    k = _check_k("pointmae.ball_query", k)
    radius = float(radius)
    q, q_off, p, p_off, padded = _pack_pair("pointmae.ball_query", query, query_offsets, points, point_offsets)
    dist2, idx = torch.ops.pointmae.ball_query(q, q_off, p, p_off, radius, k)
    return _unpack(dist2, idx, padded)


# ---------------------------------------------------------------------------------------- fake kernels
# Output shapes depend only on Q and k, so no dynamic sizes are needed.
@torch.library.register_fake("pointmae::knn")
def _knn_fake(query, query_offsets, points, point_offsets, k):
    torch._check(k >= 0, lambda: f"pointmae.knn: `k` must be >= 0, got {k}")
    return (query.new_empty((query.shape[0], k)), query.new_empty((query.shape[0], k), dtype=torch.int64))


@torch.library.register_fake("pointmae::ball_query")
def _ball_query_fake(query, query_offsets, points, point_offsets, radius, k):
    torch._check(k >= 0, lambda: f"pointmae.ball_query: `k` must be >= 0, got {k}")
    return (query.new_empty((query.shape[0], k)), query.new_empty((query.shape[0], k), dtype=torch.int64))


# ---------------------------------------------------------------------------------------- autograd
# dist2[q, j] = |query[q] - points[idx[q, j]]|^2, so d dist2 / d query[q] = 2 (query[q] - p) and
# d dist2 / d p = -2 (query[q] - p); padded entries (idx = -1) carry no gradient.
def _setup_context(ctx, inputs, output):
    query, points = inputs[0], inputs[2]
    _, idx = output
    ctx.save_for_backward(query, points, idx)


def _distance_backward(grad_dist2, query, points, idx):
    valid = idx >= 0
    safe_idx = idx.clamp_min(0)
    diff = query.unsqueeze(1) - points[safe_idx]                      # (Q, k, 3)
    weight = torch.where(valid, grad_dist2, torch.zeros_like(grad_dist2))
    grad_pair = 2 * weight.unsqueeze(-1) * diff                       # (Q, k, 3)
    grad_query = grad_pair.sum(1)
    # Entries with idx = -1 are skipped by the scatter (and their grad_pair is zero anyway).
    grad_points = torch.ops.pointmae.gather_points_backward(-grad_pair.contiguous(), idx, points.shape[0])
    return grad_query, grad_points


def _knn_backward(ctx, grad_dist2, grad_idx):
    query, points, idx = ctx.saved_tensors
    if grad_dist2 is None:
        return None, None, None, None, None
    grad_query, grad_points = _distance_backward(grad_dist2, query, points, idx)
    return grad_query, None, grad_points, None, None


def _ball_query_backward(ctx, grad_dist2, grad_idx):
    query, points, idx = ctx.saved_tensors
    if grad_dist2 is None:
        return None, None, None, None, None, None
    grad_query, grad_points = _distance_backward(grad_dist2, query, points, idx)
    return grad_query, None, grad_points, None, None, None


torch.library.register_autograd("pointmae::knn", _knn_backward, setup_context=_setup_context)
torch.library.register_autograd("pointmae::ball_query", _ball_query_backward, setup_context=_setup_context)
