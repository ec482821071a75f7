"""Slow, obviously-correct pure-PyTorch versions of every op: the tests' ground truth.

They favour clarity over speed (loops over clouds, dense distance matrices) and follow the same
conventions as the kernels: packed points + offsets, int64 indices, -1 padding, ties to the lowest
index.
"""
import torch  # noqa: F401


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
