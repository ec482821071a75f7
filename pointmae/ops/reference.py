"""Slow, obviously-correct pure-PyTorch versions of every op: the tests' ground truth.

They favour clarity over speed (loops over clouds, dense distance matrices) and follow the same
conventions as the kernels: packed points + offsets, int64 indices, -1 padding, ties to the lowest
index.
"""
import torch  # noqa: F401


# ---------------------------------------------------------------- sampling: farthest point sampling
def fps_dist2(points: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
    """THE squared distance of FPS (csrc/fps/fps_core.h): (dx*dx + dy*dy) + dz*dz, each operation
    rounded on its own, in the accumulation dtype (the input dtype; float32 for float16)."""
    d = points - sample
    return (d[:, 0] * d[:, 0] + d[:, 1] * d[:, 1]) + d[:, 2] * d[:, 2]


def fps(points: torch.Tensor, offsets: torch.Tensor, num_samples: int, start_idx: torch.Tensor) -> torch.Tensor:
    """Naive O(N * M) farthest point sampling, cloud by cloud.

    points (N, 3) float, offsets (B+1,) int64, start_idx (B,) int64 local indices.
    Returns (B, num_samples) int64 indices into the packed points. The next sample is the unselected
    point whose distance to its nearest sample is largest; ties go to the lowest index; selected
    points are never picked again (duplicates included).
    """
    acc = torch.float32 if points.dtype == torch.float16 else points.dtype
    pts = points.to(acc)
    offsets = offsets.tolist()
    starts = start_idx.tolist()
    out = torch.empty((len(offsets) - 1, num_samples), dtype=torch.int64)
    for b in range(len(offsets) - 1):
        if num_samples == 0:
            continue
        lo, hi = offsets[b], offsets[b + 1]
        cloud = pts[lo:hi]
        min_dist = torch.full((hi - lo,), float("inf"), dtype=acc)
        selected = torch.zeros(hi - lo, dtype=torch.bool)
        current = starts[b]
        for k in range(num_samples):
            out[b, k] = lo + current
            selected[current] = True
            min_dist = torch.minimum(min_dist, fps_dist2(cloud, cloud[current]))
            candidates = min_dist.masked_fill(selected, -1.0)
            if k + 1 < num_samples:
                # first (lowest) index among the maxima of the unselected points
                current = int(torch.nonzero(candidates == candidates.max())[0, 0])
    return out.to(points.device)
# ------------------------------------------------------------------------------ neighbours (knn, ball_query)
def squared_distance_reference(query: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """(Q, 3), (N, 3) -> (Q, N): the one distance formula of the neighbour ops.

    ((dx*dx) + (dy*dy)) + (dz*dz), every operation a separate rounded tensor op in the input dtype, so
    that it matches the kernels bit for bit (see csrc/neighbors/neighbors_core.h).
    """
    dx = query[:, None, 0] - points[None, :, 0]
    dy = query[:, None, 1] - points[None, :, 1]
    dz = query[:, None, 2] - points[None, :, 2]
    return dx * dx + dy * dy + dz * dz


def _neighbors_reference(query, query_offsets, points, point_offsets, k, max_dist2, chunk=256):
    out_dtype = query.dtype
    compute = torch.float32 if query.dtype == torch.float16 else query.dtype
    query, points = query.to(compute), points.to(compute)
    num_queries = query.shape[0]
    dist = torch.full((num_queries, k), float("inf"), dtype=compute, device=query.device)
    idx = torch.full((num_queries, k), -1, dtype=torch.int64, device=query.device)
    limit = torch.tensor(max_dist2, dtype=compute)
    qo, po = query_offsets.tolist(), point_offsets.tolist()
    for b in range(len(qo) - 1):
        p_begin, p_end = po[b], po[b + 1]
        take = min(k, p_end - p_begin)
        if take == 0:
            continue
        for q_begin in range(qo[b], qo[b + 1], chunk):
            q_end = min(q_begin + chunk, qo[b + 1])
            d = squared_distance_reference(query[q_begin:q_end], points[p_begin:p_end])
            # A stable sort keeps equal distances in index order: ties go to the lowest index.
            sorted_d, order = torch.sort(d, dim=1, stable=True)
            sorted_d, order = sorted_d[:, :take], order[:, :take]
            within = sorted_d <= limit.to(d.device)
            dist[q_begin:q_end, :take] = torch.where(within, sorted_d, torch.full_like(sorted_d, float("inf")))
            idx[q_begin:q_end, :take] = torch.where(within, order + p_begin, torch.full_like(order, -1))
    return dist.to(out_dtype), idx


def knn_reference(query, query_offsets, points, point_offsets, k):
    """Dense kNN: (dist2 (Q, k) ascending, idx (Q, k) packed), ties by lowest index, -1 / inf padding."""
    return _neighbors_reference(query, query_offsets, points, point_offsets, k, float("inf"))


def ball_query_reference(query, query_offsets, points, point_offsets, radius, k):
    """Dense ball query: the (up to) k nearest points with dist2 <= radius^2 (radius^2 computed in
    float64, rounded once to the dtype), ascending, ties by lowest index, -1 / inf padding."""
    return _neighbors_reference(query, query_offsets, points, point_offsets, k, float(radius) * float(radius))
