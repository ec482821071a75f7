"""Sensor-frame boxes -> KITTI camera-frame label objects, as the object benchmark reads them.

Used by the KITTI evaluator (pointmae/eval/kitti.py) and the submission writer
(pointmae/submission/kitti.py), so that an in-memory evaluation and the written files agree.

* 3D box: pointmae's sensor-frame box (frame.py) through the frame's calibration
  (`lidar_to_camera_boxes`): bottom-centre location, (h, w, l), rotation_y, in the rectified camera frame.
* 2D box: the projection of the 3D box into image 2, clipped to the image. The KITTI object devkit
  readme asks submissions to give both the 2D and the 3D box and to drop boxes not visible in the
  image plane. The part of a box behind the camera cannot be projected; the box is first cut by the
  plane z_rect = NEAR_PLANE (its corners in front, plus the points where its 12 edges cross the plane;
  the projection of a convex body is the hull of the projections of its vertices), so a box that
  straddles the camera still gets the image extent of its visible part.
* alpha: the observation angle (`observation_angle`).
"""
from __future__ import annotations

import numpy as np

from pointmae.data.boxes import box_corners
from pointmae.data.kitti import (DEFAULT_IMAGE_SIZE, KittiCalibration, KittiObjects, lidar_to_camera_boxes,
                                 observation_angle)

# Metres in front of the rectified camera below which a box is cut before projection.
NEAR_PLANE = 0.1
# A projection narrower or lower than one pixel (after clipping) does not show in the image.
MIN_VISIBLE_PIXELS = 1.0

# The 12 edges of box_corners()' order (bottom face 0-3, top face 4-7).
_EDGES = np.array([[0, 1], [1, 2], [2, 3], [3, 0], [4, 5], [5, 6], [6, 7], [7, 4],
                   [0, 4], [1, 5], [2, 6], [3, 7]])


def project_boxes_to_image(boxes: np.ndarray, calib: KittiCalibration,
                           image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """2D boxes in image 2 of sensor-frame 3D boxes.

    Args:
        boxes: (M, >=7) sensor-frame boxes (x, y, z, dx, dy, dz, heading, ...).
        calib: the frame's calibration.
        image_size: (width, height) in pixels.

    Returns:
        bbox (M, 4) float64 (left, top, right, bottom) clipped to [0, width-1] x [0, height-1]
        (the pixel-centre range, as KITTI's own labels), and visible (M,) bool: some part of the box is
        in front of the camera and its clipped 2D box is at least MIN_VISIBLE_PIXELS wide and high.
    """
    boxes = np.asarray(boxes, np.float64)
    if boxes.ndim != 2 or boxes.shape[1] < 7:
        raise ValueError(f"boxes must be (M, >=7) sensor-frame boxes, got shape {boxes.shape}")
    width, height = image_size
    if len(boxes) == 0:
        return np.zeros((0, 4)), np.zeros(0, bool)
    corners = calib.lidar_to_rect(box_corners(boxes[:, :7]).reshape(-1, 3)).reshape(-1, 8, 3)   # (M, 8, 3)
    a, b = corners[:, _EDGES[:, 0]], corners[:, _EDGES[:, 1]]                                   # (M, 12, 3)
    za, zb = a[..., 2] - NEAR_PLANE, b[..., 2] - NEAR_PLANE
    crosses = za * zb < 0
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(crosses, za / (za - zb), 0.0)
    cut = a + t[..., None] * (b - a)                                                           # on the plane
    points = np.concatenate([corners, cut], axis=1)                                            # (M, 20, 3)
    usable = np.concatenate([corners[..., 2] >= NEAR_PLANE, crosses], axis=1)                  # (M, 20)
    uv, _ = calib.project_rect(points.reshape(-1, 3))
    uv = uv.reshape(-1, 20, 2)
    inf = np.inf
    left = np.where(usable, uv[..., 0], inf).min(1)
    top = np.where(usable, uv[..., 1], inf).min(1)
    right = np.where(usable, uv[..., 0], -inf).max(1)
    bottom = np.where(usable, uv[..., 1], -inf).max(1)
    any_front = usable.any(1)
    bbox = np.stack([np.clip(left, 0, width - 1), np.clip(top, 0, height - 1),
                     np.clip(right, 0, width - 1), np.clip(bottom, 0, height - 1)], axis=1)
    bbox[~any_front] = 0.0
    visible = (any_front & (bbox[:, 2] - bbox[:, 0] >= MIN_VISIBLE_PIXELS)
               & (bbox[:, 3] - bbox[:, 1] >= MIN_VISIBLE_PIXELS))
    return bbox, visible


def detections_to_kitti_objects(boxes: np.ndarray, names, scores, calib: KittiCalibration,
                                image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE,
                                drop_invisible: bool = True) -> tuple[KittiObjects, np.ndarray]:
    """Detections in pointmae's sensor frame -> KITTI result objects (camera frame, 16-field lines).

    Args:
        boxes: (M, 7 or 9) sensor-frame boxes; velocities, if any, are ignored.
        names: (M,) class names, written as given (KITTI spells them "Car", "Pedestrian", "Cyclist").
        scores: (M,) detection scores.
        calib: the frame's calibration.
        image_size: (width, height) of the frame's image 2.
        drop_invisible: drop boxes whose projection misses the image (the benchmark asks for that).

    Returns:
        (objects, keep): KittiObjects with truncated = occluded = -1 (unknown for detections; the
        devkit does not read them from results), the projected 2D box, alpha, and the score; keep (M,)
        bool marks the input rows that were kept.
    """
    boxes = np.asarray(boxes, np.float64)
    if boxes.ndim != 2 or boxes.shape[1] < 7:
        raise ValueError(f"boxes must be (M, 7) or (M, 9) sensor-frame boxes, got shape {boxes.shape}")
    names = np.asarray(names, dtype=str).reshape(-1)
    scores = np.asarray(scores, np.float64).reshape(-1)
    if len(names) != len(boxes) or len(scores) != len(boxes):
        raise ValueError(f"{len(boxes)} boxes need as many names and scores, got {len(names)} names and "
                         f"{len(scores)} scores")
    bbox, visible = project_boxes_to_image(boxes, calib, image_size)
    keep = visible if drop_invisible else np.ones(len(boxes), bool)
    location, dims_hwl, rotation_y = lidar_to_camera_boxes(boxes[keep, :7], calib)
    count = int(keep.sum())
    objects = KittiObjects(names=names[keep], truncated=np.full(count, -1.0), occluded=np.full(count, -1, np.int64),
                           alpha=observation_angle(location, rotation_y), bbox_2d=bbox[keep],
                           dims_hwl=dims_hwl.reshape(-1, 3), location=location.reshape(-1, 3),
                           rotation_y=np.asarray(rotation_y).reshape(-1), score=scores[keep],
                           lines=np.arange(1, count + 1, dtype=np.int64))
    return objects, keep


def frame_to_kitti_objects(frame) -> KittiObjects:
    """The ground truth of a Frame read by KittiObjectDataset, back as the label file's objects.

    Needs frame.meta["calib"] and box_meta "truncated", "occluded", "alpha", "bbox_2d" (what the reader
    keeps). DontCare regions (meta["dontcare_bbox_2d"]) come back as DontCare rows. The 3D boxes go
    through `lidar_to_camera_boxes`, the exact inverse of the reader's conversion."""
    missing = [k for k in ("truncated", "occluded", "alpha", "bbox_2d") if k not in frame.box_meta]
    calib = frame.meta.get("calib")
    if calib is None or missing:
        what = (["meta['calib']"] if calib is None else []) + [f"box_meta[{k!r}]" for k in missing]
        raise ValueError(f"frame {frame.frame_id!r}: KITTI evaluation needs {', '.join(what)} (frames read by "
                         f"pointmae.data.kitti.KittiObjectDataset with labels have them)")
    location, dims_hwl, rotation_y = lidar_to_camera_boxes(frame.boxes[:, :7], calib)
    dontcare = np.asarray(frame.meta.get("dontcare_bbox_2d", np.zeros((0, 4))), np.float64).reshape(-1, 4)
    n, k = len(frame.boxes), len(dontcare)
    return KittiObjects(
        names=np.concatenate([np.asarray(frame.names, dtype=str), np.full(k, "DontCare")]).astype(str),
        truncated=np.r_[np.asarray(frame.box_meta["truncated"], np.float64), np.full(k, -1.0)],
        occluded=np.r_[np.asarray(frame.box_meta["occluded"], np.int64), np.full(k, -1, np.int64)],
        alpha=np.r_[np.asarray(frame.box_meta["alpha"], np.float64), np.full(k, -10.0)],
        bbox_2d=np.r_[np.asarray(frame.box_meta["bbox_2d"], np.float64).reshape(-1, 4), dontcare],
        dims_hwl=np.r_[dims_hwl.reshape(-1, 3), np.full((k, 3), -1.0)],
        location=np.r_[location.reshape(-1, 3), np.full((k, 3), -1000.0)],
        rotation_y=np.r_[np.asarray(rotation_y).reshape(-1), np.full(k, -10.0)],
        score=np.ones(n + k), lines=np.arange(1, n + k + 1, dtype=np.int64))
