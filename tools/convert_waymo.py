"""Convert Waymo Open Dataset v1 tfrecord segments into pointmae's per-frame files (format
"pointmae-waymo-v1", documented in pointmae/data/waymo.py and docs/waymo.md).

RUN THIS IN ITS OWN ENVIRONMENT (see docs/waymo.md): waymo-open-dataset-tf-2-12-0 pins numpy 1.23.5
and TensorFlow (~2.8 GB), which must stay out of the training environment. This file imports neither
torch nor pointmae on that path; it needs only numpy + tensorflow + waymo_open_dataset.

    python tools/convert_waymo.py SEGMENT.tfrecord [...] --out OUT_DIR [--labels-only]

Writes OUT_DIR/<context_name>/<frame_index:04d>.npz with:
  points (N, 7) float32  x, y, z (vehicle frame), intensity, elongation, nlz (0/1), return_index (0/1)
  laser (N,) uint8       laser name of each point (1 TOP .. 5 REAR)
  boxes (M, 9) float64   center_x, center_y, center_z, length, width, height, heading, speed_x, speed_y
  names, ids (M,) str; num_lidar_points, difficulty, tracking_difficulty (M,) int
  pose (4, 4) vehicle -> world; timestamp_micros; context_name; frame_index; format

Points: every laser's range image of BOTH returns (ri_index 0 and 1) is projected with the official
frame_utils.convert_range_image_to_point_cloud(..., keep_polar_features=True), which returns
[range, intensity, elongation, x, y, z] for the pixels with range > 0 in row-major order; the NLZ
flag is channel 3 of the same range image over the same pixels (dataset.proto: RangeImage channels
are range, intensity, elongation, is_in_nlz).

--labels-only: no TensorFlow needed; labels/pose/timestamp/context from pointmae's own TFRecord +
protobuf parser, zero points (for tfrecords without LiDAR data, and for testing the pipeline).
"""
import argparse
import os
import sys

import numpy as np

FORMAT = "pointmae-waymo-v1"
LABEL_TYPES = {0: "Unknown", 1: "Vehicle", 2: "Pedestrian", 3: "Sign", 4: "Cyclist"}


def save_frame(out_dir, context_name, frame_index, points, laser, boxes, names, ids, num_lidar_points,
               difficulty, tracking_difficulty, pose, timestamp_micros):
    folder = os.path.join(out_dir, context_name)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{frame_index:04d}.npz")
    tmp = path + ".tmp.npz"
    np.savez_compressed(tmp, format=np.array(FORMAT), points=np.asarray(points, np.float32).reshape(-1, 7),
                        laser=np.asarray(laser, np.uint8), boxes=np.asarray(boxes, np.float64).reshape(-1, 9),
                        names=np.asarray(names, dtype=str), ids=np.asarray(ids, dtype=str),
                        num_lidar_points=np.asarray(num_lidar_points, np.int64),
                        difficulty=np.asarray(difficulty, np.int64),
                        tracking_difficulty=np.asarray(tracking_difficulty, np.int64),
                        pose=np.asarray(pose, np.float64).reshape(4, 4), timestamp_micros=np.int64(timestamp_micros),
                        context_name=np.array(context_name), frame_index=np.int64(frame_index))
    os.replace(tmp, path)          # never leave a half-written frame behind
    return path


def convert_with_waymo_library(path, out_dir):
    """The real conversion (needs tensorflow + waymo_open_dataset)."""
    try:
        import tensorflow as tf
        from waymo_open_dataset import dataset_pb2
        from waymo_open_dataset.utils import frame_utils
    except ImportError as exc:
        sys.exit(f"convert_waymo.py: {exc}. Run it in the waymo environment (docs/waymo.md), "
                 "or use --labels-only.")
    written = []
    for index, record in enumerate(tf.data.TFRecordDataset(path, compression_type="")):
        frame = dataset_pb2.Frame()
        frame.ParseFromString(bytes(record.numpy()))
        parsed = frame_utils.parse_range_image_and_camera_projection(frame)
        range_images, camera_projections, range_image_top_pose = parsed[0], parsed[1], parsed[-1]
        columns, lasers = [], []
        for return_index in (0, 1):
            per_laser = frame_utils.convert_range_image_to_point_cloud(
                frame, range_images, camera_projections, range_image_top_pose,
                ri_index=return_index, keep_polar_features=True)
            for laser, laser_points in zip(sorted(frame.context.laser_calibrations, key=lambda c: c.name), per_laser):
                ri = range_images[laser.name][return_index]
                ri = np.array(ri.data, dtype=np.float32).reshape(list(ri.shape.dims))
                nlz = ri[..., 3][ri[..., 0] > 0]
                laser_points = np.asarray(laser_points)
                if len(nlz) != len(laser_points):
                    raise RuntimeError(f"{path} frame {index}: NLZ mask and points disagree for laser {laser.name}")
                columns.append(np.c_[laser_points[:, 3:6], laser_points[:, 1], laser_points[:, 2],
                                     (nlz > 0).astype(np.float32), np.full(len(nlz), return_index, np.float32)])
                lasers.append(np.full(len(nlz), laser.name, np.uint8))
        labels = list(frame.laser_labels)
        boxes = [[l.box.center_x, l.box.center_y, l.box.center_z, l.box.length, l.box.width, l.box.height,
                  l.box.heading, l.metadata.speed_x, l.metadata.speed_y] for l in labels]
        written.append(save_frame(
            out_dir, frame.context.name, index, np.concatenate(columns) if columns else np.zeros((0, 7)),
            np.concatenate(lasers) if lasers else np.zeros(0), boxes, [LABEL_TYPES.get(l.type, "Unknown") for l in labels],
            [l.id for l in labels], [l.num_lidar_points_in_box for l in labels],
            [l.detection_difficulty_level for l in labels], [l.tracking_difficulty_level for l in labels],
            np.array(frame.pose.transform).reshape(4, 4), frame.timestamp_micros))
    return written


def convert_labels_only(path, out_dir):
    """No TensorFlow: pointmae's own TFRecord/protobuf parser (training environment)."""
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from pointmae.data.waymo import read_tfrecord_frames
    written = []
    for index, frame in enumerate(read_tfrecord_frames(path)):
        written.append(save_frame(out_dir, frame.sequence_id, index, np.zeros((0, 7)), np.zeros(0), frame.boxes,
                                  frame.names, frame.box_meta["id"], frame.box_meta["num_points"],
                                  frame.box_meta["difficulty"], frame.box_meta["tracking_difficulty"], frame.pose,
                                  frame.meta["timestamp_micros"]))
    return written


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("tfrecords", nargs="+")
    p.add_argument("--out", required=True)
    p.add_argument("--labels-only", action="store_true")
    args = p.parse_args(argv)
    total = 0
    for path in args.tfrecords:
        written = (convert_labels_only if args.labels_only else convert_with_waymo_library)(path, args.out)
        total += len(written)
        print(f"{path}: {len(written)} frame(s)")
    print(f"wrote {total} frame(s) under {args.out}")


if __name__ == "__main__":
    main()
