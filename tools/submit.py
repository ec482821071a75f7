"""Benchmark submission files from pointmae predictions, one subcommand per benchmark.

    python tools/submit.py nuscenes --predictions preds.pt --dataroot DATA/nuscenes --version v1.0-test \\
           --split test --out results_nusc.json [--evaluate]
    python tools/submit.py nuscenes --validate-only --out results_nusc.json --dataroot ... --version ... --split ...

Predictions: a list with one dict per frame {"frame_id", "boxes" (M, 9), "scores" (M,), "names" (M,),
optional "attributes" (M,)} saved with torch.save (.pt) or pickle (.pkl); see
pointmae/submission/nuscenes.py. These files are unpickled: load only files you trust.
"""
import argparse
import os
import pickle
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_predictions(path):
    """The list of per-frame prediction dicts saved with torch.save (.pt/.pth) or pickle (.pkl)."""
    if not os.path.isfile(path):
        raise SystemExit(f"--predictions: no file at {path}")
    if path.endswith((".pt", ".pth")):
        import torch
        predictions = torch.load(path, map_location="cpu", weights_only=False)
    else:
        with open(path, "rb") as f:
            predictions = pickle.load(f)
    if not isinstance(predictions, (list, tuple)) or not all(isinstance(p, dict) for p in predictions):
        raise SystemExit(f"--predictions: {path} must hold a list of per-frame dicts; got {type(predictions).__name__}")
    return list(predictions)


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


COMMANDS = {"nuscenes": (add_nuscenes, run_nuscenes)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    subparsers = parser.add_subparsers(dest="benchmark", required=True)
    for add, _ in COMMANDS.values():
        add(subparsers)
    args = parser.parse_args(argv)
    COMMANDS[args.benchmark][1](args)


if __name__ == "__main__":
    main()
