"""Benchmark submission files from detections, one subcommand per benchmark.

Predictions (--predictions) are a pickle of the shared contract: a list, one entry per frame, of
{"frame_id": str, "boxes": (M, 7) float (pointmae sensor frame), "scores": (M,), "names": (M,) str}.

    # Waymo: sharded Submission protos packed as OUT/<method>.tar.gz, then validated
    python tools/submit.py waymo --predictions preds.pkl --split-tfrecords SEGMENTS*.tfrecord --out OUT \\
        --account-name you@example.com --method-name my-method [--authors "A B" ...] [--num-shards 4]
    python tools/submit.py waymo --validate OUT/my-method.tar.gz --split-list test_frames.txt

The split (every frame the benchmark expects) comes from the tfrecords (--split-tfrecords), converted
frames (--split-converted, tools/convert_waymo.py) or a text file of "context_name timestamp_micros
[frame_id]" lines (--split-list). Frame ids must be those the matching pointmae reader gives.
"""
import argparse
import json
import pickle
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _waymo_split(args):
    from pointmae.data.waymo import read_tfrecord_frames
    from pointmae.submission.waymo import split_frames_from_converted, split_frames_from_list
    given = [bool(args.split_tfrecords), bool(args.split_converted), bool(args.split_list)]
    if sum(given) != 1:
        raise SystemExit("waymo: give exactly one of --split-tfrecords, --split-converted, --split-list")
    if args.split_tfrecords:
        return [frame for path in args.split_tfrecords for frame in read_tfrecord_frames(path)]
    if args.split_converted:
        return split_frames_from_converted(args.split_converted)
    return split_frames_from_list(args.split_list)


def run_waymo(args) -> int:
    from pointmae.submission.waymo import WaymoSubmissionMeta, validate_waymo_submission, write_waymo_submission
    split = _waymo_split(args)
    archive = args.validate
    if archive is None:
        if not (args.predictions and args.out and args.account_name and args.method_name):
            raise SystemExit("waymo: writing needs --predictions, --out, --account-name and --method-name "
                             "(or --validate ARCHIVE to check an existing file)")
        with open(args.predictions, "rb") as f:
            predictions = pickle.load(f)
        meta = WaymoSubmissionMeta(
            account_name=args.account_name, unique_method_name=args.method_name, authors=args.authors,
            affiliation=args.affiliation, description=args.description, method_link=args.method_link,
            sensor_type=args.sensor_type, number_past_frames_exclude_current=args.past_frames,
            number_future_frames_exclude_current=args.future_frames, object_types=tuple(args.object_types),
            latency_second=args.latency)
        archive = write_waymo_submission(predictions, split, args.out, meta, num_shards=args.num_shards,
                                         min_score=args.min_score)
        print(f"wrote {archive}")
    report = validate_waymo_submission(archive, split, require_all_frames=args.require_all_frames)
    missing = report.pop("frames_without_objects")
    report["frames_without_objects"] = len(missing)
    print(json.dumps(report, indent=1, default=str))
    if missing:
        print(f"note: {len(missing)} of {len(split)} split frames have no object, e.g. {missing[:3]}")
    return 0


def add_waymo_parser(subparsers) -> None:
    p = subparsers.add_parser("waymo", help="Waymo Open Dataset 3D detection submission (.tar.gz of Submission protos)")
    p.add_argument("--predictions", help="pickle of the prediction list (see the module docstring)")
    p.add_argument("--out", help="output folder for the shards and the .tar.gz")
    p.add_argument("--validate", metavar="ARCHIVE", help="only validate an existing .tar.gz against the split")
    p.add_argument("--split-tfrecords", nargs="+", metavar="TFRECORD", help="the split's segment tfrecords")
    p.add_argument("--split-converted", metavar="DIR", help="the split converted by tools/convert_waymo.py")
    p.add_argument("--split-list", metavar="TXT", help="lines 'context_name timestamp_micros [frame_id]'")
    p.add_argument("--account-name", help="the e-mail registered at waymo.com/open")
    p.add_argument("--method-name", help="unique method name shown on the leaderboard")
    p.add_argument("--authors", nargs="*", default=[])
    p.add_argument("--affiliation", default="")
    p.add_argument("--description", default="")
    p.add_argument("--method-link", default="")
    p.add_argument("--sensor-type", default="LIDAR_ALL",
                   choices=["LIDAR_ALL", "LIDAR_TOP", "CAMERA_ALL", "CAMERA_LIDAR_TOP", "CAMERA_LIDAR_ALL"])
    p.add_argument("--past-frames", type=int, default=0, help="number_past_frames_exclude_current (frames stacked)")
    p.add_argument("--future-frames", type=int, default=0, help="number_future_frames_exclude_current")
    p.add_argument("--object-types", nargs="+", default=["Vehicle", "Pedestrian", "Cyclist"])
    p.add_argument("--latency", type=float, default=None, help="self-reported latency in seconds")
    p.add_argument("--num-shards", type=int, default=4)
    p.add_argument("--min-score", type=float, default=0.03, help="drop objects below this score (official tool: 0.03)")
    p.add_argument("--require-all-frames", action="store_true", help="fail when a split frame has no object")
    p.set_defaults(run=run_waymo)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    subparsers = parser.add_subparsers(dest="benchmark", required=True)
    add_waymo_parser(subparsers)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except ValueError as exc:          # bad input: one clear line, not a traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
