"""Benchmark submission files from pointmae predictions, one subcommand per benchmark (COMMANDS below).

    # KITTI: one 16-field txt per frame id, zipped, validated
    python tools/submit.py kitti --predictions PRED.pkl --kitti-root ROOT --out SUB.zip
           [--subset testing] [--split test | --ids-file IDS.txt | --official-test-ids]
    python tools/submit.py kitti --validate-only SUB.zip --kitti-root ROOT [--split test ...]

Predictions (--predictions, read by pointmae.submission.load_predictions): the file
pointmae.submission.save_predictions writes (tools/finetune_det.py does), or the bare contract saved
with torch.save (.pt) or pickle (.pkl): a list with one dict per frame {"frame_id": str,
"boxes": (M, 7|9) float in the pointmae sensor frame,
"scores": (M,), "names": (M,) str, optional "attributes" (M,)}. These files are unpickled: load only
files you trust.

    # nuScenes: results JSON in the global frame (<= 500 boxes per sample), validated;
    # --evaluate also runs the devkit
    python tools/submit.py nuscenes --predictions preds.pt --dataroot DATA/nuscenes --version v1.0-test \\
           --split test --out results_nusc.json [--evaluate]
    python tools/submit.py nuscenes --validate-only --out results_nusc.json --dataroot ... --version ... --split ...

    # Waymo: sharded Submission protos packed as OUT/<method>.tar.gz, then validated
    python tools/submit.py waymo --predictions preds.pt --split-tfrecords SEGMENTS*.tfrecord --out OUT \\
        --account-name you@example.com --method-name my-method [--authors "A B" ...] [--num-shards 4]
    python tools/submit.py waymo --validate OUT/my-method.tar.gz --split-list test_frames.txt

Waymo's split (every frame the benchmark expects) comes from the tfrecords (--split-tfrecords), converted
frames (--split-converted, tools/convert_waymo.py) or a text file of "context_name timestamp_micros
[frame_id]" lines (--split-list). Frame ids must be those the matching pointmae reader gives.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_predictions(path):
    from pointmae.submission import load_predictions as load   # imported when used: --help stays fast
    return load(path)


def _usage_error(message):
    raise SystemExit(f"usage error: {message}")


# ------------------------------------------------------------------------------------------- kitti
def add_kitti(subparsers):
    p = subparsers.add_parser("kitti", help="KITTI object benchmark zip (one 16-field txt per frame)")
    p.add_argument("--predictions", help="predictions .pkl (pointmae.submission.save_predictions)")
    p.add_argument("--out", help="the submission .zip to write")
    p.add_argument("--validate-only", metavar="ZIP", help="only check an existing zip (or folder) and exit")
    p.add_argument("--kitti-root", required=True, help="KITTI root with <subset>/calib (and image_2 for sizes)")
    p.add_argument("--subset", default="testing", help="folder under the root: testing (benchmark) or training")
    ids = p.add_mutually_exclusive_group()
    ids.add_argument("--split", help="read ROOT/ImageSets/<split>.txt")
    ids.add_argument("--ids-file", help="a text file with one frame id per line")
    ids.add_argument("--official-test-ids", action="store_true", help="the 7518 ids 000000..007517")


def run_kitti(args):
    from pointmae.submission.kitti import (official_test_ids, read_frame_ids, read_frame_info,
                                           validate_kitti_submission, write_kitti_submission)
    if bool(args.validate_only) == bool(args.predictions or args.out):
        _usage_error("kitti: give either --predictions and --out, or --validate-only ZIP")
    if args.official_test_ids:
        frame_ids = official_test_ids()
    else:
        frame_ids = read_frame_ids(args.kitti_root, args.split, args.ids_file, args.subset)
    if args.validate_only:
        _, sizes = read_frame_info(args.kitti_root, frame_ids, args.subset)
        validation = validate_kitti_submission(args.validate_only, frame_ids, sizes)
        print(validation)
        for line in validation.violations[:50]:
            print("  " + line)
        return 0 if validation.ok else 1
    if not (args.predictions and args.out):
        _usage_error("kitti: --predictions and --out are both required to write a submission")
    calibrations, sizes = read_frame_info(args.kitti_root, frame_ids, args.subset)
    report = write_kitti_submission(load_predictions(args.predictions), calibrations, frame_ids, args.out, sizes)
    print(report)
    print(validate_kitti_submission(args.out, frame_ids, sizes))
    return 0


# ------------------------------------------------------------------------------------------ nuScenes
def add_nuscenes(subparsers):
    p = subparsers.add_parser("nuscenes", help="nuScenes detection results JSON (global frame, <= 500 boxes/sample)")
    p.add_argument("--predictions", help="predictions file (.pt or .pkl); not needed with --validate-only")
    p.add_argument("--dataroot", required=True, help="nuScenes root with the <version>/ JSON tables")
    p.add_argument("--version", required=True, help="table folder, e.g. v1.0-test, v1.0-trainval, v1.0-mini")
    p.add_argument("--split", required=True, help="test, val, mini_val, ... or a split of <version>/splits.json")
    p.add_argument("--out", required=True, help="results JSON to write (or to check with --validate-only)")
    p.add_argument("--info", help="take the sensor poses from this mmdet3d info pickle instead of the tables")
    p.add_argument("--axes", default="pointmae", choices=["pointmae", "nuscenes"],
                   help="frame the boxes are in: pointmae sensor axes (x forward; the readers' default) or raw LIDAR_TOP")
    for flag in ("camera", "radar", "map", "external"):
        p.add_argument(f"--use-{flag}", action="store_true", help=f"meta.use_{flag} = true")
    p.add_argument("--validate-only", action="store_true", help="only check an existing --out file")
    p.add_argument("--evaluate", action="store_true",
                   help="also run the devkit's DetectionEval on the split (needs its annotations)")
    p.add_argument("--eval-dir", help="where the metrics JSONs go with --evaluate")


def run_nuscenes(args):
    from pointmae.data.errors import DataError
    from pointmae.submission import nuscenes as nus
    try:
        _run_nuscenes(args, nus)
    except (nus.SubmissionError, DataError) as exc:   # rule violations / bad files: the message, no traceback
        raise SystemExit(f"nuscenes: {exc}") from None


def _run_nuscenes(args, nus):
    tokens = nus.split_sample_tokens(args.dataroot, args.version, args.split)
    if not args.validate_only:
        if not args.predictions:
            raise SystemExit("nuscenes: --predictions is required unless --validate-only")
        predictions = load_predictions(args.predictions)
        poses = (nus.sensor_poses_from_info(args.info, args.axes) if args.info
                 else nus.sensor_poses_from_tables(args.dataroot, args.version, args.axes))
        meta = {"use_camera": args.use_camera, "use_lidar": True, "use_radar": args.use_radar,
                "use_map": args.use_map, "use_external": args.use_external}
        results = nus.build_results(predictions, poses, tokens, meta=meta)
        nus.write_results(args.out, results, tokens)
        boxes = sum(len(v) for v in results["results"].values())
        print(f"nuscenes: wrote {args.out}: {len(tokens)} samples of split {args.split!r}, {boxes} boxes")
    else:
        nus.validate_results(args.out, tokens)
        print(f"nuscenes: {args.out} is valid for split {args.split!r} ({len(tokens)} samples)")
    if args.evaluate:
        from pointmae.eval.nuscenes import evaluate_nuscenes, format_metrics
        summary = evaluate_nuscenes(args.out, args.dataroot, args.version, args.split, output_dir=args.eval_dir)
        print(format_metrics(summary))


# ---------------------------------------------------------------------------------------------- Waymo
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
        predictions = load_predictions(args.predictions)
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


def add_waymo(subparsers) -> None:
    p = subparsers.add_parser("waymo", help="Waymo Open Dataset 3D detection submission (.tar.gz of Submission protos)")
    p.add_argument("--predictions", help="predictions file (.pt or .pkl; see the module docstring)")
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


COMMANDS = {"kitti": (add_kitti, run_kitti), "nuscenes": (add_nuscenes, run_nuscenes),
            "waymo": (add_waymo, run_waymo)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    subparsers = parser.add_subparsers(dest="benchmark", required=True)
    for add, _ in COMMANDS.values():
        add(subparsers)
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.benchmark][1](args) or 0
    except (ValueError, FileNotFoundError) as exc:          # bad input: one clear line, not a traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
