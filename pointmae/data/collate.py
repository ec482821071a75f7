"""Batching frames in the project's one LiDAR batch layout (DESIGN.md): packed points (N_total, C)
plus int64 offsets of length B + 1 (offsets[b]:offsets[b+1] are frame b's points)."""
from __future__ import annotations

import numpy as np
import torch


def collate_frames(frames) -> dict:
    """{"points": (N_total, C) float32 tensor, "offsets": (B+1,) int64, "poses": (B, 4, 4) float64,
    "boxes": list of (M_b, 7|9) tensors, "names": list of arrays, "frame_ids": list}.
    Every frame must have the same channels."""
    if not frames:
        raise ValueError("collate_frames needs at least one frame")
    channels = frames[0].channels
    for f in frames[1:]:
        if f.channels != channels:
            raise ValueError(f"frames with different channels in one batch: {channels} vs {f.channels} "
                             f"(frame {f.frame_id})")
    points = [torch.as_tensor(np.asarray(f.to_numpy().points)) for f in frames]
    sizes = torch.tensor([0] + [len(p) for p in points], dtype=torch.int64)
    return {"points": torch.cat(points, dim=0), "offsets": torch.cumsum(sizes, 0), "channels": channels,
            "poses": torch.as_tensor(np.stack([f.pose for f in frames])),
            "boxes": [torch.as_tensor(f.boxes) for f in frames], "names": [f.names for f in frames],
            "frame_ids": [f.frame_id for f in frames]}
