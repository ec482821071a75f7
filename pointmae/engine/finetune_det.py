"""`tools/finetune_det.py CONFIG [--pretrained CKPT] [--freeze-backbone] [--backbone-lr-mult X]
[--label-fraction F] [--work-dir DIR] [key=value ...]`: pre-trained encoder -> trained detector ->
predictions on the validation split.

Steps: build the detector from the config; load `vfe.` / `backbone_3d.` from --pretrained (a pointmae
checkpoint or an OpenPCDet one; the matched / missing / unexpected report goes to the console and to
<work_dir>/pretrained_load.txt, and a file that matches nothing is refused); optionally freeze the
encoder or give it a smaller learning rate; train on a seeded fraction of the labelled frames through
the engine's Trainer (checkpoints, resumption, logging as for pre-training); re-estimate the BatchNorm
statistics on a few training batches (--precise-bn, see recalibrate_batchnorm; final_model.pt is
rewritten with them); then run the detector on
the validation frames and write <work_dir>/predictions.pkl (pointmae.submission.save_predictions: one
entry per frame, "frame_id", "boxes" (M, 7|9) float64 sensor frame, "scores", "names"; the input of
tools/submit.py), <work_dir>/bev/*.png (detections in red next to the ground truth in green) and
<work_dir>/metrics.json: where the validation data is KITTI-shaped (data.source kitti, or the synthetic
world with its KITTI-like camera rig) the KITTI protocol of pointmae.eval.kitti (moderate AP_R40, BEV
and 3D, strict overlaps, per class among Car / Pedestrian / Cyclist and their mean); for other sources
(nuScenes, Waymo: their own evaluators run through tools/submit.py) a quick BEV AP (pointmae.eval.bev_ap).
"""
from __future__ import annotations

import argparse
import inspect
import json
import signal
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from pointmae.config import Config, ConfigError, DetectionDataConfig, config_to_dict
from pointmae.data.detection import (DetectionDataset, box_names_of, class_balanced_indices, detection_augmentation,
                                     label_subset)
from pointmae.data.errors import DataError
from pointmae.data.gt_sampling import GTDatabase
from pointmae.data.lidar_datasets import LIDAR_DATASETS, build_lidar_dataset
from pointmae.engine import distributed as D
from pointmae.engine.builders import build_model
from pointmae.engine.checkpoint import CheckpointError, atomic_torch_save
from pointmae.engine.run import resolve_config, resume_trainer, start_run
from pointmae.engine.trainer import NonFiniteLossError, Trainer, move_to_device
from pointmae.eval.kitti import CLASSES as KITTI_CLASSES, evaluate_kitti_predictions, evaluate_synthetic_predictions
from pointmae.models.detection import CenterPoint
from pointmae.models.pretrained import ENCODER_PREFIXES, PretrainedLoadError, load_pretrained_encoder
from pointmae.submission import save_predictions

NUM_BEV_PICTURES = 4


def build_detection_datasets(cfg: DetectionDataConfig, work_dir: Optional[Path] = None,
                             log=print) -> tuple[DetectionDataset, Optional[DetectionDataset]]:
    """(training dataset with augmentation on the labelled subset, validation dataset or None when
    data.val_args is empty). The GT database is built from the labelled subset only (cached in
    work_dir/gt_database.pt when work_dir is given)."""
    train_reader = _frame_reader(cfg, "train_args")
    # Both readers before the GT database: a bad validation path fails at once, not after a pass
    # over every training frame.
    val_reader = _frame_reader(cfg, "val_args") if cfg.val_args else None
    indices = label_subset(len(train_reader), cfg.label_fraction, cfg.label_seed)
    log(f"training frames: {len(indices)} of {len(train_reader)} (label_fraction={cfg.label_fraction}, "
        f"label_seed={cfg.label_seed})")
    labelled = indices
    if cfg.class_balanced_resampling:
        names = [box_names_of(train_reader, int(i)) for i in indices]
        indices = indices[class_balanced_indices(names, cfg.class_names, cfg.seed)]
        log(f"class-balanced resampling (CBGS): {len(indices)} training samples from {len(labelled)} frames")
    transform = None
    if cfg.augment:
        database = None
        if cfg.gt_sampling and cfg.gt_sample_counts:
            database = _gt_database(cfg, train_reader, labelled, work_dir, log)   # each frame once
        transform = detection_augmentation(database, cfg.gt_sample_counts, cfg.flip_x, cfg.flip_y, cfg.rotation,
                                           cfg.scale)
    train = DetectionDataset(train_reader, cfg.class_names, indices, transform, cfg.crop_range, cfg.seed,
                             cfg.min_points_in_box, cfg.channel_scales, cfg.channel_tanh)
    val = None
    if val_reader is not None:
        val = DetectionDataset(val_reader, cfg.class_names, None, None, cfg.crop_range, cfg.seed,
                               cfg.min_points_in_box, cfg.channel_scales, cfg.channel_tanh)
    return train, val


def _frame_reader(cfg: DetectionDataConfig, which: str):
    """The frame reader of data.source for data.<which> (train_args / val_args). Errors name the
    config entry as well as the file: the configs ship with placeholder paths (data/kitti, ...) that
    a user points at the dataset, so a wrong path or a misspelt key is the first thing to go wrong."""
    args = getattr(cfg, which)
    factory = LIDAR_DATASETS.get(cfg.source)
    if factory is not None:
        try:
            inspect.signature(factory).bind(**args)
        except TypeError as exc:
            raise ConfigError(f"data.{which} {args} does not fit data.source {cfg.source!r} "
                              f"({factory.__name__}): {exc}") from None
    try:
        return build_lidar_dataset(cfg.source, **args)
    except DataError as exc:
        raise DataError(exc.path, f"{exc.message} (from data.{which}: {args})", exc.line) from None


def _gt_database(cfg: DetectionDataConfig, reader, indices: np.ndarray, work_dir: Optional[Path], log) -> GTDatabase:
    used = indices if cfg.gt_database_frames <= 0 else indices[:cfg.gt_database_frames]
    cache = Path(work_dir) / "gt_database.pt" if work_dir is not None else None
    key = {"source": cfg.source, "train_args": cfg.train_args, "frames": [int(i) for i in used],
           "classes": list(cfg.class_names), "min_points": cfg.gt_min_points}
    if cache is not None and cache.is_file() and cache.with_suffix(".json").is_file():
        if json.loads(cache.with_suffix(".json").read_text()) == key:
            return GTDatabase.load(cache)
    database = GTDatabase.build((reader[int(i)] for i in used), cfg.class_names, cfg.gt_min_points)
    log(f"GT database from {len(used)} labelled frames: {database.counts()}")
    if cache is not None:
        database.save(cache)
        cache.with_suffix(".json").write_text(json.dumps(key))
    return database


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="finetune_det.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="YAML config (configs/detection/<dataset>.yaml)")
    p.add_argument("--pretrained", metavar="CKPT", help="pre-training checkpoint (pointmae or OpenPCDet)")
    p.add_argument("--freeze-backbone", action="store_true", help="do not train vfe./backbone_3d.")
    p.add_argument("--backbone-lr-mult", type=float, default=1.0, metavar="X",
                   help="learning-rate multiplier of vfe./backbone_3d. (default 1)")
    p.add_argument("--label-fraction", type=float, metavar="F", help="train on a seeded fraction F of the labelled "
                   "frames (same as data.label_fraction=F)")
    p.add_argument("--work-dir", help="run directory (default: work_dir from the config)")
    p.add_argument("--precise-bn", type=int, default=8, metavar="N", help="re-estimate BatchNorm statistics on N "
                   "training batches after training (default 8; 0: keep the running averages)")
    p.add_argument("--no-train", action="store_true", help="only run inference (weights from --weights)")
    p.add_argument("--weights", metavar="FILE", help="with --no-train: detector weights (final_model.pt)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
    return p


def resolve(args: argparse.Namespace) -> Config:
    """The config with its key=value overrides and --work-dir (as pre-training resolves it), plus
    --label-fraction; checked for what fine-tuning needs."""
    extra = [] if args.label_fraction is None else [f"data.label_fraction={args.label_fraction}"]
    cfg = resolve_config(argparse.Namespace(**{**vars(args), "overrides": [*args.overrides, *extra]}))
    if cfg.model.name != "centerpoint" or cfg.data.name != "detection":
        raise ConfigError(f"{args.config}: finetune_det.py needs model.name=centerpoint and data.name=detection, "
                          f"got {cfg.model.name} / {cfg.data.name}")
    if list(cfg.model.class_names) != list(cfg.data.class_names):
        raise ConfigError(f"{args.config}: model.class_names {cfg.model.class_names} and data.class_names "
                          f"{cfg.data.class_names} must be the same list")
    if not 0.0 < cfg.data.label_fraction <= 1.0:
        raise ConfigError(f"data.label_fraction / --label-fraction must be in (0, 1], got {cfg.data.label_fraction}")
    if args.no_train and not args.weights:
        raise ConfigError("--no-train needs --weights FILE (the detector to run), e.g. <work_dir>/final_model.pt")
    if args.backbone_lr_mult <= 0:
        raise ConfigError(f"--backbone-lr-mult must be > 0, got {args.backbone_lr_mult}")
    return cfg


def finetune(cfg: Config, pretrained: Optional[str] = None, freeze_backbone: bool = False,
             backbone_lr_mult: float = 1.0, train: bool = True, weights: Optional[str] = None,
             precise_bn_batches: int = 8, log=print) -> dict:
    """Everything the CLI does; returns {"trainer", "model", "predictions", "metrics", "load_report"}."""
    info, work_dir = start_run(cfg)
    model = build_model(cfg.model)
    report = None
    if pretrained:
        report = load_pretrained_encoder(model, pretrained)
        log(report.summary())
        warning = channel_units_warning(pretrained, cfg.data)
        if warning:
            log(warning)
        (work_dir / "pretrained_load.txt").write_text(report.summary() + "\n")
    if freeze_backbone:
        if not pretrained:
            log("warning: --freeze-backbone without --pretrained freezes a randomly initialised encoder")
        frozen = model.freeze(ENCODER_PREFIXES)
        log(f"frozen: {len(frozen)} parameter tensors under {'/'.join(ENCODER_PREFIXES)}")
    train_set, val_set = build_detection_datasets(cfg.data, work_dir, log)
    trainer = None
    if train:
        mults = {p: backbone_lr_mult for p in ENCODER_PREFIXES} if backbone_lr_mult != 1.0 else None
        trainer = Trainer(model, train_set, cfg.train, cfg.optim, cfg.sched, work_dir,
                          config_dict=config_to_dict(cfg), info=info, lr_mults=mults)
        resume_trainer(trainer, None, cfg.train.auto_resume)
        trainer.fit()
        model = trainer.model
        if trainer.interrupted:      # SIGTERM: the checkpoint is saved; the same command continues the run
            log(f"stopped by SIGTERM at step {trainer.step}; run the same command again to continue")
            return {"trainer": trainer, "model": model, "load_report": report, "predictions": None,
                    "metrics": None}
        if precise_bn_batches > 0:
            model.train()
            loader = torch.utils.data.DataLoader(train_set, batch_size=cfg.train.batch_size, shuffle=True,
                                                 collate_fn=train_set.collate_fn, generator=torch.Generator().manual_seed(0))
            batches = (move_to_device(b, info.device) for _, b in zip(range(precise_bn_batches), loader))
            log(f"BatchNorm statistics re-estimated on {recalibrate_batchnorm(model, batches)} training batches")
            if info.is_main:   # final_model.pt holds the weights that the predictions below come from
                atomic_torch_save({"format": "pointmae-weights", "format_version": 1, "model": model.state_dict(),
                                   "config": config_to_dict(cfg), "step": trainer.step, "precise_bn_batches":
                                   precise_bn_batches}, work_dir / "final_model.pt")
    elif weights:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state.get("model", state))
    result = {"trainer": trainer, "model": model, "load_report": report, "predictions": None, "metrics": None}
    if val_set is not None and info.is_main:
        predictions = predict_dataset(model, val_set, cfg.train.batch_size, info.device)
        save_predictions(work_dir / "predictions.pkl", predictions)
        draw_predictions(val_set, predictions, work_dir / "bev", cfg.model.point_range)
        metrics = validation_metrics(cfg.data, val_set, predictions)
        (work_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        log(f"validation ({len(predictions)} frames): " + json.dumps(metrics))
        result.update(predictions=predictions, metrics=metrics)
    return result


def channel_units_warning(pretrained: str, data: DetectionDataConfig) -> Optional[str]:
    """A warning when the pre-training run recorded other channel units (data.channel_scales /
    channel_tanh, in the config a pointmae checkpoint carries) than the detection config's: the encoder
    would see inputs in units it never learnt on (e.g. raw Waymo intensity vs. tanh). None when they
    agree or the file records no config (other formats)."""
    try:
        obj = torch.load(pretrained, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - the loader above already accepted the file; a foreign format has no config
        return None
    recorded = (obj.get("config") or {}).get("data") if isinstance(obj, dict) else None
    if not isinstance(recorded, dict):
        return None
    theirs = ({k: float(v) for k, v in (recorded.get("channel_scales") or {}).items()},
              list(recorded.get("channel_tanh") or []))
    ours = ({k: float(v) for k, v in data.channel_scales.items()}, list(data.channel_tanh))
    if theirs == ours:
        return None
    return (f"warning: the pre-training run scaled its channels with channel_scales={theirs[0]}, channel_tanh="
            f"{theirs[1]}, but this detection config uses channel_scales={ours[0]}, channel_tanh={ours[1]}: the "
            f"encoder will see inputs in other units than it was trained on (set data.channel_scales / "
            f"data.channel_tanh to the pre-training's)")


@torch.no_grad()
def recalibrate_batchnorm(model: torch.nn.Module, batches) -> int:
    """Precise BatchNorm statistics (Wu and Johnson, "Rethinking 'Batch' in BatchNorm", 2021; detectron2's
    PreciseBN): reset every trainable BatchNorm's running mean/variance and re-estimate them as the
    plain average over `batches` in training mode. The detector's BNs use momentum 0.01 (OpenPCDet),
    so after a short CPU run their running statistics still remember the initial ones and inference
    would see features the network never saw in training. Frozen modules keep theirs. Returns the
    number of batches used."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.training
             and m.track_running_stats]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None            # cumulative average over the batches below
    used = 0
    try:
        for batch in batches:
            model.forward_features(batch) if hasattr(model, "forward_features") else model(batch)
            used += 1
    finally:
        for m, momentum in zip(norms, saved):
            m.momentum = momentum
    return used


@torch.no_grad()
def predict_dataset(model: CenterPoint, dataset: DetectionDataset, batch_size: int, device=None) -> list[dict]:
    """The detector over every frame of `dataset`: the shared prediction format, one dict per frame
    {"frame_id", "boxes" (M, 7|9) float64 sensor frame, "scores" (M,) float32, "names" (M,) str}."""
    was_training = model.training
    model.eval()
    loader = torch.utils.data.DataLoader(dataset, batch_size=max(1, batch_size), shuffle=False,
                                         collate_fn=dataset.collate_fn)
    out = []
    for batch in loader:
        if device is not None:
            batch = move_to_device(batch, device)
        for det in model.predict(batch):
            out.append({"frame_id": det["frame_id"], "boxes": det["boxes"], "scores": det["scores"],
                        "names": det["names"]})
    model.train(was_training)
    return out


def draw_predictions(dataset: DetectionDataset, predictions: list[dict], directory: Path, point_range,
                     count: int = NUM_BEV_PICTURES) -> list[Path]:
    from pointmae.viz.bev import save_frame_bev
    paths = []
    for i in range(min(count, len(dataset))):
        frame = dataset[i]
        det = predictions[i]
        keep = det["scores"] >= 0.3
        paths.append(save_frame_bev(frame, Path(directory) / f"{frame.frame_id}.png", predictions=det["boxes"][keep],
                                    prediction_labels=det["names"][keep], prediction_scores=det["scores"][keep],
                                    x_range=(point_range[0], point_range[3]), y_range=(point_range[1], point_range[4])))
    return paths


def validation_metrics(cfg: DetectionDataConfig, dataset: DetectionDataset, predictions: list[dict]) -> dict:
    """metrics.json: the KITTI protocol where the validation frames are KITTI-shaped (see the module
    docstring), else quick_metrics. KITTI keys: "<Class>/<bev|3d>_R40/moderate" (strict overlaps:
    0.7 Car, 0.5 Pedestrian / Cyclist) and "mean/<bev|3d>_R40/moderate" over the classes with ground
    truth (null where a class has no valid ground truth), plus "num_frames". The KITTI ground truth is the reader's unfiltered labels, not the
    detector's cropped training targets. With <= 40 valid ground truths of a class and difficulty even a
    perfect detector scores below 100 (the devkit's 41 thresholds, see pointmae.eval.kitti)."""
    classes = [c for c in KITTI_CLASSES if c in cfg.class_names]
    if cfg.source not in ("synthetic", "kitti") or not classes:
        return quick_metrics(dataset, predictions, cfg.class_names)
    frames = [dataset.reader[int(i)] for i in dataset.indices]
    evaluate = evaluate_synthetic_predictions if cfg.source == "synthetic" else evaluate_kitti_predictions
    result = evaluate(predictions, frames, classes=classes, overlap_sets=("strict",), metrics=("bev", "3d"))
    def rounded(ap: float):
        return None if np.isnan(ap) else round(ap, 2)      # no valid ground truth: null (JSON has no NaN)

    metrics: dict = {"num_frames": len(frames)}
    for metric in ("bev", "3d"):
        for cls in classes:
            metrics[f"{cls}/{metric}_R40/moderate"] = rounded(result.get(cls, metric))
        metrics[f"mean/{metric}_R40/moderate"] = rounded(result.mean_ap(metric, classes=classes))
    return metrics


def quick_metrics(dataset: DetectionDataset, predictions: list[dict], class_names) -> dict:
    from pointmae.eval.bev_ap import bev_average_precision
    gt = [dataset[i] for i in range(len(dataset))]
    metrics = {}
    for name in class_names:
        for iou in (0.5, 0.7):
            ap = bev_average_precision([p["boxes"][p["names"] == name] for p in predictions],
                                       [p["scores"][p["names"] == name] for p in predictions],
                                       [f.boxes[f.names == name] for f in gt], iou)
            if ap is not None:
                metrics[f"{name}/bev_ap_r40@{iou}"] = round(100.0 * ap, 2)
    return metrics


def main(argv=None) -> int:
    args = build_parser().parse_intermixed_args(argv)
    try:
        cfg = resolve(args)
    except ConfigError as e:
        print(f"finetune_det.py: config error: {e}", file=sys.stderr)
        return 2
    try:
        result = finetune(cfg, args.pretrained, args.freeze_backbone, args.backbone_lr_mult, train=not args.no_train,
                          weights=args.weights, precise_bn_batches=args.precise_bn)
        if result["trainer"] is not None and result["trainer"].interrupted:
            return 128 + signal.SIGTERM
    except ConfigError as e:              # data.train_args / val_args that do not fit data.source
        print(f"finetune_det.py: config error: {e}", file=sys.stderr)
        return 2
    except (PretrainedLoadError, CheckpointError, NonFiniteLossError, DataError) as e:
        print(f"finetune_det.py: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    finally:
        D.shutdown_distributed()
    return 0
