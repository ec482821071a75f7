"""Farthest point sampling (FPS): the sampling op of Point-MAE style tokenizers.

Kernels: csrc/fps (CPU: exact FPS with QuickFPS-style KD-tree bucket pruning, parallel over clouds or
within one large cloud; CUDA: a multi-block argmax reduction per sample for large clouds, one block
per cloud for many small ones). Both give exactly the indices of the naive O(N * M) algorithm
(`pointmae.ops.reference.fps`): the squared distance is defined once, `(dx*dx + dy*dy) + dz*dz` in the
input dtype (float32 for float16 input), each operation rounded on its own.
"""
from typing import Optional

import torch

from pointmae.ops._batch import to_packed

__all__ = ["fps"]


def _start_indices(offsets: torch.Tensor, start: str, generator: Optional[torch.Generator]) -> torch.Tensor:
    """(B,) int64 local start index per cloud, on the device of `offsets`."""
    batch = offsets.shape[0] - 1
    if start == "first":
        return torch.zeros(batch, dtype=torch.int64, device=offsets.device)
    if start == "random":
        gen_device = generator.device if generator is not None else torch.device("cpu")
        sizes = (offsets[1:] - offsets[:-1]).to(gen_device)
        # One uniform draw per cloud, scaled to its size: reproducible for a seeded generator and
        # independent of the sampling device. Empty clouds get 0 (they are never sampled from).
        u = torch.rand(batch, dtype=torch.float64, generator=generator, device=gen_device)
        idx = torch.minimum((u * sizes.to(torch.float64)).to(torch.int64), (sizes - 1).clamp_min(0))
        return idx.to(offsets.device)
    raise ValueError(f"pointmae.fps: `start` must be 'first' or 'random', got {start!r}")


def fps(points: torch.Tensor, offsets: Optional[torch.Tensor] = None, num_samples: int = None, *,
        start: str = "first", generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Farthest point sampling, exact.

    Starting from one point per cloud, repeatedly picks the point whose squared distance to its
    nearest already-picked point is the largest. Ties go to the lowest index, and picked points are
    never picked again: duplicate points give distinct indices while unpicked points remain (a cloud
    of identical points gives its indices in increasing order after the start).

    Args:
        points: packed ``(N, 3)`` with ``offsets``, or padded ``(B, N, 3)`` without; float32, float64
            or float16 (float16 distances are computed in float32). Must be finite.
        offsets: ``(B+1,)`` int64 cumulative cloud sizes of packed ``points`` (``offsets[0] = 0``,
            ``offsets[B] = N``); None with ``(N, 3)`` points means one cloud.
        num_samples: ``M``, the number of samples per cloud; every cloud needs at least ``M`` points.
        start: ``"first"`` starts every cloud at its first point; ``"random"`` draws a start per cloud
            from ``generator`` (a seeded ``torch.Generator`` makes it reproducible).
        generator: the random source of ``start="random"`` (default: torch's global generator).

    Returns:
        ``(B, M)`` int64: for packed input, indices into the packed ``points``; for padded input,
        indices local to each cloud (into ``points[b]``).
    """
    if num_samples is None:
        raise TypeError("pointmae.fps: `num_samples` is required")
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, torch.SymInt)):
        raise ValueError(f"pointmae.fps: `num_samples` must be an int, got {type(num_samples).__name__}")
    packed, offsets, padded_shape = to_packed(points, offsets, "points")
    start_idx = _start_indices(offsets, start, generator)
    idx = torch.ops.pointmae.fps(packed, offsets, num_samples, start_idx)
    if padded_shape is not None:
        b, n = padded_shape
        idx = idx - (torch.arange(b, device=idx.device, dtype=torch.int64) * n).unsqueeze(1)
    return idx


@torch.library.register_fake("pointmae::fps")
def _fps_fake(points, offsets, num_samples, start_idx):
    torch._check(num_samples >= 0, lambda: f"pointmae.fps: `num_samples` must be >= 0, got {num_samples}")
    return points.new_empty((offsets.shape[0] - 1, num_samples), dtype=torch.int64)
