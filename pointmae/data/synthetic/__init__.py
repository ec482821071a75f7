"""The synthetic LiDAR world: procedural street scenes scanned by a simulated spinning LiDAR."""
from pointmae.data.synthetic.sensor import SENSOR_PRESETS, SpinningLidar, sensor_preset  # noqa: F401
from pointmae.data.synthetic.world import SyntheticWorld  # noqa: F401
