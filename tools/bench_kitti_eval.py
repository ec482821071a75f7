"""Time the KITTI evaluator (pointmae/eval/kitti.py) on a KITTI-val-sized random scene set.

    python tools/bench_kitti_eval.py [--frames 3769] [--objects 9] [--detections 20] [--seed 0] [--threads 1]

Each frame gets `objects` ground truths (Car / Pedestrian / Cyclist / Van / DontCare, random 2D
heights, occlusion and truncation) and `detections` detections: jittered copies of ground truths
(some twice) and false positives, with random scores. Prints the wall time of evaluate_kitti for
3 classes x 3 metrics x 3 difficulties, strict and loose.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from pointmae.data.kitti import KittiObjects  # noqa: E402
from pointmae.eval.kitti import evaluate_kitti  # noqa: E402

SIZES = {"Car": (1.5, 1.7, 4.0), "Van": (2.0, 1.9, 5.0), "Pedestrian": (1.7, 0.6, 0.8), "Cyclist": (1.7, 0.6, 1.8)}


def random_frame(rng, num_objects, num_detections):
    names = rng.choice(["Car", "Car", "Car", "Pedestrian", "Cyclist", "Van", "DontCare"], num_objects)
    location = np.c_[rng.uniform(-20, 20, num_objects), rng.uniform(1.4, 1.8, num_objects),
                     rng.uniform(5, 70, num_objects)]
    dims = np.array([SIZES.get(n, (-1, -1, -1)) for n in names], float)
    left, top = rng.uniform(0, 1100, num_objects), rng.uniform(120, 200, num_objects)
    height = rng.uniform(15, 120, num_objects)
    bbox = np.c_[left, top, left + height * rng.uniform(0.5, 2, num_objects), top + height]
    dontcare = names == "DontCare"           # as in KITTI's label files: a 2D region, no 3D box
    location[dontcare] = -1000.0
    gt = KittiObjects(names=names.astype(str), truncated=rng.choice([0.0, 0.1, 0.3, 0.6], num_objects),
                      occluded=rng.integers(0, 4, num_objects), alpha=rng.uniform(-3, 3, num_objects), bbox_2d=bbox,
                      dims_hwl=dims, location=location, rotation_y=rng.uniform(-3, 3, num_objects),
                      score=np.ones(num_objects), lines=np.arange(1, num_objects + 1))
    source = rng.choice(np.flatnonzero(names != "DontCare"), num_detections) if (names != "DontCare").any() \
        else np.zeros(0, int)
    m = len(source)
    fake = rng.uniform(size=m) < 0.3                       # false positives elsewhere
    det_location = location[source] + rng.normal(0, 0.25, (m, 3)) + fake[:, None] * [10.0, 0.0, 15.0]
    det = KittiObjects(names=gt.names[source], truncated=-np.ones(m), occluded=-np.ones(m, np.int64),
                       alpha=gt.alpha[source] + rng.normal(0, 0.2, m), bbox_2d=bbox[source] + rng.normal(0, 4, (m, 4)),
                       dims_hwl=dims[source] * rng.uniform(0.9, 1.1, (m, 3)), location=det_location,
                       rotation_y=gt.rotation_y[source] + rng.normal(0, 0.1, m), score=rng.uniform(size=m),
                       lines=np.arange(1, m + 1))
    return gt, det


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=3769)
    p.add_argument("--objects", type=int, default=9)
    p.add_argument("--detections", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    frames = [random_frame(rng, args.objects, args.detections) for _ in range(args.frames)]
    gts, dets = [f[0] for f in frames], [f[1] for f in frames]
    start = time.perf_counter()
    result = evaluate_kitti(gts, dets)
    seconds = time.perf_counter() - start
    print(f"{args.frames} frames, {sum(len(g) for g in gts)} ground-truth lines, {sum(len(d) for d in dets)} "
          f"detections: evaluate_kitti {seconds:.2f} s ({args.threads} thread(s))")
    print(f"Car 3D AP_R40 moderate (strict): {result.get('Car', '3d', 'moderate'):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
