"""Pairs of sweeps for temporal models (T-MAE): a current sweep and an earlier sweep of the same sequence,
the earlier one moved into the current sweep's sensor frame (ego-motion aligned).

    p_current = inv(pose_current) @ pose_previous @ p_previous        (poses are sensor -> world)

Batches follow the LiDAR contract: collate_frames' layout for the current sweeps plus "prev_points" /
"prev_offsets" for the aligned previous sweeps. `align_to_current` is the one place that does the
alignment, for any pair source (the LiDAR pre-training data config can reuse it).

T-MAE (Wei et al., ECCV 2024) samples the previous frame some frames back ("distant historical frames"
in its arXiv v1 abstract): `frame_gap` is that temporal gap in frames.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from pointmae.data.boxes import invert_pose, transform_points
from pointmae.data.collate import collate_frames
from pointmae.data.frame import Frame

__all__ = ["align_to_current", "TemporalPairs", "collate_temporal_pairs"]


def align_to_current(previous_points: np.ndarray, previous_pose: np.ndarray, current_pose: np.ndarray) -> np.ndarray:
    """previous_points (N, C) in the previous sensor frame -> (N, C) in the current sensor frame;
    poses (4, 4) sensor -> world. Channels after x, y, z are kept."""
    for name, pose in (("previous_pose", previous_pose), ("current_pose", current_pose)):
        if np.shape(pose) != (4, 4):
            raise ValueError(f"{name} must be a 4x4 sensor -> world transform, got shape {np.shape(pose)}")
    return transform_points(previous_points, invert_pose(current_pose) @ np.asarray(previous_pose, np.float64))


class TemporalPairs(torch.utils.data.Dataset):
    """(current, previous) frame pairs, ``frame_gap`` frames apart, over a frame reader.

    reader: SyntheticFrames (sequences of ``frames_per_sequence`` consecutive indices) or a reader
    with a ``files`` list whose parent folder is the sequence (WaymoConvertedDataset, Av2SensorLog). Item i is a
    dict {"current": Frame, "previous": Frame in the current sensor frame}; only current frames with
    a frame ``frame_gap`` back in the same sequence are used.
    """

    def __init__(self, reader, frame_gap: int = 1):
        if isinstance(frame_gap, bool) or not isinstance(frame_gap, int) or frame_gap < 1:
            raise ValueError(f"frame_gap must be an int >= 1, got {frame_gap!r}")
        self.reader, self.frame_gap = reader, frame_gap
        n = len(reader)
        if hasattr(reader, "frames_per_sequence"):
            fps = reader.frames_per_sequence
            self.currents = [i for i in range(n) if i % fps >= frame_gap]
        elif hasattr(reader, "files"):
            files = reader.files
            self.currents = [i for i in range(frame_gap, n) if files[i].parent == files[i - frame_gap].parent]
        else:
            raise TypeError(f"TemporalPairs needs a reader with `frames_per_sequence` (SyntheticFrames) or "
                            f"`files` (WaymoConvertedDataset, Av2SensorLog), got {type(reader).__name__}")
        if not self.currents:
            raise ValueError(f"no frame of the {n} frames has a frame {frame_gap} back in its sequence")

    def __len__(self) -> int:
        return len(self.currents)

    def __getitem__(self, index: int) -> dict:
        i = self.currents[index]
        current, previous = self.reader[i], self.reader[i - self.frame_gap]
        if previous.sequence_id and current.sequence_id and previous.sequence_id != current.sequence_id:
            raise ValueError(f"frames {i - self.frame_gap} and {i} belong to different sequences "
                             f"({previous.sequence_id!r} vs {current.sequence_id!r})")
        aligned = align_to_current(previous.to_numpy().points, previous.pose, current.pose)
        return {"current": current, "previous": Frame(aligned, previous.channels, pose=current.pose,
                                                      timestamp=previous.timestamp, frame_id=previous.frame_id,
                                                      sequence_id=previous.sequence_id)}

    @staticmethod
    def collate_fn(pairs) -> dict:
        return collate_temporal_pairs(pairs)


def collate_temporal_pairs(pairs, previous_key: str = "previous") -> dict:
    """collate_frames of the current frames plus "prev_points" (N', C) float32 and "prev_offsets" (B+1,)
    int64 of the aligned previous frames."""
    batch = collate_frames([p["current"] for p in pairs])
    previous = [torch.as_tensor(np.asarray(p[previous_key].to_numpy().points, dtype=np.float32)) for p in pairs]
    sizes = torch.tensor([0] + [len(p) for p in previous], dtype=torch.int64)
    batch["prev_points"] = torch.cat(previous, 0)
    batch["prev_offsets"] = torch.cumsum(sizes, 0)
    origins = [p["current"].meta.get("sensor_origin") for p in pairs]
    if all(o is not None for o in origins):  # the sensor is not at the frame's origin (e.g. AV2's ego frame)
        batch["origins"] = torch.as_tensor(np.stack(origins), dtype=torch.float32)
    return batch


def build_temporal_pairs(source: str, frame_gap: int = 1, root: Optional[str] = None, **synthetic) -> TemporalPairs:
    """TemporalPairs over "synthetic" (keyword arguments of SyntheticFrames), "waymo" (converted folder at
    root) or "av2" (an Argoverse 2 log folder at root)."""
    if source == "synthetic":
        from pointmae.data.lidar_datasets import SyntheticFrames
        return TemporalPairs(SyntheticFrames(**synthetic), frame_gap)
    if source == "waymo":
        from pointmae.data.waymo import WaymoConvertedDataset
        return TemporalPairs(WaymoConvertedDataset(root), frame_gap)
    if source == "av2":
        from pointmae.data.av2 import Av2SensorLog
        return TemporalPairs(Av2SensorLog(root), frame_gap)
    raise ValueError(f"temporal pairs source must be 'synthetic', 'waymo' or 'av2', got {source!r}")
