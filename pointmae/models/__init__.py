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

from pointmae.config import CenterPointConfig, PointMAEConfig
from pointmae.models.point_mae import PointMAE


def build_point_mae(cfg: PointMAEConfig) -> PointMAE:
    kwargs = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name != "name"}
    return PointMAE(**kwargs)


def build_centerpoint(cfg: CenterPointConfig) -> nn.Module:
    from pointmae.models.detection import CenterPoint  # spconv is imported only when a detector is built
    kwargs = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name != "name"}
    return CenterPoint(**kwargs)


MODEL_FACTORIES: dict[str, Callable[..., nn.Module]] = {"point_mae": build_point_mae,
                                                        "centerpoint": build_centerpoint}
