"""LiDAR pre-training data: any frame source -> augmented, cropped frames -> the LiDAR batch.

One torch Dataset (`LidarPretrainDataset`) over any reader of `pointmae.data.lidar_datasets`
(synthetic world, KITTI, nuScenes info, converted Waymo, a folder of sweeps, an Argoverse 2 log), and
its `collate_fn`: the one data path of every LiDAR masked autoencoder (Voxel-MAE, R-MAE, T-MAE).
The batch is `collate_frames`' layout plus what masked autoencoders on sweeps need:

    points  (N_total, C) float32, sensor frame, x y z first, channels = `channels`
    offsets (B+1,) int64; channels; poses (B, 4, 4) float64; boxes list of (M_b, 7|9) float64;
    names; frame_ids
    origins (B, 3) float32: the sensor position in each sample's (augmented) frame: `sensor_origin`
            ((0, 0, 0) for sensor-frame data) before augmentation; a random translation moves it,
            and radial masking must measure angles around it, not around the frame's origin.
  with num_previous = 1 (temporal models, e.g. T-MAE):
    prev_points  (N_prev_total, C) float32: the sweep `frame_gap` sweeps earlier in the same sequence
                 (T-MAE, Wei et al., ECCV 2024, samples "distant historical frames"), transformed into
                 the CURRENT sweep's sensor frame with the two poses (ego-motion aligned:
                 p_cur = pose_cur^-1 @ pose_prev @ p_prev), then augmented with exactly the same
                 random flip / rotation / scale / translation as the current sweep and cropped to the
                 same range.
    prev_offsets (B+1,) int64; prev_origins (B, 3): the previous sensor position in that frame;
    has_prev     (B,) bool: False where the source had no previous sweep (a sequence's first frame,
                 real KITTI object frames). Then `missing_previous` decides what stands in:
                 "current" (a copy of the current sweep, so cross-attention always has keys) or
                 "empty" (no points); or "skip": such frames are left out of the dataset.

A reader gives previous sweeps through `previous(index, gap) -> Frame | None` (in the previous sweep's
own sensor frame, with its pose) and, optionally, a cheap `has_previous(index, gap) -> bool` that
"skip" uses to list the frames without reading them.

Randomness: each sample draws one seed from torch's global RNG (which the engine seeds per rank,
per epoch in workers, and restores on resume) and builds a numpy Generator from it; the current and
previous sweeps and the sensor origin are augmented with three Generators of that same seed, so
they undergo the identical transform (each transform draws the same numbers in the same order
whatever the frame's content).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Optional, Sequence

import numpy as np
import torch

from pointmae.data.boxes import invert_pose, transform_boxes, transform_points
from pointmae.data.collate import collate_frames
from pointmae.data.frame import Frame
from pointmae.data.transforms import Compose, CropRange, RandomFlipY, RandomRotateZ, RandomScale, RandomTranslate

__all__ = ["LidarPretrainDataset", "SequentialPrevious", "align_to_frame", "select_channels", "collate_lidar_pretrain",
           "pretrain_augmentation"]


def select_channels(frame: Frame, channels: Sequence[str], scales: Optional[dict] = None,
                    tanh: Sequence[str] = ()) -> Frame:
    """The frame with exactly `channels` (by name, in that order), each multiplied by scales[name],
    then those named in `tanh` squashed by tanh."""
    channels = tuple(channels)
    if channels[:3] != ("x", "y", "z"):
        raise ValueError(f"data.channels must start with x, y, z; got {channels}")
    missing = [c for c in channels if c not in frame.channels]
    if missing:
        raise ValueError(f"data.channels asks for {missing} but frame {frame.frame_id!r} has channels "
                         f"{frame.channels}")
    points = frame.to_numpy().points
    columns = np.stack([points[:, frame.channels.index(c)] for c in channels], axis=1).astype(np.float32)
    selected = replace(frame, points=columns, channels=channels)
    selected = selected.scale_channels({name: f for name, f in (scales or {}).items() if name in channels})
    return selected.tanh_channels([name for name in tanh if name in channels])


def align_to_frame(previous: Frame, current: Frame, sensor_origin=(0.0, 0.0, 0.0)) -> Frame:
    """`previous` expressed in `current`'s sensor frame: p_cur = pose_cur^-1 @ pose_prev @ p_prev.
    Only x, y, z change; boxes are moved too (pointmae.data.boxes.transform_boxes: any rigid pose).
    The returned frame's pose is the current one; meta["origin_in_current"] (3,) is where the previous
    sweep's sensor (at `sensor_origin` in its own frame) lies in the current frame."""
    relative = invert_pose(current.pose) @ previous.pose               # prev sensor -> current sensor
    points = transform_points(previous.to_numpy().points, relative)
    boxes = transform_boxes(previous.boxes, relative) if len(previous.boxes) else previous.boxes.copy()
    origin = relative[:3, :3] @ np.asarray(sensor_origin, np.float64) + relative[:3, 3]
    meta = dict(previous.meta, origin_in_current=origin)
    return replace(previous, points=points, boxes=boxes, pose=current.pose.copy(), meta=meta)


def pretrain_augmentation(flip_p: float, rotate_deg: float, scale: tuple[float, float],
                          translate_std: tuple[float, float, float]) -> Compose:
    """The global augmentations (SECOND's recipe) with the given strengths; 0 / (1, 1) switch one off."""
    return Compose([RandomFlipY(flip_p), RandomRotateZ(np.deg2rad(rotate_deg)), RandomScale(*scale),
                    RandomTranslate(tuple(translate_std))])


class SequentialPrevious:
    """A reader whose frames are one ordered drive (a folder of sweeps with poses), given the
    `previous(i, gap)` temporal models need: frame i - gap when its timestamp is earlier, else None."""

    def __init__(self, reader):
        self.reader = reader

    def __len__(self):
        return len(self.reader)

    def __getitem__(self, index: int) -> Frame:
        return self.reader[index]

    def has_previous(self, index: int, gap: int = 1) -> bool:
        if index < gap:
            return False
        # Readers that know a frame's time without reading it (SweepFolderDataset.timestamp) spare
        # two point-cloud reads per call.
        timestamp = getattr(self.reader, "timestamp", None) or (lambda i: self.reader[i].timestamp)
        return timestamp(index - gap) < timestamp(index)

    def previous(self, index: int, gap: int = 1) -> Frame | None:
        return self.reader[index - gap] if self.has_previous(index, gap) else None


class LidarPretrainDataset(torch.utils.data.Dataset):
    """Frames of `reader` (len + getitem -> Frame, optionally `previous(i) -> Frame | None`) for
    pre-training: channels selected, augmented, cropped to `point_range`.

    reader: any `pointmae.data.lidar_datasets` reader; channels: names of the C point columns
    (x, y, z first); point_range: [x0, y0, z0, x1, y1, z1] metres (the voxel grid's range);
    num_previous: 0 or 1 (previous sweep, ego-motion aligned, see the module docstring); frame_gap: how
    many sweeps back that previous sweep is; missing_previous: "current" | "empty" | "skip";
    augment: None for no augmentation, else a `Compose` of frame transforms; repeat: the dataset is
    the reader repeated this many times (tiny real samples still give full batches);
    channel_scales: {channel: factor}, e.g. {"intensity": 1 / 255} for nuScenes;
    channel_tanh: channels squashed by tanh after scaling, e.g. ["intensity"] for Waymo (as OpenPCDet);
    sensor_origin: where the LiDAR is in a frame's coordinates before augmentation ((0, 0, 0) for
    sensor-frame data; Waymo's points are in the vehicle frame, the top LiDAR above it), unless a
    reader puts frame.meta["sensor_origin"].
    """

    def __init__(self, reader, channels: Sequence[str], point_range: Sequence[float], num_previous: int = 0,
                 missing_previous: str = "current", augment: Optional[Compose] = None, repeat: int = 1,
                 channel_scales: Optional[dict] = None, sensor_origin: Sequence[float] = (0.0, 0.0, 0.0),
                 frame_gap: int = 1, channel_tanh: Sequence[str] = ()):
        if num_previous not in (0, 1):
            raise ValueError(f"data.num_previous must be 0 or 1, got {num_previous!r}")
        if missing_previous not in ("current", "empty", "skip"):
            raise ValueError(f"data.missing_previous must be 'current', 'empty' or 'skip', got {missing_previous!r}")
        if isinstance(frame_gap, bool) or not isinstance(frame_gap, int) or frame_gap < 1:
            raise ValueError(f"data.frame_gap must be an int >= 1, got {frame_gap!r}")
        if repeat < 1:
            raise ValueError(f"data.repeat must be >= 1, got {repeat}")
        if len(point_range) != 6 or any(point_range[i] >= point_range[i + 3] for i in range(3)):
            raise ValueError(f"data.point_range must be [x0, y0, z0, x1, y1, z1] with x0 < x1 etc., got {point_range}")
        for option, names in (("channel_scales", list(channel_scales or {})), ("channel_tanh", list(channel_tanh))):
            unknown = [name for name in names if name not in tuple(channels)]
            if unknown:
                raise ValueError(f"data.{option} names {unknown}, which are not among data.channels {tuple(channels)}")
        if num_previous and not hasattr(reader, "previous"):
            raise ValueError(f"data.num_previous=1 but the source {type(reader).__name__} has no previous()")
        self.reader, self.channels, self.point_range = reader, tuple(channels), tuple(float(v) for v in point_range)
        self.num_previous, self.missing_previous, self.frame_gap = num_previous, missing_previous, frame_gap
        self.augment, self.repeat, self.channel_scales = augment, repeat, dict(channel_scales or {})
        self.channel_tanh = tuple(channel_tanh)
        if len(sensor_origin) != 3:
            raise ValueError(f"data.sensor_origin must be 3 numbers (x, y, z), got {sensor_origin!r}")
        self.sensor_origin = np.asarray(sensor_origin, np.float64)
        self.crop = CropRange(self.point_range)
        self.collate_fn = collate_lidar_pretrain     # the engine hands this to its DataLoader
        # Reader indices this dataset uses, in order (all of them unless frames are skipped).
        self.frame_indices = list(range(len(reader)))
        if num_previous and missing_previous == "skip":
            has_previous = getattr(reader, "has_previous", None)
            self.frame_indices = [i for i in self.frame_indices
                                  if (has_previous(i, frame_gap) if has_previous is not None
                                      else reader.previous(i, frame_gap) is not None)]
            if not self.frame_indices:
                raise ValueError(f"data.missing_previous='skip': none of the {len(reader)} frames of "
                                 f"{type(reader).__name__} has a sweep {frame_gap} (data.frame_gap) back")

    def __len__(self):
        return len(self.frame_indices) * self.repeat

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        i = self.frame_indices[index % len(self.frame_indices)]
        current = select_channels(self.reader[i], self.channels, self.channel_scales, self.channel_tanh)
        origin = np.asarray(current.meta.get("sensor_origin", self.sensor_origin), np.float64)
        previous = None
        if self.num_previous:
            previous = self.reader.previous(i, self.frame_gap)
            if previous is not None:
                prev_sensor = previous.meta.get("sensor_origin", self.sensor_origin)
                previous = select_channels(previous, self.channels, self.channel_scales, self.channel_tanh)
                previous = align_to_frame(previous, current, prev_sensor)
        prev_origin = previous.meta["origin_in_current"] if previous is not None else np.zeros(3)
        if self.augment is not None:
            seed = int(torch.randint(0, 2 ** 62, ()).item())
            current = self.augment(current, np.random.default_rng(seed))
            origin = self._augment_position(origin, seed)
            if previous is not None:
                previous = self.augment(previous, np.random.default_rng(seed))
                prev_origin = self._augment_position(prev_origin, seed)
        current = self.crop(current)
        sample = {"frame": current, "origin": origin.astype(np.float32)}
        if self.num_previous:
            has_prev = previous is not None
            if has_prev:
                previous = self.crop(previous)
            elif self.missing_previous == "current":
                previous, prev_origin = current, origin
            else:
                previous = current.select_points(np.zeros(current.num_points, dtype=bool))
            sample.update(previous=previous, prev_origin=np.asarray(prev_origin, np.float32), has_prev=has_prev)
        return sample

    def _augment_position(self, position: np.ndarray, seed: int) -> np.ndarray:
        """Where the transform drawn from `seed` moves one point (a sensor position)."""
        dummy = Frame(points=np.zeros((1, len(self.channels)), np.float32), channels=self.channels)
        dummy.points[0, :3] = position
        return self.augment(dummy, np.random.default_rng(seed)).points[0, :3].astype(np.float64)


def collate_lidar_pretrain(samples: list[dict]) -> dict:
    """The LiDAR batch (see the module docstring) from `LidarPretrainDataset` samples."""
    batch = collate_frames([s["frame"] for s in samples])
    batch["origins"] = torch.as_tensor(np.stack([s["origin"] for s in samples]), dtype=torch.float32)
    if "previous" in samples[0]:
        prev = collate_frames([s["previous"] for s in samples])
        batch["prev_points"], batch["prev_offsets"] = prev["points"], prev["offsets"]
        batch["prev_origins"] = torch.as_tensor(np.stack([s["prev_origin"] for s in samples]), dtype=torch.float32)
        batch["has_prev"] = torch.tensor([bool(s["has_prev"]) for s in samples])
    return batch
