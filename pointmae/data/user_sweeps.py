"""Users' own unlabelled sweeps: the data self-supervised pre-training exists for.

A source is a folder (every supported file in it, sorted by name; recursive optional) or a list
file (one path per line, relative to the list file; '#' comments). Supported formats:

* .bin  headerless records with a DECLARED layout, e.g. "x,y,z,intensity" (float32) or
        "x:f4,y:f4,z:f4,intensity:u1,ring:u2" (numpy type codes, little-endian) - a .bin says nothing
        about itself, so guessing would silently misread files.
* .npy  (N, C) array; channel names from `npy_channels` (default x, y, z[, intensity, ...]).
* .pcd  our own parser (pcd.py): ascii, binary, binary_compressed.
* .ply  through plyfile (extra "plyfile"): the "vertex" element's properties.
* .las / .laz through laspy (extra "laspy"; .laz also needs its lazrs or laszip backend):
        scaled x, y, z and intensity.

Optional per-sweep poses (sensor -> world) for the temporal models: a .npy of shape (S, 4, 4), or a
text file with 12 (KITTI odometry, 3x4 row-major) or 16 numbers per line, one line per sweep in the
sweep order; optional timestamps (one number per line, seconds). Counts must match the sweeps.

Every frame comes out with the same channels (`channels`, default x, y, z, intensity): a channel a
file lacks is filled with zeros and named in frame.meta["filled_channels"] (nothing silent).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pointmae.data.errors import DataError, require_file
from pointmae.data.frame import Frame
from pointmae.data.pcd import read_pcd
from pointmae.data.points_io import handle_nonfinite

SUPPORTED = (".bin", ".npy", ".pcd", ".ply", ".las", ".laz")
_CHANNEL_ALIASES = {"reflectance": "intensity", "remission": "intensity", "i": "intensity", "scalar_intensity": "intensity",
                    "laser_number": "ring", "ring": "ring", "t": "time", "timestamp": "time"}


def parse_bin_layout(layout: str) -> np.dtype:
    """"x,y,z,intensity" -> float32 fields; "x:f4,y:f4,intensity:u1" -> those types (little-endian)."""
    fields = []
    for part in layout.split(","):
        name, _, code = part.strip().partition(":")
        if not name:
            raise ValueError(f"empty field name in bin layout {layout!r}")
        try:
            dtype = np.dtype(code or "f4").newbyteorder("<")
        except TypeError:
            raise ValueError(f"unknown type code {code!r} in bin layout {layout!r}") from None
        fields.append((name, dtype))
    names = [n for n, _ in fields]
    if names[:3] != ["x", "y", "z"]:
        raise ValueError(f"bin layout must start with x,y,z; got {layout!r}")
    return np.dtype(fields)


def _missing_extra(extra: str, path: Path, detail: str = "") -> DataError:
    return DataError(path, f"reading {path.suffix} files needs the optional extra '{extra}': "
                           f"pip install {extra}{detail}")


def read_point_file(path, bin_layout: str | None = None, npy_channels=None) -> tuple[np.ndarray, list[str]]:
    """(N, C) float32 points and their channel names (x, y, z first) from one file. For LAS/LAZ the
    points are relative to the file's header offset (see read_point_file_with_origin)."""
    points, names, _ = read_point_file_with_origin(path, bin_layout, npy_channels)
    return points, names


def read_point_file_with_origin(path, bin_layout: str | None = None, npy_channels=None):
    """Like read_point_file, plus the (3,) float64 origin the xyz are relative to: zero except for
    LAS/LAZ, whose georeferenced coordinates (often 1e5..1e6 m) would lose centimetres in float32, so
    the header offset is subtracted in float64 first."""
    path = require_file(path)
    origin = np.zeros(3)
    points, names = _read_any(path, bin_layout, npy_channels, origin)
    return points, names, origin


def _read_any(path: Path, bin_layout, npy_channels, origin: np.ndarray):
    suffix = path.suffix.lower()
    if suffix == ".bin":
        if not bin_layout:
            raise DataError(path, "a .bin file has no header: declare its point layout, e.g. "
                                  "bin_layout='x,y,z,intensity' (float32) or 'x:f4,y:f4,z:f4,intensity:u1'")
        dtype = parse_bin_layout(bin_layout)
        size = path.stat().st_size
        if size % dtype.itemsize:
            raise DataError(path, f"size {size} bytes is not a multiple of the point stride {dtype.itemsize} "
                                  f"declared by layout {bin_layout!r}")
        records = np.fromfile(path, dtype=dtype)
        names = list(dtype.names)
        return np.stack([records[n].astype(np.float32) for n in names], axis=1).reshape(-1, len(names)), names
    if suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise DataError(path, f"cannot read .npy ({exc})") from None
        if array.ndim != 2 or array.shape[1] < 3:
            raise DataError(path, f".npy must be (N, C>=3) points; got shape {array.shape}")
        names = list(npy_channels) if npy_channels else ["x", "y", "z", "intensity"][:array.shape[1]] + \
            [f"c{i}" for i in range(4, array.shape[1])]
        if len(names) != array.shape[1]:
            raise DataError(path, f"{array.shape[1]} columns but {len(names)} channel names {names}")
        return array.astype(np.float32), names
    if suffix == ".pcd":
        points, names, _ = read_pcd(path)
        return _xyz_first(points, [_CHANNEL_ALIASES.get(n.lower(), n.lower()) for n in names], path)
    if suffix == ".ply":
        try:
            from plyfile import PlyData
        except ImportError:
            raise _missing_extra("plyfile", path) from None
        try:
            vertex = PlyData.read(str(path))["vertex"]
        except Exception as exc:  # noqa: BLE001 - plyfile raises several types for bad files
            raise DataError(path, f"cannot read PLY ({type(exc).__name__}: {exc})") from None
        names = [p.name for p in vertex.properties]
        points = np.stack([np.asarray(vertex[n], dtype=np.float64) for n in names], axis=1).astype(np.float32)
        return _xyz_first(points, [_CHANNEL_ALIASES.get(n.lower(), n.lower()) for n in names], path)
    if suffix in (".las", ".laz"):
        try:
            import laspy
        except ImportError:
            raise _missing_extra("laspy", path, " (and 'laspy[lazrs]' for .laz)") from None
        try:
            las = laspy.read(str(path))
        except Exception as exc:  # noqa: BLE001
            hint = " (.laz needs a backend: pip install 'laspy[lazrs]')" if suffix == ".laz" else ""
            raise DataError(path, f"cannot read LAS/LAZ ({type(exc).__name__}: {exc}){hint}") from None
        origin[:] = np.asarray(las.header.offsets, dtype=np.float64)
        points = np.stack([np.asarray(las.x) - origin[0], np.asarray(las.y) - origin[1], np.asarray(las.z) - origin[2],
                           np.asarray(las.intensity, dtype=np.float64)], axis=1)
        return points.astype(np.float32), ["x", "y", "z", "intensity"]
    raise DataError(path, f"unsupported point file type {suffix!r}; supported: {', '.join(SUPPORTED)}")


def _xyz_first(points, names, path):
    try:
        order = [names.index("x"), names.index("y"), names.index("z")]
    except ValueError:
        raise DataError(path, f"no x, y, z fields among {names}") from None
    rest = [i for i in range(len(names)) if i not in order]
    return points[:, order + rest], [names[i] for i in order + rest]


def _read_list(source: Path, recursive: bool) -> list[Path]:
    if source.is_dir():
        pattern = "**/*" if recursive else "*"
        files = sorted(p for p in source.glob(pattern) if p.suffix.lower() in SUPPORTED and p.is_file())
        if not files:
            raise DataError(source, f"no point files ({', '.join(SUPPORTED)}) in this folder")
        return files
    source = require_file(source)
    if source.suffix.lower() in SUPPORTED:
        return [source]
    files = []
    try:
        text = source.read_text()
    except UnicodeDecodeError:
        raise DataError(source, "not a text list of point files (and not a supported point file type)") from None
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        path = Path(line) if Path(line).is_absolute() else source.parent / line
        if not path.is_file():
            raise DataError(source, f"listed file not found: {path}", number)
        files.append(path)
    if not files:
        raise DataError(source, "the list file names no point files")
    return files


def read_poses(path, count: int | None = None) -> np.ndarray:
    """(S, 4, 4) poses from .npy (S, 4, 4) or text (12 or 16 numbers per line)."""
    path = require_file(path)
    if path.suffix.lower() == ".npy":
        poses = np.load(path).astype(np.float64)
        if poses.ndim != 3 or poses.shape[1:] != (4, 4):
            raise DataError(path, f"poses .npy must be (S, 4, 4); got {poses.shape}")
    else:
        rows = []
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                values = [float(v) for v in line.replace(",", " ").split()]
            except ValueError:
                raise DataError(path, "non-numeric pose value", number) from None
            if len(values) not in (12, 16):
                raise DataError(path, f"a pose line needs 12 (3x4) or 16 (4x4) numbers; got {len(values)}", number)
            pose = np.eye(4)
            pose[:3 if len(values) == 12 else 4] = np.array(values).reshape(-1, 4)
            rows.append(pose)
        poses = np.array(rows).reshape(-1, 4, 4)
    if not np.isfinite(poses).all():
        raise DataError(path, "poses contain NaN/Inf")
    if count is not None and len(poses) != count:
        raise DataError(path, f"{len(poses)} poses for {count} sweeps")
    return poses


class SweepFolderDataset:
    """Unlabelled sweeps from a folder or list file, as pointmae Frames (no boxes)."""

    def __init__(self, source, bin_layout: str | None = None, npy_channels=None, poses=None, timestamps=None,
                 channels=("x", "y", "z", "intensity"), recursive: bool = False, nonfinite: str = "error"):
        self.source = Path(source)
        self.files = _read_list(self.source, recursive)
        self.bin_layout, self.npy_channels = bin_layout, npy_channels
        self.channels = tuple(channels)
        self.nonfinite = nonfinite
        self.poses = read_poses(poses, len(self.files)) if poses is not None else None
        self.timestamps = None
        if timestamps is not None:
            path = require_file(timestamps)
            values = []
            for number, line in enumerate(path.read_text().splitlines(), start=1):
                if line.strip():
                    try:
                        values.append(float(line.split()[0]))
                    except ValueError:
                        raise DataError(path, "non-numeric timestamp", number) from None
            if len(values) != len(self.files):
                raise DataError(path, f"{len(values)} timestamps for {len(self.files)} sweeps")
            self.timestamps = np.array(values)

    def __len__(self):
        return len(self.files)

    def timestamp(self, index: int) -> float:
        """Sweep `index`'s time in seconds, without reading it: from the timestamps file, else its position."""
        return float(self.timestamps[index]) if self.timestamps is not None else float(index)

    def __getitem__(self, index: int) -> Frame:
        path = self.files[index]
        points, names, origin = read_point_file_with_origin(path, self.bin_layout, self.npy_channels)
        meta = {"path": str(path), "source_channels": names, "dropped_nonfinite": 0, "origin": origin}
        points = handle_nonfinite(points, path, self.nonfinite, meta)
        columns, filled = [], []
        for channel in self.channels:
            if channel in names:
                columns.append(points[:, names.index(channel)])
            else:
                columns.append(np.zeros(len(points), np.float32))
                filled.append(channel)
        meta["filled_channels"] = filled
        meta["ignored_channels"] = [n for n in names if n not in self.channels]
        pose = self.poses[index].copy() if self.poses is not None else np.eye(4)
        pose[:3, 3] += pose[:3, :3] @ origin        # points were shifted by the LAS offset
        return Frame(points=np.stack(columns, axis=1).astype(np.float32), channels=self.channels, pose=pose,
                     timestamp=self.timestamp(index),
                     frame_id=path.stem, sequence_id=str(self.source), meta=meta)
