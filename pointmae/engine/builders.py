"""The only place where the config becomes objects: model, dataset, optimizer, LR schedule.

Datasets are reached through the plain dict `DATASET_FACTORIES` (name -> factory(data_cfg) ->
torch Dataset), the same way models are reached through `pointmae.models.MODEL_FACTORIES`. A dataset
that needs its own batching exposes a `collate_fn` attribute; the engine hands it to the DataLoader.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import nn
from torch.utils.data import Dataset

from pointmae.config import Config, DataConfig, ModelConfig, OptimConfig, SchedConfig
from pointmae.models import MODEL_FACTORIES

def _maybe_augment(dataset: Dataset, augment: bool) -> Dataset:
    from pointmae.data.objects.augment import Augmented
    return Augmented(dataset) if augment else dataset


def _synthetic_shapes(cfg) -> Dataset:
    from pointmae.data.objects import SyntheticShapes
    ds = SyntheticShapes(cfg.split, cfg.num_points, cfg.samples_per_class, cfg.seed, cfg.noise_std,
                         class_set=cfg.class_set, partial_view=cfg.partial_view, density_jitter=cfg.density_jitter,
                         cache=cfg.cache)
    return _maybe_augment(ds, cfg.augment)


def _modelnet40(cfg) -> Dataset:
    import glob
    import os

    from pointmae.data.objects import modelnet40_h5, modelnet40_pickle, modelnet40_txt
    if cfg.format == "txt":
        ds = modelnet40_txt(cfg.root, cfg.split, cfg.num_points)
    else:
        names_file = os.path.join(os.path.dirname(cfg.root.rstrip("/")), "modelnet40_shape_names.txt")
        names = [f"class_{i}" for i in range(40)]
        if os.path.exists(names_file):
            names = [line.strip() for line in open(names_file) if line.strip()]
        if cfg.format == "pickle":
            ds = modelnet40_pickle(cfg.root, names, cfg.num_points)
        else:
            files = sorted(glob.glob(os.path.join(cfg.root, f"ply_data_{cfg.split}*.h5")))
            if not files:
                raise FileNotFoundError(f"data.root: no ply_data_{cfg.split}*.h5 files in {cfg.root}")
            ds = modelnet40_h5(files, names, cfg.num_points)
    return _maybe_augment(ds, cfg.augment)


def _shapenet55(cfg) -> Dataset:
    from pointmae.data.objects import shapenet55
    return _maybe_augment(shapenet55(cfg.root, cfg.split, cfg.num_points), cfg.augment)


def _scanobjectnn(cfg) -> Dataset:
    from pointmae.data.objects import scanobjectnn
    return _maybe_augment(scanobjectnn(cfg.root, cfg.variant, cfg.split, cfg.num_points), cfg.augment)


def _lidar_pretrain(cfg, reader) -> Dataset:
    """Any LiDAR frame reader -> the pre-training dataset of pointmae/data/lidar_pretrain.py."""
    from pointmae.data.lidar_pretrain import LidarPretrainDataset, pretrain_augmentation
    augment = (pretrain_augmentation(cfg.flip_p, cfg.rotate_deg, cfg.scale, cfg.translate_std)
               if cfg.augment else None)
    return LidarPretrainDataset(reader, cfg.channels, cfg.point_range, cfg.num_previous, cfg.missing_previous,
                                augment, cfg.repeat, cfg.channel_scales, cfg.sensor_origin, cfg.frame_gap,
                                cfg.channel_tanh)


def _lidar_synthetic(cfg) -> Dataset:
    from pointmae.data.lidar_datasets import SyntheticFrames
    from pointmae.data.synthetic import sensor_preset
    sensor = sensor_preset(cfg.sensor)
    if cfg.azimuth_resolution_deg is not None:
        sensor = sensor.with_(azimuth_resolution_deg=cfg.azimuth_resolution_deg)
    return _lidar_pretrain(cfg, SyntheticFrames(cfg.num_frames, cfg.seed, sensor, cfg.frames_per_sequence))


def _lidar_kitti(cfg) -> Dataset:
    from pointmae.data.kitti import KittiObjectDataset
    return _lidar_pretrain(cfg, KittiObjectDataset(cfg.root, cfg.split, cfg.subset, fov_only=cfg.fov_only))


def _lidar_nuscenes(cfg) -> Dataset:
    from pointmae.data.nuscenes import NuScenesInfoDataset
    return _lidar_pretrain(cfg, NuScenesInfoDataset(cfg.info_path, cfg.data_root, num_sweeps=cfg.num_sweeps))


def _lidar_waymo(cfg) -> Dataset:
    from pointmae.data.waymo import WaymoConvertedDataset
    return _lidar_pretrain(cfg, WaymoConvertedDataset(cfg.root, drop_nlz=cfg.drop_nlz))


def _lidar_sweeps(cfg) -> Dataset:
    from pointmae.data.lidar_pretrain import SequentialPrevious
    from pointmae.data.user_sweeps import SweepFolderDataset
    reader = SweepFolderDataset(cfg.source, cfg.bin_layout, poses=cfg.poses, timestamps=cfg.timestamps,
                                channels=cfg.channels, recursive=cfg.recursive)
    return _lidar_pretrain(cfg, SequentialPrevious(reader))


def _lidar_av2(cfg) -> Dataset:
    from pointmae.data.av2 import Av2SensorLog
    return _lidar_pretrain(cfg, Av2SensorLog(cfg.root))


def _detection(cfg) -> Dataset:
    from pointmae.engine.finetune_det import build_detection_datasets
    return build_detection_datasets(cfg)[0]


DATASET_FACTORIES: dict[str, Callable[..., Dataset]] = {
    "lidar_synthetic": _lidar_synthetic,
    "lidar_kitti": _lidar_kitti,
    "lidar_nuscenes": _lidar_nuscenes,
    "lidar_waymo": _lidar_waymo,
    "lidar_sweeps": _lidar_sweeps,
    "lidar_av2": _lidar_av2,
    "detection": _detection,
    "synthetic_shapes": _synthetic_shapes,
    "modelnet40": _modelnet40,
    "shapenet55": _shapenet55,
    "scanobjectnn": _scanobjectnn,
}


def build_model(cfg: ModelConfig) -> nn.Module:
    if cfg.name not in MODEL_FACTORIES:
        raise KeyError(f"no model factory for model.name='{cfg.name}' "
                       f"(known: {', '.join(sorted(MODEL_FACTORIES)) or 'none registered yet'})")
    return MODEL_FACTORIES[cfg.name](cfg)


def build_dataset(cfg: DataConfig) -> Dataset:
    if cfg.name not in DATASET_FACTORIES:
        raise KeyError(f"no dataset factory for data.name='{cfg.name}' "
                       f"(known: {', '.join(sorted(DATASET_FACTORIES)) or 'none registered yet'})")
    return DATASET_FACTORIES[cfg.name](cfg)


def build_optimizer(model: nn.Module, cfg: OptimConfig,
                    lr_mults: Optional[dict[str, float]] = None) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters. lr_mults: {name prefix: multiplier} gives the parameters
    under a prefix (first match wins) the learning rate cfg.lr * multiplier, e.g. a pre-trained
    backbone fine-tuned slower ({"backbone_3d.": 0.1}); the LR schedule scales every group alike."""
    lr_mults = dict(lr_mults or {})
    groups: dict[tuple[float, bool], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        mult = next((m for prefix, m in lr_mults.items() if name.startswith(prefix)), 1.0)
        # Biases, norm scales and learned tokens/embeddings of rank <= 1 are not decayed.
        decayed = not (cfg.no_decay_1d and p.ndim <= 1)
        groups.setdefault((mult, decayed), []).append(p)
    param_groups = [{"params": params, "weight_decay": cfg.weight_decay if decayed else 0.0, "lr": cfg.lr * mult}
                    for (mult, decayed), params in sorted(groups.items(), key=lambda kv: (-kv[0][0], not kv[0][1]))]
    if not param_groups:
        raise ValueError("the model has no trainable parameters")
    return torch.optim.AdamW(param_groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)


def warmup_cosine_factor(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """LR multiplier at optimizer step `step` (0-based): linear warm-up, then cosine to min_ratio."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(total_steps - warmup_steps, 1)
    progress = min((step - warmup_steps) / decay_steps, 1.0)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, sched: SchedConfig, peak_lr: float,
                    steps_per_epoch: int, total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    if sched.name == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    warmup_steps = int(round(sched.warmup_epochs * steps_per_epoch))
    min_ratio = sched.min_lr / peak_lr if peak_lr > 0 else 0.0
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine_factor(step, warmup_steps, total_steps, min_ratio))


def build_all(cfg: Config) -> tuple[nn.Module, Dataset]:
    """Model and training dataset of a config (the optimizer comes later, after device placement)."""
    return build_model(cfg.model), build_dataset(cfg.data)
