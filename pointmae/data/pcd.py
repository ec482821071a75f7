"""A reader (and a small writer) for the Point Cloud Library's .pcd format, written from the PCD
file format specification (pointclouds.org, "The PCD (Point Cloud Data) file format", v0.7).

Header: lines "VERSION", "FIELDS", "SIZE" (bytes per value), "TYPE" (I signed, U unsigned, F float),
"COUNT" (values per field, default 1), "WIDTH", "HEIGHT", "VIEWPOINT" (tx ty tz qw qx qy qz),
"POINTS", then "DATA ascii | binary | binary_compressed". Comments start with '#'.
* ascii: one point per line, values separated by spaces; "nan" allowed.
* binary: points packed row by row (little-endian, as PCL writes them on x86).
* binary_compressed: uint32 compressed size, uint32 uncompressed size, then LZF-compressed data
  laid out COLUMN by column (all values of field 1, then field 2, ...).
LZF (Marc Lehmann's liblzf) stream: a control byte c; c < 32: c + 1 literal bytes follow; otherwise
a back-reference of length (c >> 5) + 2 (7 means: add the next byte) at distance
((c & 31) << 8 | next byte) + 1.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pointmae.data.errors import DataError, require_file

_TYPES = {("F", 4): "<f4", ("F", 8): "<f8", ("I", 1): "i1", ("I", 2): "<i2", ("I", 4): "<i4", ("I", 8): "<i8",
          ("U", 1): "u1", ("U", 2): "<u2", ("U", 4): "<u4", ("U", 8): "<u8"}


def lzf_decompress(data: bytes, expected_size: int) -> bytes:
    """Decompress an LZF stream (pure Python; about 1-2 MB/s, fine for sweeps of a few MB)."""
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        ctrl = data[i]
        i += 1
        if ctrl < 32:                       # literal run
            length = ctrl + 1
            if i + length > n:
                raise ValueError("LZF literal run past the end of the input")
            out += data[i:i + length]
            i += length
        else:                               # back reference
            length = ctrl >> 5
            if length == 7:
                length += data[i]
                i += 1
            length += 2
            ref = len(out) - ((ctrl & 0x1F) << 8) - data[i] - 1
            i += 1
            if ref < 0:
                raise ValueError("LZF back reference before the start of the output")
            for k in range(length):         # may overlap itself: copy byte by byte
                out.append(out[ref + k])
    if len(out) != expected_size:
        raise ValueError(f"LZF output is {len(out)} bytes, header says {expected_size}")
    return bytes(out)


def read_pcd(path) -> tuple[np.ndarray, list[str], dict]:
    """(N, C) float32 points, the C column names (a field with COUNT k > 1 becomes name_0..name_k-1),
    and the header (dict of the raw header values, plus "viewpoint")."""
    path = require_file(path)
    raw = path.read_bytes()
    header: dict[str, list[str]] = {}
    offset, line_no = 0, 0
    while True:
        end = raw.find(b"\n", offset)
        if end < 0:
            raise DataError(path, "PCD header ended before its DATA line", line_no + 1)
        line_no += 1
        line = raw[offset:end].decode("ascii", errors="replace").strip()
        offset = end + 1
        if not line or line.startswith("#"):
            continue
        key, *values = line.split()
        header[key.upper()] = values
        if key.upper() == "DATA":
            break
    try:
        fields = header["FIELDS"]
        sizes = [int(v) for v in header["SIZE"]]
        types = [v.upper() for v in header["TYPE"]]
        counts = [int(v) for v in header.get("COUNT", ["1"] * len(fields))]
        width, height = int(header["WIDTH"][0]), int(header.get("HEIGHT", ["1"])[0])
        num_points = int(header.get("POINTS", [width * height])[0])
        mode = header["DATA"][0].lower()
    except (KeyError, IndexError, ValueError) as exc:
        raise DataError(path, f"malformed PCD header ({type(exc).__name__}: {exc})") from None
    if not (len(fields) == len(sizes) == len(types) == len(counts)):
        raise DataError(path, "PCD header: FIELDS, SIZE, TYPE and COUNT have different lengths")
    try:
        dtypes = [_TYPES[(t, s)] for t, s in zip(types, sizes)]
    except KeyError as exc:
        raise DataError(path, f"unsupported PCD TYPE/SIZE {exc.args[0]}") from None
    names = [f if c == 1 else f"{f}_{k}" for f, c in zip(fields, counts) for k in range(c)]
    columns_dtype = [dt for dt, c in zip(dtypes, counts) for _ in range(c)]
    record = np.dtype([(f"c{i}", dt) for i, dt in enumerate(columns_dtype)])
    body = raw[offset:]
    if mode == "ascii":
        rows = []
        lines = body.decode("ascii", errors="replace").splitlines()
        for k, text in enumerate(lines):
            if not text.strip():
                continue
            parts = text.split()
            if len(parts) != len(names):
                raise DataError(path, f"{len(parts)} values, expected {len(names)} ({' '.join(names)})", line_no + k + 1)
            try:
                rows.append([float(v) for v in parts])
            except ValueError:
                raise DataError(path, f"non-numeric value in {text.strip()!r}", line_no + k + 1) from None
        points = np.array(rows, dtype=np.float64).reshape(-1, len(names))
    elif mode == "binary":
        need = record.itemsize * num_points
        if len(body) < need:
            raise DataError(path, f"binary PCD data has {len(body)} bytes, {num_points} points need {need}")
        structured = np.frombuffer(body[:need], dtype=record)
        points = np.stack([structured[f"c{i}"].astype(np.float64) for i in range(len(names))], axis=1) \
            if num_points else np.zeros((0, len(names)))
    elif mode == "binary_compressed":
        if len(body) < 8:
            raise DataError(path, "binary_compressed PCD data is missing its size header")
        compressed, uncompressed = np.frombuffer(body[:8], dtype="<u4")
        try:
            data = lzf_decompress(body[8:8 + int(compressed)], int(uncompressed))
        except (ValueError, IndexError) as exc:
            raise DataError(path, f"corrupt LZF data ({exc})") from None
        cols, start = [], 0
        for dt in columns_dtype:                 # column-major layout
            size = np.dtype(dt).itemsize * num_points
            cols.append(np.frombuffer(data[start:start + size], dtype=dt).astype(np.float64))
            start += size
        points = np.stack(cols, axis=1) if num_points else np.zeros((0, len(names)))
    else:
        raise DataError(path, f"unknown PCD DATA mode {mode!r} (ascii, binary, binary_compressed)")
    if len(points) != num_points:
        raise DataError(path, f"PCD header says {num_points} points, data has {len(points)}")
    info = {k: v for k, v in header.items()}
    info["viewpoint"] = [float(v) for v in header.get("VIEWPOINT", ["0", "0", "0", "1", "0", "0", "0"])]
    return points.astype(np.float32), names, info


def write_pcd(path, points: np.ndarray, fields: list[str], mode: str = "binary") -> None:
    """Write float32 fields as a PCD v0.7 file (ascii, binary or binary_compressed; the compressed
    form uses LZF literal runs only, which every LZF decoder reads)."""
    points = np.ascontiguousarray(points, dtype="<f4")
    n = len(points)
    header = (f"# .PCD v0.7 - Point Cloud Data file format\nVERSION 0.7\nFIELDS {' '.join(fields)}\n"
              f"SIZE {' '.join(['4'] * len(fields))}\nTYPE {' '.join(['F'] * len(fields))}\n"
              f"COUNT {' '.join(['1'] * len(fields))}\nWIDTH {n}\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\n"
              f"POINTS {n}\nDATA {mode}\n").encode("ascii")
    if mode == "ascii":
        body = "".join(" ".join(repr(float(v)) for v in row) + "\n" for row in points).encode("ascii")
    elif mode == "binary":
        body = points.tobytes()
    elif mode == "binary_compressed":
        data = points.T.copy().tobytes()
        out = bytearray()
        for i in range(0, len(data), 32):
            chunk = data[i:i + 32]
            out.append(len(chunk) - 1)
            out += chunk
        body = np.array([len(out), len(data)], dtype="<u4").tobytes() + bytes(out)
    else:
        raise ValueError(f"unknown PCD mode {mode!r}")
    Path(path).write_bytes(header + body)
