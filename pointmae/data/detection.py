"""Labelled LiDAR frames for training and evaluating detectors.

`DetectionDataset` wraps any frame reader of pointmae.data.lidar_datasets: frame -> augmentation
(ground-truth sampling, flips, global rotation and scaling; see `detection_augmentation`) -> crop ->
keep the boxes of `class_names` only, with their class index in box_meta["label"]. Batches come from
`collate_detection`: the LiDAR batch of collate_frames plus "labels" (list of (M_b,) int64 tensors).

Randomness: sample i draws from np.random.default_rng([seed, i, t]) with t one number from torch's
global generator, which the training engine seeds (and restores on resume, and seeds per data-loader
worker): every epoch gets new augmentations, and the same seed gives the same run.

`label_subset(n, fraction, seed)` is the seeded subset of labelled frames of label-efficiency studies.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from pointmae.data.boxes import count_points_in_boxes
from pointmae.data.collate import collate_frames
from pointmae.data.frame import Frame
from pointmae.data.gt_sampling import GTDatabase, GTSampler
from pointmae.data.transforms import Compose, CropRange, RandomFlipX, RandomFlipY, RandomRotateZ, RandomScale


def label_subset(num_frames: int, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of round(fraction * num_frames) frames (at least 1), drawn without replacement
    by np.random.default_rng(seed): the same (num_frames, fraction, seed) always gives the same frames,
    and a smaller fraction with the same seed gives a subset of a larger one (one permutation, its
    first k entries)."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"label_fraction must be in (0, 1], got {fraction}")
    if num_frames < 1:
        raise ValueError(f"label_subset needs at least one frame, got {num_frames}")
    k = max(1, int(round(fraction * num_frames)))
    order = np.random.default_rng(seed).permutation(num_frames)
    return np.sort(order[:k])


def box_names_of(reader, index: int) -> np.ndarray:
    """The class names of frame `index`'s boxes: reader.box_names(index) where the reader has it
    (without reading points, e.g. the nuScenes info reader), else from the whole frame."""
    if hasattr(reader, "box_names"):
        return np.asarray(reader.box_names(index), dtype=str)
    return np.asarray(reader[index].names, dtype=str)


def class_balanced_indices(frame_names: Sequence[Sequence[str]], class_names: Sequence[str], seed: int) -> np.ndarray:
    """CBGS's class-balanced resampling of training frames (Zhu et al., "Class-balanced Grouping and
    Sampling for Point Cloud 3D Object Detection", 2019, as OpenPCDet's nuScenes BALANCED_RESAMPLING):
    S_c = the frames with a box of class c; p_c = |S_c| / sum_c' |S_c'|; class c draws
    |S_c| * (1 / C) / p_c frames from S_c with replacement, so every class ends up in about the same
    number of training frames (rare classes' frames repeat). Classes in no frame are left out (C counts
    the others; OpenPCDet would divide by zero), and a class in some frame draws at least one (OpenPCDet
    truncates, which empties tiny sets).

    frame_names: per frame, its boxes' class names. Returns positions into frame_names, class by class
    (the loader shuffles), seeded by `seed`."""
    rng = np.random.default_rng(seed)
    name_sets = [set(np.asarray(names, dtype=str).tolist()) for names in frame_names]
    frames_of = {c: [i for i, names in enumerate(name_sets) if c in names] for c in class_names}
    present = {c: f for c, f in frames_of.items() if f}
    total = sum(len(f) for f in present.values())
    out = []
    for c, frames in present.items():
        ratio = (1.0 / len(present)) / (len(frames) / total)
        out.append(rng.choice(np.asarray(frames, dtype=np.int64), max(1, int(len(frames) * ratio))))
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def detection_augmentation(database: Optional[GTDatabase], sample_counts: dict, flip_x: float, flip_y: float,
                           rotation: float, scale: Sequence[float]) -> Compose:
    """GT sampling (when a database is given) first, at the objects' original places, then the global
    transforms of pointmae.data.transforms, which move points and boxes (and velocities) together."""
    steps: list = []
    if database is not None and sample_counts:
        steps.append(GTSampler(database, dict(sample_counts)))
    if flip_x > 0:
        steps.append(RandomFlipX(flip_x))
    if flip_y > 0:
        steps.append(RandomFlipY(flip_y))
    if rotation > 0:
        steps.append(RandomRotateZ(rotation))
    if tuple(scale) != (1.0, 1.0):
        steps.append(RandomScale(float(scale[0]), float(scale[1])))
    return Compose(steps)


class DetectionDataset(torch.utils.data.Dataset):
    """reader: object with __len__ / __getitem__ -> Frame; class_names: the detector's classes (boxes of
    other classes are dropped after augmentation, so they still block GT-sampling collisions);
    indices: the reader's frames to use (default all); transform: `t(frame, rng) -> frame` or None;
    min_points_in_box: drop boxes with fewer points (box_meta["num_points"], else counted);
    channel_scales: {channel: factor} applied to every point after augmentation (so GT-sampled points
    too), e.g. {"intensity": 1 / 255} for nuScenes: the pre-training configs' data.channel_scales, so a
    pre-trained encoder sees the units it was trained on; channel_tanh: channels then squashed by tanh
    (["intensity"] on Waymo, as OpenPCDet), likewise matching the pre-training configs."""

    def __init__(self, reader, class_names: Sequence[str], indices: Optional[Sequence[int]] = None,
                 transform: Optional[Callable] = None, crop_range: Optional[Sequence[float]] = None, seed: int = 0,
                 min_points_in_box: int = 0, channel_scales: Optional[dict] = None,
                 channel_tanh: Sequence[str] = ()):
        self.reader = reader
        self.class_names = list(class_names)
        self.indices = np.arange(len(reader)) if indices is None else np.asarray(indices, dtype=np.int64)
        self.transform = transform
        self.crop = CropRange(tuple(crop_range)) if crop_range is not None else None
        self.seed = seed
        self.min_points_in_box = int(min_points_in_box)
        self.channel_scales = dict(channel_scales or {})
        self.channel_tanh = tuple(channel_tanh)

    def __len__(self):
        return len(self.indices)

    def frame(self, i: int) -> Frame:
        """The raw frame of sample i (no augmentation, all boxes)."""
        return self.reader[int(self.indices[i])]

    def __getitem__(self, i: int) -> Frame:
        frame = self.frame(i).to_numpy()
        if self.transform is not None:
            draw = int(torch.randint(0, 2**31 - 1, (1,)).item())
            frame = self.transform(frame, np.random.default_rng([self.seed, int(i), draw]))
        if self.crop is not None:
            frame = self.crop(frame)
        frame = frame.scale_channels(self.channel_scales).tanh_channels(self.channel_tanh)
        if self.min_points_in_box > 0 and len(frame.boxes):
            # Boxes the sensor did not see (fully occluded) teach the detector to guess; drop them as
            # OpenPCDet does for nuScenes / Waymo. Counts from the reader when it has them.
            counts = frame.box_meta.get("num_points")
            if counts is None:
                counts = count_points_in_boxes(frame.points[:, :3], frame.boxes)
            frame = frame.select_boxes(np.asarray(counts) >= self.min_points_in_box)
        return select_classes(frame, self.class_names)


def select_classes(frame: Frame, class_names: Sequence[str]) -> Frame:
    """Only the boxes of `class_names`, each with box_meta["label"] = its index in class_names."""
    lookup = {name: k for k, name in enumerate(class_names)}
    keep = np.array([n in lookup for n in frame.names], dtype=bool)
    out = frame.select_boxes(keep)
    labels = np.array([lookup[n] for n in out.names], dtype=np.int64)
    return replace(out, box_meta=dict(out.box_meta, label=labels))


def collate_detection(frames: Sequence[Frame]) -> dict:
    """collate_frames + "labels": list of (M_b,) int64 class indices (frames from DetectionDataset)."""
    batch = collate_frames(frames)
    batch["labels"] = [torch.as_tensor(f.box_meta["label"], dtype=torch.int64) for f in frames]
    batch["boxes"] = [b.to(torch.float64).reshape(-1, b.shape[-1] if b.dim() == 2 else 7) for b in batch["boxes"]]
    return batch


# The engine hands a dataset's `collate_fn` to its DataLoader.
DetectionDataset.collate_fn = staticmethod(collate_detection)
