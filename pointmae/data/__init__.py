"""The LiDAR data layer: one Frame type and convention (frame.py), box geometry (boxes.py), readers
for KITTI, nuScenes, Waymo and users' own sweeps, and the synthetic LiDAR world (synthetic/)."""
from pointmae.data.errors import DataError  # noqa: F401
from pointmae.data.frame import Frame  # noqa: F401
