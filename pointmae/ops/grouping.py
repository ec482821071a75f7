"""Grouping: gather point features by neighbour index, with a deterministic backward.

`gather_points(features, idx)` is the gather that turns the index lists of kNN / ball query into
patches: `out[q, j] = features[idx[q, j]]`, with -1 (padding) reading as a zero row. Its backward
is a scatter-add, which on a GPU is usually done with floating-point atomics whose order (and thus
result) varies from run to run. Here it is computed per point from an inverse index of `idx` (a
stable counting sort / stable sort), each point summing its entries in increasing order: the same
bits on every run, on CPU and CUDA.

`group_points(points, centers, idx)` gives Point-MAE's patch normalisation (Pang et al., "Masked
Autoencoders for Point Cloud Self-supervised Learning", ECCV 2022): each neighbour relative to its
patch centre.
"""
import torch

import pointmae  # noqa: F401  (loads the extension: torch.ops.pointmae.*)

_ops = torch.ops.pointmae


def _check_padded_index(name: str, features: torch.Tensor, idx: torch.Tensor) -> None:
    if idx.dim() != 3 or idx.shape[0] != features.shape[0]:
        raise ValueError(f"`{name}`: padded features (B, N, C) = {tuple(features.shape)} take idx (B, Q, k) with the "
                         f"same B, got idx of shape {tuple(idx.shape)}")


def gather_points(features: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Gathers rows of `features` by index: ``out[..., q, j, :] = features[..., idx[q, j], :]``.

    Args:
        features: (N, C) float32 / float64 / float16 (packed points of a whole batch), or padded
            (B, N, C).
        idx: int64 indices into the rows of `features`; -1 marks padding and gives a zero row.
            Packed: (Q, k), values in [-1, N) (packed indices, as returned by knn / ball_query).
            Padded: (B, Q, k), values local to each cloud in [-1, N).

    Returns:
        (Q, k, C), or (B, Q, k, C) for padded input, in the dtype of `features`.

    Differentiable w.r.t. `features`; the backward is deterministic (see the module docstring).
    Out-of-range indices raise ValueError.
    """
    if features.dim() == 3:
        _check_padded_index("idx", features, idx)
        b, n, c = features.shape
        shift = (torch.arange(b, device=idx.device, dtype=idx.dtype) * n).view(b, 1, 1)
        packed_idx = torch.where(idx < 0, idx, idx + shift)
        out = _ops.gather_points(features.reshape(b * n, c), packed_idx.reshape(-1, idx.shape[-1]))
        return out.view(b, idx.shape[1], idx.shape[2], c)
    return _ops.gather_points(features, idx)


def group_points(points: torch.Tensor, centers: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Neighbourhoods relative to their centres: ``points[idx[q, j]] - centers[q]`` (Point-MAE).

    Args:
        points: (N, D) float (usually D = 3), or padded (B, N, D).
        centers: (Q, D) patch centres (e.g. FPS samples), or padded (B, Q, D); same dtype as points.
        idx: (Q, k) int64 packed indices into points, or padded (B, Q, k) local ones; -1 = padding.

    Returns:
        (Q, k, D), or (B, Q, k, D). Padding entries are zero (not ``-center``), so they carry no
        position and no gradient. Differentiable w.r.t. points and centers.
    """
    if centers.dim() != points.dim() or centers.shape[-1] != points.shape[-1]:
        raise ValueError(f"`centers` must be {'(B, Q, D)' if points.dim() == 3 else '(Q, D)'} with D = "
                         f"{points.shape[-1]} like `points` {tuple(points.shape)}, got {tuple(centers.shape)}")
    if centers.shape[:-1] != idx.shape[:-1]:
        raise ValueError(f"`idx` must have one row per centre: centers {tuple(centers.shape)} vs idx {tuple(idx.shape)}")
    neighbours = gather_points(points, idx)
    relative = neighbours - centers.unsqueeze(-2)
    return torch.where((idx >= 0).unsqueeze(-1), relative, torch.zeros((), dtype=relative.dtype,
                                                                        device=relative.device))


# ------------------------------------------------------------------ torch.library registrations

@torch.library.register_fake("pointmae::gather_points")
def _gather_points_fake(features, idx):
    torch._check(features.dim() == 2, lambda: f"`features` must be (N, C), got {tuple(features.shape)}")
    torch._check(idx.dim() == 2, lambda: f"`idx` must be (Q, k), got {tuple(idx.shape)}")
    return features.new_empty((idx.shape[0], idx.shape[1], features.shape[1]))


@torch.library.register_fake("pointmae::gather_points_backward")
def _gather_points_backward_fake(grad_out, idx, num_points):
    torch._check(grad_out.dim() == 3, lambda: f"`grad_out` must be (Q, k, C), got {tuple(grad_out.shape)}")
    return grad_out.new_empty((num_points, grad_out.shape[2]))


def _gather_setup_context(ctx, inputs, output):
    features, idx = inputs
    ctx.save_for_backward(idx)
    ctx.num_points = features.shape[0]


def _gather_backward(ctx, grad_out):
    (idx,) = ctx.saved_tensors
    return _ops.gather_points_backward(grad_out.contiguous(), idx, ctx.num_points), None


torch.library.register_autograd("pointmae::gather_points", _gather_backward, setup_context=_gather_setup_context)


def _gather_backward_setup_context(ctx, inputs, output):
    _, idx, _ = inputs
    ctx.save_for_backward(idx)


def _gather_backward_backward(ctx, grad_grad_features):
    # The backward is linear in grad_out, and its adjoint is the gather itself (double backward).
    (idx,) = ctx.saved_tensors
    return _ops.gather_points(grad_grad_features.contiguous(), idx), None, None


torch.library.register_autograd("pointmae::gather_points_backward", _gather_backward_backward,
                                setup_context=_gather_backward_setup_context)
