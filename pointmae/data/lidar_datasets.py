"""One entry point for LiDAR frame sources, for tools (pre-training needs no labels):

    dataset = build_lidar_dataset("sweeps", source="my_drive/", bin_layout="x,y,z,intensity")
    loader = torch.utils.data.DataLoader(FrameDataset(dataset), batch_size=4, collate_fn=collate_frames)

A plain dict of factories (no registry side effects). Every factory returns an object with __len__
and __getitem__ -> Frame; `FrameDataset` makes it a torch Dataset and applies an optional transform.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from pointmae.data.frame import Frame
from pointmae.data.kitti import KittiObjectDataset
from pointmae.data.nuscenes import NuScenesInfoDataset, NuScenesTables
from pointmae.data.sweeps import accumulate_frames
from pointmae.data.synthetic.sensor import SpinningLidar, sensor_preset
from pointmae.data.synthetic.world import SyntheticWorld
from pointmae.data.user_sweeps import SweepFolderDataset
from pointmae.data.waymo import WaymoConvertedDataset


@dataclass
class SyntheticFrames:
    """The synthetic world generated on the fly, no files: frame i is frame (i % F) of sequence
    (i // F). Deterministic per index, so workers and epochs see the same data. The embedded default
    when no dataset is on disk."""
    num_frames: int = 1000
    seed: int = 0
    sensor: SpinningLidar = field(default_factory=lambda: sensor_preset("hdl64"))
    frames_per_sequence: int = 20
    num_sweeps: int = 0          # previous frames of the sequence to accumulate (time_lag channel)
    motion_distortion: bool = False

    def __post_init__(self):
        if isinstance(self.sensor, str):
            self.sensor = sensor_preset(self.sensor)
        self.world = SyntheticWorld(seed=self.seed, sensor=self.sensor, frames_per_sequence=self.frames_per_sequence,
                                    motion_distortion=self.motion_distortion)

    def __len__(self):
        return self.num_frames

    def __getitem__(self, index: int) -> Frame:
        if not 0 <= index < self.num_frames:
            raise IndexError(index)
        sequence, i = divmod(index, self.frames_per_sequence)
        frame = self.world.frame(sequence, i)
        if self.num_sweeps > 0:
            # Like nuScenes' multi-sweep input: the previous frames (fewer at a sequence start; the
            # number used is in meta["sweeps_used"]) in this frame's sensor frame, with time lags.
            previous = [self.world.frame(sequence, j) for j in range(i - 1, max(i - 1 - self.num_sweeps, -1), -1)]
            frame = accumulate_frames(frame, previous)
            frame.meta["sweeps_used"] = len(previous)
        return frame

    def has_previous(self, index: int, gap: int = 1) -> bool:
        return index % self.frames_per_sequence >= gap

    def previous(self, index: int, gap: int = 1) -> Frame | None:
        """The frame `gap` frames earlier in the same sequence (for temporal models), or None."""
        return self[index - gap] if self.has_previous(index, gap) else None


LIDAR_DATASETS = {
    "synthetic": SyntheticFrames,
    "kitti": KittiObjectDataset,
    "nuscenes_info": NuScenesInfoDataset,
    "nuscenes_tables": NuScenesTables,
    "waymo": WaymoConvertedDataset,
    "sweeps": SweepFolderDataset,
}


def build_lidar_dataset(name: str, **kwargs):
    try:
        factory = LIDAR_DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown LiDAR dataset {name!r}; choose from {sorted(LIDAR_DATASETS)}") from None
    return factory(**kwargs)


class FrameDataset(torch.utils.data.Dataset):
    """A torch Dataset of Frames over any reader above; `transform(frame) -> frame` is applied."""

    def __init__(self, reader, transform=None, without_labels: bool = False):
        self.reader, self.transform, self.without_labels = reader, transform, without_labels

    def __len__(self):
        return len(self.reader)

    def __getitem__(self, index: int) -> Frame:
        frame = self.reader[index]
        if self.without_labels:      # pre-training: labels are never looked at
            frame = frame.select_boxes([False] * len(frame.boxes))
        return self.transform(frame) if self.transform is not None else frame
