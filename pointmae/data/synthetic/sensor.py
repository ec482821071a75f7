"""A spinning multi-beam LiDAR: a fixed elevation table swept through 360 degrees of azimuth.

Presets follow the published sensor data sheets:
* "hdl64": Velodyne HDL-64E S2 (the KITTI sensor). 64 lasers in two blocks: the upper 32 from +2.0 deg
  down to -8.33 deg in 1/3-deg steps, the lower 32 from -8.83 deg to -24.33 deg in 1/2-deg steps
  (26.9 deg vertical field of view); 0.16 deg azimuth steps at 10 Hz; about 120 m range; ~2 cm
  range accuracy; mounted 1.73 m above the road in KITTI (Geiger et al. 2013, IJRR, "Vision meets
  robotics").
* "nuscenes32": Velodyne HDL-32E (the nuScenes sensor): 32 lasers from +10.67 deg to -30.67 deg in
  1.33-deg steps; ~0.33 deg azimuth steps at 20 Hz; 70 m usable range; mounted about 1.84 m high
  (nuScenes lidar2ego z), intensity reported on 0..255.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np


@dataclass(frozen=True)
class SpinningLidar:
    name: str
    elevations_deg: tuple[float, ...]    # one per beam; beam index = ring channel
    azimuth_resolution_deg: float
    max_range: float = 120.0
    min_range: float = 1.0               # returns closer than this are discarded (sensor housing, ego car)
    range_noise_std: float = 0.02        # metres, Gaussian
    dropout: float = 0.02                # probability that a valid return is lost
    far_dropout: float = 0.15            # extra loss probability at max range (grows with (r/max)^2)
    mount_height: float = 1.73           # sensor above the ground under the vehicle (metres)
    intensity_scale: float = 1.0         # KITTI reflectance 0..1; nuScenes-like 0..255
    intensity_noise_std: float = 0.02    # in units of the 0..1 reflectance

    @property
    def num_beams(self) -> int:
        return len(self.elevations_deg)

    @property
    def num_columns(self) -> int:
        return int(round(360.0 / self.azimuth_resolution_deg))

    def with_(self, **changes) -> "SpinningLidar":
        return replace(self, **changes)

    def ray_directions(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Unit ray directions (B * A, 3) in the sensor frame, beam-major (ray = beam * A + column),
        plus the elevation (B,) and azimuth (A,) angles in radians. Column 0 points backwards (-x)
        and azimuth grows counter-clockwise, like a Velodyne's packet order."""
        elevation = np.deg2rad(np.asarray(self.elevations_deg, dtype=np.float64))
        azimuth = -np.pi + (np.arange(self.num_columns) + 0.5) * (2 * np.pi / self.num_columns)
        ce, se = np.cos(elevation)[:, None], np.sin(elevation)[:, None]
        directions = np.stack([np.broadcast_to(ce * np.cos(azimuth), (len(elevation), len(azimuth))),
                               np.broadcast_to(ce * np.sin(azimuth), (len(elevation), len(azimuth))),
                               np.broadcast_to(se, (len(elevation), len(azimuth)))], axis=-1)
        return directions.reshape(-1, 3), elevation, azimuth


def _hdl64_elevations() -> tuple[float, ...]:
    upper = 2.0 - np.arange(32) / 3.0            # +2.0 .. -8.33
    lower = -8.83 - np.arange(32) * 0.5          # -8.83 .. -24.33
    return tuple(np.round(np.r_[upper, lower], 4).tolist())


SENSOR_PRESETS = {
    "hdl64": SpinningLidar("hdl64", _hdl64_elevations(), azimuth_resolution_deg=0.16, max_range=120.0,
                           mount_height=1.73, intensity_scale=1.0),
    "nuscenes32": SpinningLidar("nuscenes32", tuple(np.round(10.67 - np.arange(32) * 1.33, 4).tolist()),
                                azimuth_resolution_deg=0.3333, max_range=70.0, mount_height=1.84,
                                intensity_scale=255.0, range_noise_std=0.02),
}


def sensor_preset(name: str) -> SpinningLidar:
    try:
        return SENSOR_PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown sensor preset {name!r}; choose from {sorted(SENSOR_PRESETS)}") from None
