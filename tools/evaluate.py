"""Evaluate detections with a benchmark's protocol (CPU only).

    python tools/evaluate.py kitti --results RESULT_DIR --labels LABEL_DIR [--ids-file IDS.txt]
           [--classes Car Pedestrian Cyclist] [--json OUT.json]

kitti: a folder of 16-field KITTI result txts (with score) against a label_2 folder; prints AP_R40
and AP_R11 for 2D, BEV, 3D and AOS (strict and loose IoU sets), see pointmae/eval/kitti.py.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def add_kitti_arguments(p):
    p.add_argument("--results", required=True, help="folder of result txts (16 fields, score last)")
    p.add_argument("--labels", required=True, help="folder of ground-truth label txts (label_2)")
    p.add_argument("--ids-file", help="evaluate these frame ids (default: every result file)")
    p.add_argument("--classes", nargs="+", default=["Car", "Pedestrian", "Cyclist"])
    p.add_argument("--json", help="also write {metric: AP} here")


def run_kitti(args, parser):
    from pointmae.eval.kitti import evaluate_kitti_folders
    ids = None
    if args.ids_file:
        with open(args.ids_file) as f:
            ids = [line.strip() for line in f if line.strip()]
    result = evaluate_kitti_folders(args.results, args.labels, ids, classes=tuple(args.classes))
    print(result.summary())
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result.to_flat_dict(), f, indent=1, sort_keys=True)
    return 0


# name: (help, add_arguments, run)
SUBCOMMANDS = {
    "kitti": ("KITTI object benchmark: result txts against label txts", add_kitti_arguments, run_kitti),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="benchmark", required=True)
    parsers = {}
    for name, (help_text, add_arguments, _) in SUBCOMMANDS.items():
        parsers[name] = sub.add_parser(name, help=help_text)
        add_arguments(parsers[name])
    args = parser.parse_args(argv)
    try:
        return SUBCOMMANDS[args.benchmark][2](args, parsers[args.benchmark])
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
