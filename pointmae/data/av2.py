"""Argoverse 2 Sensor Dataset logs (Wilson et al., "Argoverse 2", NeurIPS Datasets and Benchmarks 2021):
the LiDAR sweeps of one log with their ego poses, as Frames -- a real source of consecutive sweeps for
the temporal models.

Log layout (the dataset's own): <log>/sensors/lidar/<timestamp_ns>.feather with columns x, y, z
(float16, egovehicle frame), intensity (uint8), laser_number (uint8), offset_ns (int32);
<log>/city_SE3_egovehicle.feather with timestamp_ns, qw, qx, qy, qz, tx_m, ty_m, tz_m (egovehicle ->
city); <log>/calibration/egovehicle_SE3_sensor.feather with the sensors' extrinsics. Feather files are
Arrow IPC, read with pyarrow (an optional dependency: `pip install pyarrow`).

AV2 sweeps are already in the egovehicle frame (both roof LiDARs merged), so a Frame's "sensor frame"
is the egovehicle frame here and its pose is city_SE3_egovehicle at the sweep's timestamp (which the
pose table holds exactly). The roof LiDAR's position in that frame is meta["sensor_origin"] (from the
calibration's up_lidar), for masks measured around the sensor.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pointmae.data.errors import DataError
from pointmae.data.frame import Frame
from pointmae.data.nuscenes import pose_matrix

__all__ = ["Av2SensorLog"]


def _read_feather(path: Path):
    try:
        import pyarrow.feather as feather
    except ImportError:
        raise DataError(path, "reading Argoverse 2 .feather files needs pyarrow: pip install pyarrow") from None
    if not path.is_file():
        raise DataError(path, "file not found")
    return feather.read_table(path)


class Av2SensorLog:
    """The LiDAR sweeps of one AV2 log folder, sorted by timestamp. frame i: Frame with channels
    (x, y, z, intensity, ring), pose egovehicle -> city, timestamp in seconds."""

    def __init__(self, log_dir):
        self.root = Path(log_dir)
        self.files = sorted((self.root / "sensors" / "lidar").glob("*.feather"), key=lambda p: int(p.stem))
        if not self.files:
            raise DataError(self.root / "sensors" / "lidar", "no LiDAR sweeps (*.feather) in this AV2 log folder")
        poses = _read_feather(self.root / "city_SE3_egovehicle.feather")
        self._pose_times = np.asarray(poses.column("timestamp_ns").to_numpy(), dtype=np.int64)
        self._poses = {name: np.asarray(poses.column(name).to_numpy(), dtype=np.float64)
                       for name in ("qw", "qx", "qy", "qz", "tx_m", "ty_m", "tz_m")}
        self.sensor_origin = np.zeros(3)
        calibration = self.root / "calibration" / "egovehicle_SE3_sensor.feather"
        if calibration.is_file():
            table = _read_feather(calibration)
            names = table.column("sensor_name").to_pylist()
            if "up_lidar" in names:
                row = names.index("up_lidar")
                self.sensor_origin = np.array([table.column(c)[row].as_py() for c in ("tx_m", "ty_m", "tz_m")])

    def __len__(self) -> int:
        return len(self.files)

    def pose(self, timestamp_ns: int) -> np.ndarray:
        """4x4 egovehicle -> city at exactly this timestamp (AV2 logs a pose for every sweep)."""
        row = int(np.searchsorted(self._pose_times, timestamp_ns))
        if row >= len(self._pose_times) or self._pose_times[row] != timestamp_ns:
            raise DataError(self.root / "city_SE3_egovehicle.feather", f"no ego pose at timestamp {timestamp_ns} ns")
        p = self._poses
        return pose_matrix([p["tx_m"][row], p["ty_m"][row], p["tz_m"][row]],
                           [p["qw"][row], p["qx"][row], p["qy"][row], p["qz"][row]])

    def has_previous(self, index: int, gap: int = 1) -> bool:
        return index >= gap

    def previous(self, index: int, gap: int = 1) -> Frame | None:
        """The sweep `gap` sweeps earlier in this log (for temporal models), or None."""
        return self[index - gap] if self.has_previous(index, gap) else None

    def __getitem__(self, index: int) -> Frame:
        path = self.files[index]
        table = _read_feather(path)
        columns = ("x", "y", "z", "intensity", "laser_number")
        missing = [c for c in columns if c not in table.column_names]
        if missing:
            raise DataError(path, f"AV2 sweep lacks columns {missing} (has {table.column_names})")
        points = np.stack([np.asarray(table.column(c).to_numpy(), dtype=np.float32) for c in columns], axis=1)
        timestamp_ns = int(path.stem)
        return Frame(points, ("x", "y", "z", "intensity", "ring"), pose=self.pose(timestamp_ns),
                     timestamp=timestamp_ns * 1e-9, frame_id=path.stem, sequence_id=self.root.name,
                     meta={"source": str(path), "sensor_origin": self.sensor_origin.copy()})
