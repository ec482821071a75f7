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
