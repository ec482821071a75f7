"""The one place where batch layouts are converted.

The ops work on packed batches: points (N, C) and `offsets`, an int64 tensor (B+1,) of cumulative
cloud sizes (offsets[0] = 0, offsets[B] = N). Object clouds often come padded as (B, N, C) with the
same N for every cloud; `to_packed` turns them into the packed layout and back.
"""
from typing import Optional, Tuple

import torch


def offsets_from_sizes(sizes, device=None) -> torch.Tensor:
    """(B,) cloud sizes -> (B+1,) int64 cumulative offsets."""
    sizes = torch.as_tensor(sizes, dtype=torch.int64, device=device)
    return torch.cat([sizes.new_zeros(1), torch.cumsum(sizes, 0)])


def to_packed(points: torch.Tensor, offsets: Optional[torch.Tensor], name: str = "points"
              ) -> Tuple[torch.Tensor, torch.Tensor, Optional[Tuple[int, int]]]:
    """Returns (packed (N, C), offsets (B+1,), padded_shape or None).

    - points (N, C) with offsets: returned as is.
    - points (N, C) without offsets: one cloud.
    - points (B, N, C) without offsets: B clouds of N points; padded_shape = (B, N).
    """
    if points.dim() == 3:
        if offsets is not None:
            raise ValueError(f"`{name}` is padded (B, N, C) = {tuple(points.shape)}; padded input takes no "
                             f"offsets, got offsets of shape {tuple(offsets.shape)}")
        b, n, c = points.shape
        offsets = torch.arange(b + 1, dtype=torch.int64, device=points.device) * n
        return points.reshape(b * n, c), offsets, (b, n)
    if points.dim() != 2:
        raise ValueError(f"`{name}` must be packed (N, C) or padded (B, N, C), got shape {tuple(points.shape)}")
    if offsets is None:
        offsets = torch.tensor([0, points.shape[0]], dtype=torch.int64, device=points.device)
    return points, offsets, None


def packed_index_to_local(idx: torch.Tensor, offsets: torch.Tensor, batch_of_row: torch.Tensor) -> torch.Tensor:
    """Packed indices -> indices local to their cloud, keeping -1 padding as -1."""
    local = idx - offsets[batch_of_row].view(-1, *([1] * (idx.dim() - 1)))
    return torch.where(idx < 0, idx, local)
