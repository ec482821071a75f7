"""Chamfer distance between point clouds, and the Chamfer losses of Point-MAE.

Chamfer distance (Fan, Su, Guibas, CVPR 2017): for every point of x the squared Euclidean distance to
its nearest point of y in the same cloud, and for every point of y the same towards x. Computed by a
brute-force scan per cloud (CPU: SIMD, parallel over clouds and query blocks; CUDA: one thread per
query, partner tiles in shared memory) in O(Nx + Ny) memory: no Nx x Ny distance matrix is formed.

Conventions (the same in the CPU and CUDA kernels and in `pointmae.ops.reference`):

- squared distance ``dx*dx + dy*dy + dz*dz`` (dx = a.x - b.x, ...), left to right, each operation
  rounded in the input dtype (float32 for float16 inputs, the result rounded back to float16);
- ties go to the lowest index; NaN distances rank after every number, so a point whose distances
  are all NaN gets NaN and the first point of the partner cloud;
- a point whose partner cloud is empty gets distance +inf and index -1.

The backward (gradients w.r.t. x and y through the distances; the indices have none) is
deterministic: every point sums its own term and the terms of the partner points that chose it, in
increasing index order, from an inverse index instead of atomic scatter-adds.
"""
from typing import Optional, Tuple

import torch

import pointmae  # noqa: F401  (loads the extension: torch.ops.pointmae.*)
from pointmae.ops._batch import to_packed

_ops = torch.ops.pointmae


def _pack_pair(x, x_offsets, y, y_offsets):
    if (x.dim() == 3) != (y.dim() == 3):
        raise ValueError(f"`x` and `y` must both be packed (N, 3) or both padded (B, N, 3), got x of shape "
                         f"{tuple(x.shape)} and y of shape {tuple(y.shape)}")
    if x.dim() == 3 and x.shape[0] != y.shape[0]:
        raise ValueError(f"padded `x` {tuple(x.shape)} and `y` {tuple(y.shape)} must have the same number of clouds B")
    xp, xo, x_pad = to_packed(x, x_offsets, "x")
    yp, yo, y_pad = to_packed(y, y_offsets, "y")
    return xp, xo, yp, yo, x_pad, y_pad


def chamfer_distance(x: torch.Tensor, x_offsets: Optional[torch.Tensor], y: torch.Tensor,
                     y_offsets: Optional[torch.Tensor]
                     ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Nearest squared distances and indices between two batches of clouds, both ways.

    Args:
        x: (Nx, 3) float32 / float64 / float16 packed points, or padded (B, N, 3).
        x_offsets: (B+1,) int64 cumulative cloud sizes of x (None for padded input, or for a single
            packed cloud).
        y: (Ny, 3) packed points with the dtype and device of x, or padded (B, M, 3).
        y_offsets: (B+1,) int64 offsets of y; cloud b of x is compared with cloud b of y.

    Returns:
        (dist_x, idx_x, dist_y, idx_y). Packed: dist_x (Nx,) in the dtype of x, idx_x (Nx,) int64
        packed index into y of each x point's nearest neighbour; dist_y, idx_y (Ny,) the reverse.
        Padded: (B, N) and (B, M), with indices local to the cloud. Empty partner cloud: +inf / -1.

    Differentiable w.r.t. x and y through dist_x and dist_y (deterministic backward).
    """
    xp, xo, yp, yo, x_pad, y_pad = _pack_pair(x, x_offsets, y, y_offsets)
    dist_x, idx_x, dist_y, idx_y = _ops.chamfer_distance(xp, xo, yp, yo)
    if x_pad is None:
        return dist_x, idx_x, dist_y, idx_y
    (b, n), (_, m) = x_pad, y_pad
    # Packed partner index -> index local to the cloud (-1 stays -1).
    idx_x = idx_x.view(b, n)
    idx_y = idx_y.view(b, m)
    idx_x = torch.where(idx_x < 0, idx_x, idx_x - (torch.arange(b, device=idx_x.device) * m).view(b, 1))
    idx_y = torch.where(idx_y < 0, idx_y, idx_y - (torch.arange(b, device=idx_y.device) * n).view(b, 1))
    return dist_x.view(b, n), idx_x, dist_y.view(b, m), idx_y


def safe_sqrt(t: torch.Tensor) -> torch.Tensor:
    """sqrt whose gradient at 0 is 0 instead of inf (elsewhere the usual 1 / (2 sqrt)).

    Two coinciding points have distance 0, where sqrt has an infinite derivative; the distance's own
    gradient is 0 there, so the plain chain rule gives 0 * inf = NaN. Defining the derivative at 0 as 0
    keeps the L1 Chamfer loss's gradient finite (and zero for that pair, which is already optimal).
    Values are unchanged: sqrt(0) = 0; NaN and inf pass through.
    """
    zero = t == 0
    return torch.where(zero, torch.zeros((), dtype=t.dtype, device=t.device),
                       torch.sqrt(torch.where(zero, torch.ones((), dtype=t.dtype, device=t.device), t)))


def _per_cloud_means(x, x_offsets, y, y_offsets, transform):
    xp, xo, yp, yo, x_pad, y_pad = _pack_pair(x, x_offsets, y, y_offsets)
    if x_pad is not None:
        (b, n), (_, m) = x_pad, y_pad
        if b == 0 or n == 0 or m == 0:
            raise ValueError(f"chamfer loss: every cloud needs at least one point, got padded x {tuple(x.shape)} "
                             f"and y {tuple(y.shape)}")
        dist_x, _, dist_y, _ = _ops.chamfer_distance(xp, xo, yp, yo)
        return transform(dist_x).view(b, n).mean(1), transform(dist_y).view(b, m).mean(1)
    x_sizes, y_sizes = xo.diff(), yo.diff()
    if x_sizes.numel() == 0:
        raise ValueError("chamfer loss: `x_offsets` describes no cloud (B = 0)")
    empty = (x_sizes == 0) | (y_sizes == 0) if x_sizes.shape == y_sizes.shape else None
    if empty is not None and bool(empty.any()):
        b = int(torch.nonzero(empty)[0, 0])
        raise ValueError(f"chamfer loss: every cloud needs at least one point in x and in y, but cloud {b} has "
                         f"{int(x_sizes[b])} points in x and {int(y_sizes[b])} in y")
    dist_x, _, dist_y, _ = _ops.chamfer_distance(xp, xo, yp, yo)
    # segment_reduce: a differentiable per-cloud mean, one sum per segment (no scatter atomics).
    mean_x = torch.segment_reduce(transform(dist_x), "mean", lengths=x_sizes)
    mean_y = torch.segment_reduce(transform(dist_y), "mean", lengths=y_sizes)
    return mean_x, mean_y


def _reduce(per_cloud: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return per_cloud.mean()
    if reduction == "none":
        return per_cloud
    raise ValueError(f"`reduction` must be 'mean' or 'none', got {reduction!r}")


def chamfer_loss_l2(x: torch.Tensor, x_offsets: Optional[torch.Tensor], y: torch.Tensor,
                    y_offsets: Optional[torch.Tensor], reduction: str = "mean") -> torch.Tensor:
    """Chamfer-L2 loss of Point-MAE (Pang et al., ECCV 2022), the reconstruction target there.

    Per cloud b: ``mean_i dist_x[i] + mean_j dist_y[j]`` (squared distances, each direction averaged
    over its own points). reduction="mean" (default) averages over the B clouds -> scalar;
    reduction="none" returns (B,). Arguments as in `chamfer_distance` (packed with offsets, or padded
    with None offsets). Every cloud must have at least one point in x and in y (ValueError). With packed
    input that check reads the cloud sizes on the host (a graph break under torch.compile); padded input
    is checked from the shapes and compiles with fullgraph=True.
    """
    if reduction not in ("mean", "none"):
        raise ValueError(f"`reduction` must be 'mean' or 'none', got {reduction!r}")
    mean_x, mean_y = _per_cloud_means(x, x_offsets, y, y_offsets, lambda d: d)
    return _reduce(mean_x + mean_y, reduction)


def chamfer_loss_l1(x: torch.Tensor, x_offsets: Optional[torch.Tensor], y: torch.Tensor,
                    y_offsets: Optional[torch.Tensor], reduction: str = "mean") -> torch.Tensor:
    """Chamfer-L1 loss as defined in Point-MAE: per cloud ``(mean_i sqrt(dist_x[i]) + mean_j sqrt(dist_y[j])) / 2``.

    Uses `safe_sqrt` (gradient 0 where a distance is 0), so coinciding points give a finite gradient.
    Reduction and arguments as in `chamfer_loss_l2`.
    """
    if reduction not in ("mean", "none"):
        raise ValueError(f"`reduction` must be 'mean' or 'none', got {reduction!r}")
    mean_x, mean_y = _per_cloud_means(x, x_offsets, y, y_offsets, safe_sqrt)
    return _reduce((mean_x + mean_y) / 2, reduction)


# ------------------------------------------------------------------ torch.library registrations

@torch.library.register_fake("pointmae::chamfer_distance")
def _chamfer_distance_fake(x, x_offsets, y, y_offsets):
    torch._check(x.dim() == 2 and y.dim() == 2, lambda: "`x` and `y` must be (N, 3)")
    return (x.new_empty((x.shape[0],)), x.new_empty((x.shape[0],), dtype=torch.int64),
            y.new_empty((y.shape[0],)), y.new_empty((y.shape[0],), dtype=torch.int64))


@torch.library.register_fake("pointmae::chamfer_distance_backward")
def _chamfer_distance_backward_fake(grad_dist_x, grad_dist_y, x, y, idx_x, idx_y):
    return torch.empty_like(x), torch.empty_like(y)


def _chamfer_setup_context(ctx, inputs, output):
    x, _, y, _ = inputs
    _, idx_x, _, idx_y = output
    ctx.save_for_backward(x, y, idx_x, idx_y)


def _chamfer_backward(ctx, grad_dist_x, _grad_idx_x, grad_dist_y, _grad_idx_y):
    x, y, idx_x, idx_y = ctx.saved_tensors
    if grad_dist_x is None:
        grad_dist_x = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    if grad_dist_y is None:
        grad_dist_y = torch.zeros(y.shape[0], dtype=y.dtype, device=y.device)
    grad_x, grad_y = _ops.chamfer_distance_backward(grad_dist_x.contiguous(), grad_dist_y.contiguous(), x, y,
                                                    idx_x, idx_y)
    return grad_x, None, grad_y, None


torch.library.register_autograd("pointmae::chamfer_distance", _chamfer_backward,
                                setup_context=_chamfer_setup_context)
