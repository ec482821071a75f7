"""Generate a synthetic LiDAR data set in the KITTI layout (plus sequence metadata).

    python tools/make_synthetic.py OUT_DIR --frames 100 --seed 0 [--sensor hdl64|nuscenes32]
           [--frames-per-sequence 20] [--labels camera|all] [--motion-distortion] [--bev 3]

Deterministic: the same arguments give byte-identical files. See pointmae/data/synthetic/.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pointmae.data.synthetic import SENSOR_PRESETS, SyntheticWorld, sensor_preset  # noqa: E402
from pointmae.data.synthetic.kitti_writer import write_synthetic_kitti  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir")
    p.add_argument("--frames", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sensor", default="hdl64", choices=sorted(SENSOR_PRESETS))
    p.add_argument("--frames-per-sequence", type=int, default=20)
    p.add_argument("--labels", default="camera", choices=["camera", "all"],
                   help="camera: only objects in the front camera (like KITTI); all: every agent in range")
    p.add_argument("--motion-distortion", action="store_true",
                   help="report each point in the sensor frame of its firing time (uncompensated sweep)")
    p.add_argument("--bev", type=int, default=0, help="also write bird's-eye-view PNGs of the first N frames")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.frames < 1:
        p.error("--frames must be >= 1")
    world = SyntheticWorld(seed=args.seed, sensor=sensor_preset(args.sensor),
                           frames_per_sequence=args.frames_per_sequence, motion_distortion=args.motion_distortion)
    out = write_synthetic_kitti(args.out_dir, world, args.frames, label_fov=args.labels,
                                progress=not args.no_progress)
    if args.bev:
        from pointmae.data.kitti import KittiObjectDataset
        from pointmae.viz.bev import save_frame_bev
        dataset = KittiObjectDataset(out, split="trainval")
        for i in range(min(args.bev, len(dataset))):
            frame = dataset[i]
            save_frame_bev(frame, out / "bev" / f"{frame.frame_id}.png")
    print(f"wrote {args.frames} frames to {out}")


if __name__ == "__main__":
    main()
