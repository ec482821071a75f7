"""Models, one file per family (point_mae.py, voxel_mae.py, ...), reached through one plain dict.

How a model family registers (no decorators, no import side effects):
  1. its config dataclass (`name` + typed parameters) goes into `pointmae/config.py` with an entry
     in `MODEL_CONFIGS`, e.g. `MODEL_CONFIGS["point_mae"] = PointMAEConfig`;
  2. a factory `build_point_mae(cfg: PointMAEConfig) -> nn.Module` that reads the config and calls
     the typed constructor goes into the dict below under the same name.

What the training engine expects of a model: `forward(batch)` returns a dict with a scalar `loss`
(the one that is back-propagated) and any other scalar terms to log; optionally
`visualize(batch, outputs)` returns {name: HxWx3 uint8 picture} for TensorBoard and PNG files.
"""
import dataclasses
from typing import Callable

from torch import nn

from pointmae.config import CenterPointConfig, PointMAEClassifierConfig, PointMAEConfig, RMAEConfig, TemporalMAEConfig, VoxelMAEConfig
from pointmae.models.point_mae import PointMAE, PointMAEClassifier


def constructor_kwargs(cfg) -> dict:
    """A model config's typed parameters (every field but `name`) as the constructor's keyword arguments."""
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name != "name"}


def build_point_mae(cfg: PointMAEConfig) -> PointMAE:
    return PointMAE(**constructor_kwargs(cfg))


def build_point_mae_classifier(cfg: PointMAEClassifierConfig) -> PointMAEClassifier:
    return PointMAEClassifier(**constructor_kwargs(cfg))


# The LiDAR models import spconv / the sparse backbones only when they are built.
def build_voxel_mae(cfg: VoxelMAEConfig) -> nn.Module:
    from pointmae.models.voxel_mae import VoxelMAE
    return VoxelMAE(**constructor_kwargs(cfg))


def build_r_mae(cfg: RMAEConfig) -> nn.Module:
    from pointmae.models.r_mae import RMAE
    return RMAE(**constructor_kwargs(cfg))


def build_t_mae(cfg: TemporalMAEConfig) -> nn.Module:
    from pointmae.models.temporal_mae import TemporalMAE
    return TemporalMAE(**constructor_kwargs(cfg))


def build_centerpoint(cfg: CenterPointConfig) -> nn.Module:
    from pointmae.models.detection import CenterPoint
    return CenterPoint(**constructor_kwargs(cfg))


MODEL_FACTORIES: dict[str, Callable[..., nn.Module]] = {
    "point_mae": build_point_mae, "point_mae_cls": build_point_mae_classifier,
    "voxel_mae": build_voxel_mae, "r_mae": build_r_mae, "t_mae": build_t_mae,
    "centerpoint": build_centerpoint,
}
