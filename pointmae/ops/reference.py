"""Slow, obviously-correct pure-PyTorch versions of every op: the tests' ground truth.

They favour clarity over speed (loops over clouds, dense distance matrices) and follow the same
conventions as the kernels: packed points + offsets, int64 indices, -1 padding, ties to the lowest
index.
"""
import torch  # noqa: F401


# ---------------------------------------------------------------------------- grouping (gather_points)

def gather_points(features: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """(N, C), (Q, k) int64 with -1 padding -> (Q, k, C); padding rows are zero."""
    out = torch.zeros(idx.shape + (features.shape[1],), dtype=features.dtype, device=features.device)
    valid = idx >= 0
    out[valid] = features[idx[valid]]
    return out


def gather_points_backward(grad_out: torch.Tensor, idx: torch.Tensor, num_points: int) -> torch.Tensor:
    """Adjoint of gather_points: grad[p] = sum of grad_out[q, j] over idx[q, j] = p, in increasing (q, j)
    order (accumulated in float64, then rounded to the dtype of grad_out)."""
    c = grad_out.shape[-1]
    grad = torch.zeros(num_points, c, dtype=torch.float64, device=grad_out.device)
    flat_idx = idx.reshape(-1)
    flat_grad = grad_out.reshape(-1, c).to(torch.float64)
    for e in range(flat_idx.numel()):
        p = int(flat_idx[e])
        if p >= 0:
            grad[p] += flat_grad[e]
    return grad.to(grad_out.dtype)


# ---------------------------------------------------------------------------- Chamfer distance

def squared_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The one squared distance: dx*dx + dy*dy + dz*dz, left to right, each operation rounded in the
    compute dtype (float32 for float16 inputs). a, b broadcast to (..., 3)."""
    d = a - b
    return d[..., 0] * d[..., 0] + d[..., 1] * d[..., 1] + d[..., 2] * d[..., 2]


def _nearest(query: torch.Tensor, partner: torch.Tensor):
    """Nearest partner of every query with the ordering of the kernels: smaller distance, then lower
    index; NaN after every number (all NaN -> index 0, NaN); no partner -> +inf, -1."""
    q = query.shape[0]
    if partner.shape[0] == 0:
        return (torch.full((q,), float("inf"), dtype=query.dtype, device=query.device),
                torch.full((q,), -1, dtype=torch.int64, device=query.device))
    d = squared_distance(query[:, None, :], partner[None, :, :])     # (q, m): a dense matrix, fine here
    finite_min = torch.where(torch.isnan(d), torch.full_like(d, float("inf")), d).min(dim=1).values
    is_best = d == finite_min[:, None]                                # NaN never equals
    has_best = is_best.any(dim=1)
    first = torch.argmax(is_best.to(torch.uint8), dim=1)            # first True = lowest index
    idx = torch.where(has_best, first, torch.zeros_like(first))
    dist = torch.where(has_best, finite_min, torch.full_like(finite_min, float("nan")))
    return dist, idx


def chamfer_distance(x: torch.Tensor, x_offsets: torch.Tensor, y: torch.Tensor, y_offsets: torch.Tensor):
    """Packed Chamfer distance: (dist_x (Nx,), idx_x (Nx,), dist_y (Ny,), idx_y (Ny,)), indices packed.

    float16 inputs are computed in float32 and the distances rounded to float16, as in the kernels.
    Not differentiable itself; see `chamfer_distance_differentiable`.
    """
    compute = torch.float32 if x.dtype == torch.float16 else x.dtype
    xc, yc = x.to(compute), y.to(compute)
    dist_x = torch.empty(x.shape[0], dtype=compute, device=x.device)
    dist_y = torch.empty(y.shape[0], dtype=compute, device=y.device)
    idx_x = torch.empty(x.shape[0], dtype=torch.int64, device=x.device)
    idx_y = torch.empty(y.shape[0], dtype=torch.int64, device=y.device)
    for b in range(x_offsets.numel() - 1):
        x0, x1 = int(x_offsets[b]), int(x_offsets[b + 1])
        y0, y1 = int(y_offsets[b]), int(y_offsets[b + 1])
        d, i = _nearest(xc[x0:x1], yc[y0:y1])
        dist_x[x0:x1], idx_x[x0:x1] = d, torch.where(i < 0, i, i + y0)
        d, i = _nearest(yc[y0:y1], xc[x0:x1])
        dist_y[y0:y1], idx_y[y0:y1] = d, torch.where(i < 0, i, i + x0)
    return dist_x.to(x.dtype), idx_x, dist_y.to(y.dtype), idx_y


def chamfer_distance_differentiable(x, x_offsets, y, y_offsets):
    """(dist_x, dist_y) recomputed from the reference indices with plain autograd ops, for gradients."""
    _, idx_x, _, idx_y = chamfer_distance(x.detach(), x_offsets, y.detach(), y_offsets)
    big = torch.full((), float("inf"), dtype=x.dtype, device=x.device)
    dist_x = torch.where(idx_x >= 0, squared_distance(x, y[idx_x.clamp(min=0)]) if y.shape[0] else big, big)
    dist_y = torch.where(idx_y >= 0, squared_distance(y, x[idx_y.clamp(min=0)]) if x.shape[0] else big, big)
    return dist_x, dist_y


def chamfer_loss(x, x_offsets, y, y_offsets, variant: str = "l2", reduction: str = "mean"):
    """Point-MAE's Chamfer losses per cloud, then averaged over clouds ('mean') or not ('none').
    l2: mean dist_x + mean dist_y; l1: (mean sqrt dist_x + mean sqrt dist_y) / 2."""
    dist_x, dist_y = chamfer_distance_differentiable(x, x_offsets, y, y_offsets)
    per_cloud = []
    for b in range(x_offsets.numel() - 1):
        dx = dist_x[int(x_offsets[b]):int(x_offsets[b + 1])]
        dy = dist_y[int(y_offsets[b]):int(y_offsets[b + 1])]
        if variant == "l2":
            per_cloud.append(dx.mean() + dy.mean())
        else:
            per_cloud.append((dx.sqrt().mean() + dy.sqrt().mean()) / 2)
    per_cloud = torch.stack(per_cloud)
    return per_cloud.mean() if reduction == "mean" else per_cloud
