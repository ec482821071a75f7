"""Run configuration: nested dataclasses, loaded strictly from YAML, with dotted command-line overrides.

A config file is the complete description of a run. Loading is strict on purpose: a misspelled key
(`train.epoch: 5`) would otherwise be silently ignored and the run would train with the default, so
every unknown key, wrong type or missing required key is an error that names the key path and where
it came from (the file, or the command-line override).

Model and data sections are polymorphic: `model.name` picks the dataclass of that model family from
the plain dict `MODEL_CONFIGS` (and `data.name` from `DATA_CONFIGS`). A model family adds itself by
defining its dataclass here (a `name` field plus its typed parameters) and one entry in the dict; its
factory goes into `pointmae.models.MODEL_FACTORIES` under the same name.

    cfg = load_config("configs/point_mae/shapenet.yaml", overrides=["train.epochs=5"])
    dump_config(cfg, run_dir / "config.yaml")      # the resolved config, loadable again
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the key path and its source."""


# ----------------------------------------------------------------------------------------------------
# Sections shared by every run


@dataclass
class OptimConfig:
    """AdamW. `lr` is the peak learning rate reached after warm-up."""
    name: Literal["adamw"] = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    # Biases and normalisation weights (1-D parameters) are conventionally not decayed.
    no_decay_1d: bool = True


@dataclass
class SchedConfig:
    """Linear warm-up to `optim.lr`, then cosine decay to `min_lr`, stepped once per optimizer step."""
    name: Literal["cosine", "constant"] = "cosine"
    warmup_epochs: float = 0.0
    min_lr: float = 0.0


@dataclass
class TrainConfig:
    epochs: int = 1
    # Samples per process and per forward pass. The effective batch of one optimizer step is
    # batch_size * grad_accum * world_size.
    batch_size: int = 32
    grad_accum: int = 1
    # Stop after this many optimizer steps in total (None: run all epochs). Handy for smoke runs.
    max_steps: Optional[int] = None
    amp: Literal["none", "bf16", "fp16"] = "none"
    clip_grad: Optional[float] = None
    compile: bool = False
    sync_bn: bool = False
    # What to do with a non-finite loss or gradient norm: stop the run (naming the step) or skip
    # that optimizer step and go on.
    nonfinite: Literal["stop", "skip"] = "stop"
    log_every: int = 10
    ckpt_every_steps: int = 0          # 0: checkpoint only at the end of each epoch
    keep_last: int = 3
    vis_every: int = 0                 # 0: no reconstruction pictures
    tensorboard: bool = True
    progress_bar: bool = True
    auto_resume: bool = True           # resume from the newest good checkpoint in work_dir
    seed: int = 0
    deterministic: bool = False
    num_workers: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"


# ----------------------------------------------------------------------------------------------------
# Polymorphic sections: each model family / dataset adds a dataclass and one dict entry.


@dataclass
class ModelConfig:
    """Base of every model section; a family subclasses it with its own typed parameters."""
    name: str


@dataclass
class DataConfig:
    """Base of every data section; a dataset subclasses it with its own typed parameters."""
    name: str


MODEL_CONFIGS: dict[str, type] = {}
DATA_CONFIGS: dict[str, type] = {}


@dataclass
class Config:
    model: ModelConfig
    data: DataConfig
    optim: OptimConfig = field(default_factory=OptimConfig)
    sched: SchedConfig = field(default_factory=SchedConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    work_dir: str = "work_dirs/default"


# Which dict decides the dataclass of a polymorphic section (looked up by its `name`).
_POLYMORPHIC = {ModelConfig: ("model", MODEL_CONFIGS), DataConfig: ("data", DATA_CONFIGS)}


# ----------------------------------------------------------------------------------------------------
# Loading


def load_config(path: Union[str, Path], overrides: Optional[list[str]] = None, schema: type = None) -> Config:
    """Reads a YAML config strictly and applies dotted overrides (`["train.epochs=5", ...]`).
    `schema`: the top-level dataclass, `Config` or a subclass with more sections; by default picked
    from the sections present (a `finetune` section: FinetuneClsConfig, else Config)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(raw).__name__}")
    return config_from_dict(raw, source=str(path), overrides=overrides, schema=schema)


def config_from_dict(raw: dict, source: str = "<dict>", overrides: Optional[list[str]] = None,
                     schema: type = None) -> Config:
    raw = _deep_copy(raw)
    # Where each key path came from, for error messages; everything else came from `source`.
    origins: dict[str, str] = {}
    for text in overrides or []:
        key, value = parse_override(text)
        _set_path(raw, key, value, text)
        origins[key] = f"command-line override '{text}'"
    if schema is None:
        schema = FinetuneClsConfig if "finetune" in raw else Config
    return _build(schema, raw, "", _Sources(source, origins))


def parse_override(text: str) -> tuple[str, Any]:
    """'train.lr=1e-3' -> ('train.lr', 0.001): the value is typed like a YAML scalar."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override '{text}' is not of the form section.key=value")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override '{text}': value is not valid YAML: {e}") from None
    return key, parsed


def config_to_dict(cfg: Config) -> dict:
    """Plain nested dict (tuples as lists), the form written to YAML and stored in checkpoints."""
    return _plain(dataclasses.asdict(cfg))


def dump_config(cfg: Config, path: Union[str, Path]) -> None:
    Path(path).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


def config_to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


# ----------------------------------------------------------------------------------------------------
# Strict conversion of plain data into dataclasses


@dataclass
class _Sources:
    default: str
    origins: dict[str, str]

    def of(self, path: str) -> str:
        # The most specific override that covers this path, else the file.
        while path:
            if path in self.origins:
                return self.origins[path]
            path = path.rpartition(".")[0]
        return self.default


def _error(sources: _Sources, path: str, message: str) -> ConfigError:
    return ConfigError(f"{path or '<top level>'}: {message} (in {sources.of(path)})")


def _build(cls: type, raw: Any, path: str, sources: _Sources):
    if cls in _POLYMORPHIC:
        cls = _select_family(cls, raw, path, sources)
    if not isinstance(raw, dict):
        raise _error(sources, path, f"expected a mapping for section {cls.__name__}, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            known = ", ".join(fields)
            raise _error(sources, _join(path, key), f"unknown key '{key}' (known keys here: {known})")
    values = {}
    for name, f in fields.items():
        sub = _join(path, name)
        if name in raw:
            values[name] = _coerce(raw[name], hints[name], sub, sources)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise _error(sources, sub, "required key is missing")
    return cls(**values)


def _select_family(base: type, raw: Any, path: str, sources: _Sources) -> type:
    section, table = _POLYMORPHIC[base]
    if not isinstance(raw, dict) or "name" not in raw:
        raise _error(sources, _join(path, "name"), f"the {section} section needs a 'name' "
                     f"(one of: {', '.join(sorted(table)) or 'none registered yet'})")
    name = raw["name"]
    if name not in table:
        raise _error(sources, _join(path, "name"), f"unknown {section} '{name}' "
                     f"(known: {', '.join(sorted(table)) or 'none registered yet'})")
    return table[name]


def _coerce(value: Any, tp: Any, path: str, sources: _Sources) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path, sources)
    if origin is Union:
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, path, sources)
            except ConfigError:
                pass
        raise _error(sources, path, f"{value!r} does not match {_type_name(tp)}")
    if origin is Literal:
        if value not in args:
            raise _error(sources, path, f"{value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise _error(sources, path, f"expected a list for {_type_name(tp)}, got {value!r}")
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                raise _error(sources, path, f"expected {len(args)} values, got {len(value)}: {value!r}")
            return tuple(_coerce(v, a, f"{path}[{i}]", sources) for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        items = [_coerce(v, item, f"{path}[{i}]", sources) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise _error(sources, path, f"expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise _error(sources, path, f"expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _error(sources, path, f"expected an integer, got {value!r}")
        return value
    if tp is float:
        # YAML reads "1e-3" (no dot) as a string; accept it since people write learning rates that way.
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _error(sources, path, f"expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise _error(sources, path, f"expected a string, got {value!r}")
        return value
    raise _error(sources, path, f"unsupported field type {_type_name(tp)} (a bug in the config schema)")


def _set_path(raw: dict, key: str, value: Any, text: str) -> None:
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override '{text}': '{part}' is a value, not a section")
        node = child
    node[parts[-1]] = value


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _deep_copy(raw: Any) -> Any:
    if isinstance(raw, dict):
        return {k: _deep_copy(v) for k, v in raw.items()}
    if isinstance(raw, list):
        return [_deep_copy(v) for v in raw]
    return raw


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# ----------------------------------------------------------------------------------------------------
# Model families and datasets. Each dataclass lists the typed parameters of one constructor.


@dataclass
class PointMAEConfig(ModelConfig):
    """pointmae.models.point_mae.PointMAE (defaults: the paper's)."""
    name: str = "point_mae"
    num_groups: int = 64
    group_size: int = 32
    embed_dim: int = 384
    depth: int = 12
    num_heads: int = 6
    decoder_depth: int = 4
    decoder_num_heads: int = 6
    mlp_ratio: float = 4.0
    mask_ratio: float = 0.6
    mask_type: Literal["random", "block"] = "random"
    drop_path_rate: float = 0.1
    patch_embed_width: int = 256   # mini-PointNet width (the paper's 256; 128 for CPU-sized models)
    pred_init_std: Optional[float] = 1e-3  # None: PyTorch's default init of the prediction layer (official code)


@dataclass
class PointMAEClassifierConfig(ModelConfig):
    """pointmae.models.point_mae.PointMAEClassifier: fine-tuning (defaults: the paper's ModelNet40 model)."""
    name: str = "point_mae_cls"
    num_classes: int = 40
    num_groups: int = 64
    group_size: int = 32
    embed_dim: int = 384
    depth: int = 12
    num_heads: int = 6
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.1
    head_dropout: float = 0.5
    patch_embed_width: int = 256


@dataclass
class ClassificationFinetuneConfig:
    """What classification fine-tuning adds to a run (tools/finetune_cls.py). The test split is the
    `data` section with split=test and no augmentation."""
    pretrained: Optional[str] = None     # checkpoint to start from (ours or the official Point-MAE release)
    votes: int = 1                       # test-time voting: logits averaged over this many augmented copies
    vote_every_epoch: bool = False       # vote in the per-epoch test too (else only in the final test)
    label_smoothing: float = 0.0
    test_batch_size: int = 64
    # Few-shot (n-way k-shot, Sharma & Kaul 2020): fine-tune one model per fold on n*k training shapes
    # of n random classes and test on `few_shot_queries` test shapes per class. 0 = ordinary fine-tuning.
    few_shot_way: int = 0
    few_shot_shot: int = 10
    few_shot_folds: int = 10
    few_shot_queries: int = 20


@dataclass
class FinetuneClsConfig(Config):
    """A fine-tuning run: the shared sections plus `finetune`."""
    finetune: ClassificationFinetuneConfig = field(default_factory=ClassificationFinetuneConfig)


@dataclass
class SyntheticShapesConfig(DataConfig):
    """pointmae.data.objects.SyntheticShapes: the embedded procedural shapes (no download)."""
    name: str = "synthetic_shapes"
    split: Literal["train", "test"] = "train"
    num_points: int = 1024
    samples_per_class: int = 100
    seed: int = 0
    noise_std: float = 0.01
    augment: bool = True           # Point-MAE's random scale and translate
    class_set: Literal["basic", "fine"] = "basic"   # 10 distinct kinds, or 16 with look-alikes
    partial_view: bool = False     # single-viewpoint scans (occluded back side)
    density_jitter: float = 0.0    # density varies across the object, up to 1 + this on one side
    cache: bool = False            # keep generated clouds in memory (later epochs skip generation)


@dataclass
class ModelNet40Config(DataConfig):
    """ModelNet40 as users have it: `txt` (modelnet40_normal_resampled folder), `pickle`
    (modelnet40_<split>_8192pts_fps.dat file) or `h5` (modelnet40_ply_hdf5_2048 folder)."""
    name: str = "modelnet40"
    root: str = "data/ModelNet/modelnet40_normal_resampled"
    format: Literal["txt", "pickle", "h5"] = "txt"
    split: Literal["train", "test"] = "train"
    num_points: int = 1024
    augment: bool = True


@dataclass
class ShapeNet55Config(DataConfig):
    """ShapeNet-55 (Point-BERT layout: <root>/shapenet_pc/*.npy, <root>/ShapeNet-55/<split>.txt)."""
    name: str = "shapenet55"
    root: str = "data/ShapeNet55-34"
    split: Literal["train", "test"] = "train"
    num_points: int = 1024
    augment: bool = True


@dataclass
class ScanObjectNNConfig(DataConfig):
    name: str = "scanobjectnn"
    root: str = "data/ScanObjectNN/h5_files"
    variant: Literal["OBJ_ONLY", "OBJ_BG", "PB_T50_RS"] = "OBJ_BG"
    split: Literal["train", "test"] = "train"
    num_points: int = 2048
    augment: bool = True


MODEL_CONFIGS["point_mae"] = PointMAEConfig
MODEL_CONFIGS["point_mae_cls"] = PointMAEClassifierConfig
DATA_CONFIGS["synthetic_shapes"] = SyntheticShapesConfig
DATA_CONFIGS["modelnet40"] = ModelNet40Config
DATA_CONFIGS["shapenet55"] = ShapeNet55Config
DATA_CONFIGS["scanobjectnn"] = ScanObjectNNConfig


@dataclass
class VoxelMAEConfig(ModelConfig):
    """pointmae.models.voxel_mae.VoxelMAE (defaults: the paper's nuScenes setting, SST on 0.5 m pillars).
    in_channels must match data.channels."""
    name: str = "voxel_mae"
    in_channels: int = 4
    point_range: tuple[float, float, float, float, float, float] = (-50.0, -50.0, -5.0, 50.0, 50.0, 3.0)
    voxel_size: tuple[float, float, float] = (0.5, 0.5, 8.0)
    max_points_per_voxel: int = 100
    max_voxels: int = 60000
    backbone: Literal["sst", "VoxelBackBone8x", "VoxelResBackBone8x"] = "sst"
    embed_dim: int = 128
    depth: int = 6
    num_heads: int = 8
    window_shape: tuple[int, int] = (16, 16)
    decoder_dim: int = 128
    decoder_depth: int = 2
    decoder_num_heads: int = 8
    num_pred_points: int = 16
    mask_type: Literal["random", "block", "radial"] = "random"
    mask_ratio: float = 0.7
    block_size: tuple[int, ...] = (4, 4)
    sector_deg: float = 1.0
    range_edges: Optional[list[float]] = None          # range-aware radial masking (metres) ...
    range_keep_ratios: Optional[list[float]] = None    # ... and one keep ratio per range bin
    fake_voxel_ratio: float = 0.1
    chamfer_weight: float = 1.0
    count_weight: float = 1.0
    occupancy_weight: float = 1.0
    drop_path_rate: float = 0.0
    temporal: bool = False      # the previous sweep (data.num_previous: 1) joins the encoder input unmasked


@dataclass
class RMAEConfig(ModelConfig):
    """pointmae.models.r_mae.RMAE (defaults: the paper's KITTI setting: OpenPCDet's SECOND grid,
    1-degree sectors, 20% kept)."""
    name: str = "r_mae"
    in_channels: int = 4
    point_range: tuple[float, float, float, float, float, float] = (0.0, -40.0, -3.0, 70.4, 40.0, 1.0)
    voxel_size: tuple[float, float, float] = (0.05, 0.05, 0.1)
    max_points_per_voxel: int = 5
    max_voxels: int = 40000
    backbone: Literal["VoxelBackBone8x", "VoxelResBackBone8x"] = "VoxelBackBone8x"
    mask_type: Literal["radial", "random", "block"] = "radial"
    mask_ratio: float = 0.8            # the paper keeps 20% of the sectors (10% on nuScenes)
    sector_deg: float = 1.0
    block_size: tuple[int, ...] = (8, 8)
    range_edges: Optional[list[float]] = None
    range_keep_ratios: Optional[list[float]] = None
    decoder_channels: tuple[int, ...] = (64,)
    empty_ratio: float = 1.0


MODEL_CONFIGS["voxel_mae"] = VoxelMAEConfig
MODEL_CONFIGS["r_mae"] = RMAEConfig


# ----------------------------------------------------------------------------------------------------
# LiDAR pre-training data (pointmae/data/lidar_pretrain.py): one section per frame source, the shared
# fields in LidarDataConfig. Point ranges follow OpenPCDet's dataset configs.


@dataclass
class LidarDataConfig(DataConfig):
    """Shared by every LiDAR source: point columns, crop range, previous sweep, augmentation."""
    channels: tuple[str, ...] = ("x", "y", "z", "intensity")
    # Multipliers per channel, e.g. {intensity: 0.00392} to bring nuScenes' 0..255 to KITTI's 0..1.
    channel_scales: dict[str, float] = field(default_factory=dict)
    # Channels squashed by tanh after scaling, e.g. [intensity] for Waymo (OpenPCDet's convention).
    channel_tanh: list[str] = field(default_factory=list)
    point_range: tuple[float, float, float, float, float, float] = (0.0, -40.0, -3.0, 70.4, 40.0, 1.0)
    # Where the LiDAR sits in the frame's coordinates (before augmentation): (0, 0, 0) for data in
    # the sensor frame; Waymo's points are in the vehicle frame, with the top LiDAR about 2 m up.
    sensor_origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    num_previous: int = 0                  # 1: batches carry prev_points / prev_offsets (temporal models)
    frame_gap: int = 1                     # the previous sweep is this many sweeps back
    # What stands in for a missing previous sweep ("skip": such frames are left out).
    missing_previous: Literal["current", "empty", "skip"] = "current"
    repeat: int = 1                        # the source repeated per epoch (tiny sample sets)
    augment: bool = True
    flip_p: float = 0.5
    rotate_deg: float = 45.0
    scale: tuple[float, float] = (0.95, 1.05)
    translate_std: tuple[float, float, float] = (0.0, 0.0, 0.0)


@dataclass
class LidarSyntheticConfig(LidarDataConfig):
    """The synthetic LiDAR world generated on the fly (pointmae.data.lidar_datasets.SyntheticFrames)."""
    name: str = "lidar_synthetic"
    channels: tuple[str, ...] = ("x", "y", "z", "intensity")
    num_frames: int = 200
    frames_per_sequence: int = 20
    seed: int = 0
    sensor: Literal["hdl64", "nuscenes32"] = "hdl64"
    azimuth_resolution_deg: Optional[float] = None   # coarser than the preset: fewer points, faster


@dataclass
class LidarKittiConfig(LidarDataConfig):
    """A KITTI-layout root (real object benchmark, or the synthetic world written by make_synthetic)."""
    name: str = "lidar_kitti"
    root: str = "data/kitti"
    split: Optional[str] = "train"
    subset: Literal["training", "testing"] = "training"
    fov_only: bool = False                 # keep the points inside the camera's field of view


@dataclass
class LidarNuScenesConfig(LidarDataConfig):
    """An mmdet3d-style nuScenes info pickle (samples/ and sweeps/ below data_root)."""
    name: str = "lidar_nuscenes"
    info_path: str = "data/nuscenes/nuscenes_infos_train.pkl"
    data_root: Optional[str] = None
    num_sweeps: int = 0
    point_range: tuple[float, float, float, float, float, float] = (-54.0, -54.0, -5.0, 54.0, 54.0, 3.0)


@dataclass
class LidarWaymoConfig(LidarDataConfig):
    """Frames converted by tools/convert_waymo.py (*.npz below root, vehicle frame)."""
    name: str = "lidar_waymo"
    root: str = "data/waymo/converted"
    drop_nlz: bool = False
    point_range: tuple[float, float, float, float, float, float] = (-74.88, -74.88, -2.0, 74.88, 74.88, 4.0)


@dataclass
class LidarSweepsConfig(LidarDataConfig):
    """A folder (or list file) of unlabelled sweeps with optional poses (pointmae/data/user_sweeps.py)."""
    name: str = "lidar_sweeps"
    source: str = "data/sweeps"
    bin_layout: Optional[str] = None
    poses: Optional[str] = None
    timestamps: Optional[str] = None
    recursive: bool = False


@dataclass
class LidarAv2Config(LidarDataConfig):
    """One Argoverse 2 sensor log folder (pointmae/data/av2.py; egovehicle frame, the roof LiDAR's
    position from the log's calibration is each frame's sensor origin)."""
    name: str = "lidar_av2"
    root: str = "data/av2/log"
    point_range: tuple[float, float, float, float, float, float] = (-51.2, -51.2, -2.0, 51.2, 51.2, 4.0)


DATA_CONFIGS["lidar_synthetic"] = LidarSyntheticConfig
DATA_CONFIGS["lidar_kitti"] = LidarKittiConfig
DATA_CONFIGS["lidar_nuscenes"] = LidarNuScenesConfig
DATA_CONFIGS["lidar_waymo"] = LidarWaymoConfig
DATA_CONFIGS["lidar_sweeps"] = LidarSweepsConfig
DATA_CONFIGS["lidar_av2"] = LidarAv2Config


@dataclass
class TemporalMAEConfig(ModelConfig):
    """pointmae.models.temporal_mae.TemporalMAE (T-MAE, Wei et al., ECCV 2024). Defaults: Waymo-sized
    SST pillars (0.32 m, 12 x 12 windows, as SST) and the paper's 75% random masking of the current sweep."""
    name: str = "t_mae"
    point_range: tuple[float, float, float, float, float, float] = (-74.88, -74.88, -2.0, 74.88, 74.88, 4.0)
    voxel_size: tuple[float, float, float] = (0.32, 0.32, 6.0)
    num_point_features: int = 4
    embed_dim: int = 128
    depth: int = 6
    num_heads: int = 8
    window_shape: tuple[int, int] = (12, 12)
    cross_depth: int = 1
    decoder_dim: int = 128
    decoder_depth: int = 2
    decoder_num_heads: int = 8
    points_per_voxel: int = 16
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.0
    mask_ratio: float = 0.75
    mask_type: Literal["random", "radial", "block"] = "random"   # of the current sweep (temporal masking)
    sector_deg: float = 1.0
    block_size: tuple[int, ...] = (4, 4)
    range_edges: Optional[list[float]] = None          # range-aware radial masking, as Voxel-MAE / R-MAE
    range_keep_ratios: Optional[list[float]] = None


MODEL_CONFIGS["t_mae"] = TemporalMAEConfig


# ----------------------------------------------------------------------------------------------------
# 3D detection (CenterPoint-style detector and its frame datasets; see pointmae/models/detection/)


@dataclass
class CenterPointConfig(ModelConfig):
    """pointmae.models.detection.CenterPoint: voxelization -> vfe -> backbone_3d -> BEV -> 2D backbone
    -> center head. Defaults: OpenPCDet's CenterPoint KITTI recipe where it has one."""
    name: str = "centerpoint"
    class_names: list[str] = field(default_factory=lambda: ["Car", "Pedestrian", "Cyclist"])
    # Task groups of class_names (CenterPoint's multi-group head, e.g. nuScenes' six); None: one group.
    tasks: Optional[list[list[str]]] = None
    # Batch channels fed to the voxel feature encoder, by name (x, y, z must come first).
    point_channels: list[str] = field(default_factory=lambda: ["x", "y", "z", "intensity"])
    point_range: tuple[float, float, float, float, float, float] = (0.0, -40.0, -3.0, 70.4, 40.0, 1.0)
    voxel_size: tuple[float, float, float] = (0.05, 0.05, 0.1)
    vfe: Literal["mean", "dynamic_mean"] = "mean"
    max_points_per_voxel: int = 5
    max_voxels: int = 40000
    backbone: Literal["VoxelBackBone8x", "VoxelResBackBone8x", "SST"] = "VoxelBackBone8x"
    # SST only (voxel_size z must then span the whole point_range height: pillars).
    sst_dim: int = 128
    sst_depth: int = 6
    sst_num_heads: int = 8
    sst_window: tuple[int, int] = (12, 12)
    # SECOND-style 2D BEV backbone: one level per entry.
    bev_layer_nums: list[int] = field(default_factory=lambda: [5, 5])
    bev_layer_strides: list[int] = field(default_factory=lambda: [1, 2])
    bev_num_filters: list[int] = field(default_factory=lambda: [128, 256])
    bev_upsample_strides: list[int] = field(default_factory=lambda: [1, 2])
    bev_num_upsample_filters: list[int] = field(default_factory=lambda: [256, 256])
    head_channels: int = 64
    with_velocity: bool = False
    # "direction": CenterPoint's (sin h, cos h); "axis": (sin 2h, cos 2h), h modulo pi, for objects whose
    # front and back look alike (see models/detection/targets.py).
    heading: Literal["direction", "axis"] = "direction"
    # Targets: CenterNet/CenterPoint Gaussian radius rule.
    min_overlap: float = 0.1
    min_radius: int = 2
    max_objects: int = 500
    # Loss: focal heatmap loss + loc_weight * weighted L1 over (dx, dy, z, log dims, sin, cos[, vx, vy]).
    loc_weight: float = 0.25
    code_weights: list[float] = field(default_factory=lambda: [1.0] * 8 + [0.2, 0.2])
    # Decoding: the top_k heatmap peaks of each task group.
    top_k: int = 500
    score_threshold: float = 0.1
    nms: Literal["rotated", "circle", "none"] = "rotated"
    # "class": NMS within each class; "task": within each task group, across its classes (OpenPCDet's
    # CenterHead: a truck and a construction vehicle on the same spot suppress each other).
    nms_scope: Literal["class", "task"] = "class"
    nms_iou_threshold: float = 0.01
    circle_nms_radius: list[float] = field(default_factory=list)   # metres per class; empty: 2.0 each
    max_detections: int = 500


@dataclass
class DetectionDataConfig(DataConfig):
    """pointmae.data.detection.DetectionDataset: labelled LiDAR frames of one source
    (`pointmae.data.lidar_datasets.build_lidar_dataset(source, **train_args)`), boxes of
    `class_names` only, with detection augmentation."""
    name: str = "detection"
    source: Literal["synthetic", "kitti", "nuscenes_info", "waymo"] = "synthetic"
    train_args: dict[str, Any] = field(default_factory=dict)
    val_args: dict[str, Any] = field(default_factory=dict)
    class_names: list[str] = field(default_factory=lambda: ["Car", "Pedestrian", "Cyclist"])
    # Train on a seeded fraction of the labelled training frames (label-efficiency studies).
    label_fraction: float = 1.0
    label_seed: int = 0
    # CBGS class-balanced resampling of the (labelled) training frames, as CenterPoint / OpenPCDet on
    # nuScenes: rare classes' frames repeat until each class is in about as many frames as the others.
    class_balanced_resampling: bool = False
    # Crop frames to this range (boxes by centre); None: no crop.
    crop_range: Optional[tuple[float, float, float, float, float, float]] = None
    # Boxes with fewer LiDAR points are dropped (training targets and the quick validation metric).
    min_points_in_box: int = 1
    # {channel: factor} for every point the detector sees, e.g. {intensity: 1/255} on nuScenes: must
    # match the pre-training config's data.channel_scales for a pre-trained encoder.
    channel_scales: dict[str, float] = field(default_factory=dict)
    # Channels squashed by tanh after scaling (Waymo intensity); must match the pre-training config's.
    channel_tanh: list[str] = field(default_factory=list)
    augment: bool = True
    gt_sampling: bool = True
    gt_sample_counts: dict[str, int] = field(default_factory=dict)   # class -> objects per frame after sampling
    gt_min_points: int = 5
    gt_database_frames: int = 0                            # 0: every (labelled) training frame
    flip_x: float = 0.0                                    # probability of mirroring x -> -x
    flip_y: float = 0.5                                    # probability of mirroring y -> -y
    rotation: float = 0.78539816                           # U(-r, r) radians about z
    scale: tuple[float, float] = (0.95, 1.05)
    seed: int = 0


MODEL_CONFIGS["centerpoint"] = CenterPointConfig
DATA_CONFIGS["detection"] = DetectionDataConfig
