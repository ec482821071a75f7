"""Benchmark the synthetic LiDAR world: seconds per frame on ONE core, written to
benchmarks/synthetic.md with the machine description.

    python tools/bench_synthetic.py [--frames 10] [--out benchmarks/synthetic.md]

The thread count of numpy's BLAS and of torch is pinned to 1 before numpy is imported, so the number
is a single-core number even on a big machine.
"""
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from pointmae.data.synthetic import SyntheticWorld, sensor_preset  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=10)
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                                 "benchmarks", "synthetic.md"))
    args = p.parse_args(argv)
    try:
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})   # one core
    except (AttributeError, OSError):
        pass
    rows = []
    for preset in ("hdl64", "nuscenes32"):
        world = SyntheticWorld(seed=0, sensor=sensor_preset(preset), frames_per_sequence=args.frames)
        world.scene(0)                                       # scene generation timed separately
        t0 = time.perf_counter()
        world.scene(1)
        scene_s = time.perf_counter() - t0
        times, points, boxes = [], [], []
        for i in range(args.frames):
            t0 = time.perf_counter()
            frame = world.frame(0, i)
            times.append(time.perf_counter() - t0)
            points.append(frame.num_points)
            boxes.append(len(frame.boxes))
        times = np.array(times)
        rows.append(f"| {preset} | {world.sensor.num_beams} x {world.sensor.num_columns} | {np.mean(points):,.0f} | "
                    f"{np.mean(boxes):.0f} | {np.median(times):.3f} | {times.max():.3f} | {scene_s:.3f} |")
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    text = "\n".join([
        "# Synthetic LiDAR world: generation speed",
        "",
        f"Written by `tools/bench_synthetic.py --frames {args.frames}`, one core (affinity pinned, BLAS threads 1).",
        f"Machine: {cpu}; Python {platform.python_version()}; numpy {np.__version__}. "
        "The machine was shared with other jobs while this ran, so these are upper bounds.",
        "",
        "Per frame: build the sensor-frame primitives, cast every ray, sensor model (dropout, range noise, "
        "intensity), labels with point counts and occlusion. Writing files is not included.",
        "",
        "| sensor | rays (beams x columns) | points / frame | boxes in range | median s / frame | max s / frame | scene generation s |",
        "|---|---|---|---|---|---|---|",
        *rows, ""])
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
