"""Waymo's own detection metrics (the waymo-open-dataset TensorFlow op) on two Objects files.

Runs in the **waymo environment** (see docs/waymo.md: waymo-open-dataset-tf-2-12-0, numpy 1.23,
TensorFlow 2.13), never in the training one: it imports only numpy, tensorflow and waymo_open_dataset.

    ~/.venvs/waymo/bin/python tools/waymo_official_metrics.py PREDICTIONS.bin GROUND_TRUTH.bin

Both files are serialized waymo.open_dataset.Objects (pointmae.submission.waymo writes them:
write_objects_file / encode_ground_truth_objects). The configuration and ground-truth preparation
are those of the official command-line tool metrics/tools/compute_detection_metrics_main.cc: score
cutoffs 0:0.01:1, Hungarian matching, 3D IoU thresholds Vehicle 0.7 / Pedestrian, Sign, Cyclist 0.5,
LEVEL_1 and LEVEL_2 per object type; ground truths with no LiDAR point are dropped and an unset
difficulty becomes LEVEL_2 for <= 5 points. Prints JSON {"OBJECT_TYPE_TYPE_VEHICLE_LEVEL_1":
{"AP": ..., "APH": ...}, ...} on stdout.
"""
import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from waymo_open_dataset import label_pb2  # noqa: E402
from waymo_open_dataset.metrics.ops import py_metrics_ops  # noqa: E402
from waymo_open_dataset.metrics.python import config_util_py  # noqa: E402
from waymo_open_dataset.protos import breakdown_pb2, metrics_pb2  # noqa: E402


def official_config():
    config = metrics_pb2.Config()
    config.breakdown_generator_ids.append(breakdown_pb2.Breakdown.OBJECT_TYPE)
    difficulty = config.difficulties.add()
    difficulty.levels.append(label_pb2.Label.LEVEL_1)
    difficulty.levels.append(label_pb2.Label.LEVEL_2)
    config.matcher_type = metrics_pb2.MatcherProto.TYPE_HUNGARIAN
    config.iou_thresholds.extend([0.0, 0.7, 0.5, 0.5, 0.5])
    config.box_type = label_pb2.Label.Box.TYPE_3D
    config.score_cutoffs.extend([i * 0.01 for i in range(100)] + [1.0])
    return config


def read_objects(path):
    objects = metrics_pb2.Objects()
    with open(path, "rb") as f:
        objects.ParseFromString(f.read())
    return list(objects.objects)


def arrays(objects, frame_ids, is_gt):
    box = lambda o: [o.object.box.center_x, o.object.box.center_y, o.object.box.center_z,  # noqa: E731
                     o.object.box.length, o.object.box.width, o.object.box.height, o.object.box.heading]
    out = {"bbox": np.array([box(o) for o in objects], np.float32).reshape(-1, 7),
           "type": np.array([o.object.type for o in objects], np.uint8),
           "frame_id": np.array([frame_ids[(o.context_name, o.frame_timestamp_micros)] for o in objects], np.int64)}
    if is_gt:
        levels = []
        for o in objects:
            level = o.object.detection_difficulty_level
            if level == label_pb2.Label.UNKNOWN:
                level = label_pb2.Label.LEVEL_2 if o.object.num_lidar_points_in_box <= 5 else label_pb2.Label.LEVEL_1
            levels.append(level)
        out["difficulty"] = np.array(levels, np.uint8)
    else:
        out["score"] = np.array([o.score for o in objects], np.float32)
        out["overlap_nlz"] = np.array([o.overlap_with_nlz for o in objects], bool)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("predictions")
    parser.add_argument("ground_truth")
    args = parser.parse_args(argv)
    predictions = read_objects(args.predictions)
    ground_truth = [o for o in read_objects(args.ground_truth) if o.object.num_lidar_points_in_box > 0]
    keys = sorted({(o.context_name, o.frame_timestamp_micros) for o in predictions + ground_truth})
    frame_ids = {k: i for i, k in enumerate(keys)}
    pd, gt = arrays(predictions, frame_ids, False), arrays(ground_truth, frame_ids, True)
    config = official_config()
    outputs = py_metrics_ops.detection_metrics(
        prediction_bbox=tf.constant(pd["bbox"]), prediction_type=tf.constant(pd["type"]),
        prediction_score=tf.constant(pd["score"]), prediction_frame_id=tf.constant(pd["frame_id"]),
        prediction_overlap_nlz=tf.constant(pd["overlap_nlz"]), ground_truth_bbox=tf.constant(gt["bbox"]),
        ground_truth_type=tf.constant(gt["type"]), ground_truth_frame_id=tf.constant(gt["frame_id"]),
        ground_truth_difficulty=tf.constant(gt["difficulty"]), config=config.SerializeToString())
    ap, aph = outputs[0], outputs[1]     # average_precision, average_precision_ha_weighted
    names = config_util_py.get_breakdown_names_from_config(config)
    result = {name: {"AP": float(a), "APH": float(h)} for name, a, h in zip(names, ap.numpy(), aph.numpy())}
    json.dump(result, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
