"""Write synthetic sequences in the KITTI object layout, plus sequence metadata.

    OUT/ImageSets/{train,val,trainval}.txt      val = every 5th sequence (no frame of a val
                                                sequence is in train: no temporal leakage)
    OUT/training/velodyne/XXXXXX.bin            float32 x, y, z, reflectance (0..1)
    OUT/training/label_2/XXXXXX.txt             KITTI label lines (camera frame), see kitti.py
    OUT/training/calib/XXXXXX.txt               one fixed KITTI-like calibration
    OUT/sequences/NNNN.json                     per sequence: frame ids, timestamps (s), poses
                                                (4x4 LiDAR -> world, row-major), the ego velocity,
                                                and every agent's track (world boxes + velocities per
                                                frame), and for each frame the track id of every
                                                label_2 line (so velocities can be attached)
    OUT/sequences/index.json                    frame id -> [sequence file, index in sequence]

Labels: like real KITTI, only objects seen by the front camera are written (label_fov="camera"),
with the 2D box from projecting the 3D corners, truncation = the share of that box outside the
image, and occlusion from the ray caster's visible fraction. label_fov="all" writes every agent in
range (those outside the image with bbox -1 -1 -1 -1 and truncation 1) for 360-degree use.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pointmae.data.boxes import box_corners
from pointmae.data.kitti import (DEFAULT_IMAGE_SIZE, KittiCalibration, KittiObjects, lidar_to_camera_boxes,
                                 observation_angle, write_calibration, write_labels)
from pointmae.data.points_io import write_bin_points
from pointmae.data.synthetic.world import SyntheticWorld


def synthetic_calibration() -> KittiCalibration:
    """A KITTI-like rig: camera 0.27 m ahead of and 0.08 m below the LiDAR, looking along +x, with the
    intrinsics of KITTI's 2011_09_26 colour camera 2 (fx = 721.5377) and no rectification rotation."""
    tr = np.array([[0.0, -1.0, 0.0, 0.0], [0.0, 0.0, -1.0, -0.08], [1.0, 0.0, 0.0, -0.27]])
    p2 = np.array([[721.5377, 0.0, 609.5593, 44.85728], [0.0, 721.5377, 172.854, 0.2163791],
                   [0.0, 0.0, 1.0, 0.002745884]])
    return KittiCalibration(P2=p2, R0_rect=np.eye(3), Tr_velo_to_cam=tr)


def camera_labels(frame, calib: KittiCalibration, label_fov: str = "camera",
                  image_size=DEFAULT_IMAGE_SIZE) -> tuple[KittiObjects, np.ndarray]:
    """KITTI label objects for a synthetic Frame, and the track id of each written line."""
    if label_fov not in ("camera", "all"):
        raise ValueError(f"label_fov must be 'camera' or 'all'; got {label_fov!r}")
    boxes = frame.boxes[:, :7]
    location, dims, ry = lidar_to_camera_boxes(boxes, calib)
    corners = box_corners(boxes).reshape(-1, 3)
    corners_rect = calib.lidar_to_rect(corners)
    uv, depth = calib.project_rect(corners_rect)
    uv, depth = uv.reshape(-1, 8, 2), depth.reshape(-1, 8)
    width, height = image_size
    in_front = (depth > 0.1).all(axis=1)
    raw = np.c_[uv[..., 0].min(1), uv[..., 1].min(1), uv[..., 0].max(1), uv[..., 1].max(1)]
    clipped = np.c_[np.clip(raw[:, 0], 0, width - 1), np.clip(raw[:, 1], 0, height - 1),
                    np.clip(raw[:, 2], 0, width - 1), np.clip(raw[:, 3], 0, height - 1)]
    area = lambda b: np.maximum(b[:, 2] - b[:, 0], 0) * np.maximum(b[:, 3] - b[:, 1], 0)  # noqa: E731
    with np.errstate(invalid="ignore", divide="ignore"):
        truncated = np.clip(1.0 - area(clipped) / area(raw), 0.0, 1.0)
    visible = in_front & (area(clipped) > 0)
    truncated = np.where(visible, np.nan_to_num(truncated, nan=1.0), 1.0)
    bbox = np.where(visible[:, None], clipped, -1.0)
    keep = visible if label_fov == "camera" else np.ones(len(boxes), bool)
    objects = KittiObjects(names=frame.names[keep], truncated=truncated[keep],
                           occluded=frame.box_meta["occluded"][keep], alpha=observation_angle(location, ry)[keep],
                           bbox_2d=bbox[keep], dims_hwl=dims[keep], location=location[keep],
                           rotation_y=ry[keep], score=np.ones(int(keep.sum())),
                           lines=np.arange(1, int(keep.sum()) + 1))
    return objects, frame.box_meta["track_id"][keep]


def write_synthetic_kitti(out_dir, world: SyntheticWorld, num_frames: int, label_fov: str = "camera",
                          progress: bool = True) -> Path:
    """Generate `num_frames` frames (consecutive sequences of world.frames_per_sequence frames) under
    out_dir in the KITTI layout. Returns out_dir."""
    out = Path(out_dir)
    training = out / "training"
    calib = synthetic_calibration()
    per_seq = world.frames_per_sequence
    num_sequences = -(-num_frames // per_seq)
    splits: dict[str, list[str]] = {"train": [], "val": []}
    index: dict[str, list] = {}
    bar = _progress(num_frames, progress)
    frame_number = 0
    for seq in range(num_sequences):
        frames_here = min(per_seq, num_frames - frame_number)
        scene = world.scene(seq)
        record = {"sequence_id": f"synthetic-{world.seed}-{seq:04d}", "seed": world.seed, "sensor": world.sensor.name,
                  "frame_rate_hz": 10.0, "motion_distortion": world.motion_distortion, "frame_ids": [], "timestamps": [], "poses": [],
                  "ego_velocity_world": [scene.ego_speed, 0.0], "label_track_ids": [],
                  "tracks": {str(a.track_id): {"name": a.name, "dims": a.dims.tolist(), "frames": [], "boxes_world": []}
                             for a in scene.agents}}
        for i in range(frames_here):
            frame = world.frame(seq, i)
            frame_id = f"{frame_number:06d}"
            write_bin_points(training / "velodyne" / f"{frame_id}.bin", frame.points[:, :4])
            objects, track_ids = camera_labels(frame, calib, label_fov)
            write_labels(training / "label_2" / f"{frame_id}.txt", objects)
            write_calibration(training / "calib" / f"{frame_id}.txt", calib)
            record["frame_ids"].append(frame_id)
            record["timestamps"].append(frame.timestamp)
            record["poses"].append(frame.pose.reshape(-1).tolist())
            record["label_track_ids"].append(track_ids.tolist())
            for agent in scene.agents:
                track = record["tracks"][str(agent.track_id)]
                track["frames"].append(frame_id)
                track["boxes_world"].append(agent.box_at(frame.timestamp, scene.slope).tolist())
            index[frame_id] = [f"{seq:04d}.json", i]
            splits["val" if seq % 5 == 4 else "train"].append(frame_id)
            frame_number += 1
            bar.update(1)
        (out / "sequences").mkdir(parents=True, exist_ok=True)
        (out / "sequences" / f"{seq:04d}.json").write_text(json.dumps(record))
    bar.close()
    (out / "sequences" / "index.json").write_text(json.dumps(index))
    (out / "ImageSets").mkdir(parents=True, exist_ok=True)
    for name, ids in (("train", splits["train"]), ("val", splits["val"]),
                      ("trainval", sorted(splits["train"] + splits["val"]))):
        (out / "ImageSets" / f"{name}.txt").write_text("".join(f"{i}\n" for i in ids))
    return out


class _NoBar:
    def update(self, n):
        pass

    def close(self):
        pass


def _progress(total: int, enabled: bool):
    if not enabled:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        return _NoBar()
    return tqdm(total=total, unit="frame", desc="synthetic frames")
