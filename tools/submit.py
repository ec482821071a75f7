"""Write (and check) benchmark submission files from saved predictions.

    python tools/submit.py kitti --predictions PRED.pkl --kitti-root ROOT --out SUB.zip
           [--subset testing] [--split test | --ids-file IDS.txt | --official-test-ids]
    python tools/submit.py kitti --validate-only SUB.zip --kitti-root ROOT [--split test ...]

PRED.pkl is pointmae's prediction file (pointmae/submission/__init__.py: save_predictions). The
frame ids come from --ids-file, ROOT/ImageSets/<split>.txt, --official-test-ids (000000..007517),
or, with none of these, every calibration file under ROOT/<subset>/calib. Each benchmark is one
subcommand: a function that adds its arguments and one that runs it (SUBCOMMANDS below).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# ------------------------------------------------------------------------------------------- kitti
def add_kitti_arguments(p):
    p.add_argument("--predictions", help="predictions .pkl (pointmae.submission.save_predictions)")
    p.add_argument("--out", help="the submission .zip to write")
    p.add_argument("--validate-only", metavar="ZIP", help="only check an existing zip (or folder) and exit")
    p.add_argument("--kitti-root", required=True, help="KITTI root with <subset>/calib (and image_2 for sizes)")
    p.add_argument("--subset", default="testing", help="folder under the root: testing (benchmark) or training")
    ids = p.add_mutually_exclusive_group()
    ids.add_argument("--split", help="read ROOT/ImageSets/<split>.txt")
    ids.add_argument("--ids-file", help="a text file with one frame id per line")
    ids.add_argument("--official-test-ids", action="store_true", help="the 7518 ids 000000..007517")


def run_kitti(args, parser):
    from pointmae.submission import load_predictions
    from pointmae.submission.kitti import (official_test_ids, read_frame_ids, read_frame_info,
                                           validate_kitti_submission, write_kitti_submission)
    if bool(args.validate_only) == bool(args.predictions or args.out):
        parser.error("kitti: give either --predictions and --out, or --validate-only ZIP")
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
        parser.error("kitti: --predictions and --out are both required to write a submission")
    calibrations, sizes = read_frame_info(args.kitti_root, frame_ids, args.subset)
    report = write_kitti_submission(load_predictions(args.predictions), calibrations, frame_ids, args.out, sizes)
    print(report)
    print(validate_kitti_submission(args.out, frame_ids, sizes))
    return 0


# name: (help, add_arguments, run)
SUBCOMMANDS = {
    "kitti": ("KITTI object benchmark zip (one 16-field txt per frame)", add_kitti_arguments, run_kitti),
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
