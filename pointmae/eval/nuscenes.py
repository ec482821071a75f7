"""nuScenes detection metrics by the official devkit: nuscenes-devkit's DetectionEval, run unchanged.

The metrics (Caesar et al., CVPR 2020, Sec. 4.1; devkit eval/detection): mAP over the 10 classes
and the centre-distance thresholds 0.5 / 1 / 2 / 4 m, the true-positive errors mATE (m), mASE
(1 - IoU), mAOE (rad), mAVE (m/s), mAAE (1 - accuracy) at 2 m, and
NDS = (5 mAP + sum over the five errors of (1 - min(1, error))) / 10.

Environment: nuscenes-devkit 1.2.0 declares numpy<2; pointmae's environment has numpy 2. The devkit
is installed with `pip install --no-deps` (requirements-nodeps.txt, run.sh) next to the modules its
evaluation imports (requirements-dev.txt); tests/eval/test_nuscenes_eval.py runs this evaluation end
to end on numpy 2 against metrics derived by hand.

Splits: the devkit's predefined splits (val, test, mini_val, ...) need the matching table version;
any other split name is read from <dataroot>/<version>/splits.json ({name: [scene names]}), the
devkit's own custom-split mechanism.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

from pointmae.submission.nuscenes import load_results, split_sample_tokens, validate_results

TP_ERROR_NAMES = {"trans_err": "mATE", "scale_err": "mASE", "orient_err": "mAOE", "vel_err": "mAVE",
                  "attr_err": "mAAE"}


def _devkit():
    try:
        from nuscenes import NuScenes
        from nuscenes.eval.common.config import config_factory
        from nuscenes.eval.detection.evaluate import DetectionEval
    except ImportError as exc:
        raise ImportError(f"nuScenes evaluation needs nuscenes-devkit ({exc}); install it with "
                          "`pip install --no-deps -r requirements-nodeps.txt` after requirements-dev.txt "
                          "(./run.sh setup does both)") from None
    return NuScenes, config_factory, DetectionEval


def evaluate_nuscenes(results_path, dataroot, version: str, split: str, output_dir=None,
                      config: str = "detection_cvpr_2019", validate: bool = True, verbose: bool = False) -> dict:
    """Run the devkit's DetectionEval on a results JSON and return its metrics summary.

    results_path: the results JSON (pointmae.submission.nuscenes.write_results).
    dataroot / version: the nuScenes root and its table folder name (e.g. "v1.0-trainval").
    split: "val", "mini_val", ... or a custom split of <dataroot>/<version>/splits.json.
    output_dir: where metrics_summary.json and metrics_details.json go (a temporary folder if None).
    validate: check the results against the format rules and the split's tokens first (clearer
        messages than the devkit's asserts).
    Returns the devkit's summary: "mean_ap", "nd_score", "tp_errors" {trans_err, scale_err,
    orient_err, vel_err, attr_err}, "mean_dist_aps" {class: AP}, "label_aps" {class: {"0.5": AP, ...}},
    "label_tp_errors" {class: {error: value}}, "tp_scores", "eval_time", plus "meta" (the results'
    meta block) and "short" {mAP, mATE, ..., NDS}.
    """
    results_path = Path(results_path)
    if not results_path.is_file():
        raise FileNotFoundError(f"results_path: no results file at {results_path}")
    table_dir = Path(dataroot) / version
    if not table_dir.is_dir():
        raise FileNotFoundError(f"dataroot/version: no nuScenes table folder {table_dir}")
    if validate:
        validate_results(load_results(results_path), split_sample_tokens(dataroot, version, split),
                         where=str(results_path))
    NuScenes, config_factory, DetectionEval = _devkit()
    nusc = NuScenes(version=version, dataroot=str(dataroot), verbose=verbose)
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(output_dir) if output_dir is not None else Path(scratch)
        evaluator = DetectionEval(nusc, config=config_factory(config), result_path=str(results_path),
                                  eval_set=split, output_dir=str(out), verbose=verbose)
        metrics, metric_data = evaluator.evaluate()
        # Through JSON: plain dicts with the string keys of metrics_summary.json ("0.5", ...); the
        # devkit's own objects are defaultdicts keyed by floats, where a wrong key silently reads 0.
        summary = json.loads(json.dumps(metrics.serialize()))
        summary["meta"] = dict(evaluator.meta)
        if output_dir is not None:   # the same two files the devkit's main() writes (without its plots)
            (out / "metrics_summary.json").write_text(json.dumps(summary, indent=2))
            (out / "metrics_details.json").write_text(json.dumps(metric_data.serialize(), indent=2))
    summary["short"] = {"mAP": summary["mean_ap"],
                        **{short: summary["tp_errors"][name] for name, short in TP_ERROR_NAMES.items()},
                        "NDS": summary["nd_score"]}
    return summary


def format_metrics(summary: dict) -> str:
    """The devkit's printout as text: headline metrics, then one row per class."""
    lines = [" ".join(f"{k} {v:.4f}" for k, v in summary["short"].items())]
    lines.append(f"{'class':<22}{'AP':>7}" + "".join(f"{short[1:]:>7}" for short in TP_ERROR_NAMES.values()))
    for name, ap in summary["mean_dist_aps"].items():
        errors = summary["label_tp_errors"][name]
        lines.append(f"{name:<22}{ap:>7.3f}" + "".join(f"{errors[k]:>7.3f}" for k in TP_ERROR_NAMES))
    return "\n".join(lines)


__all__ = ["evaluate_nuscenes", "format_metrics"]
