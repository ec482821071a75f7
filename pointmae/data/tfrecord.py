"""TFRecord framing and a minimal protobuf wire-format decoder: enough to read Waymo's tfrecords
(their labels, pose, context and timestamp) without TensorFlow.

TFRecord (tensorflow/core/lib/io/record_writer.cc, documented in the TFRecord guide): each record is
    uint64 length | uint32 masked_crc32c(length bytes) | data[length] | uint32 masked_crc32c(data)
little-endian, with masked_crc(c) = ((c >> 15) | (c << 17)) + 0xa282ead8 (mod 2^32), and CRC-32C the
Castagnoli CRC (reflected polynomial 0x82F63B78, init and final xor 0xFFFFFFFF; RFC 3720 B.4).

Protobuf wire format (protobuf.dev, "Encoding"): a message is a sequence of (tag varint = field << 3
| wire type) and values: 0 varint, 1 fixed 64-bit, 2 length-delimited, 5 fixed 32-bit.
"""
from __future__ import annotations

import struct

from pointmae.data.errors import DataError, require_file

_MASK_DELTA = 0xA282EAD8


def _crc32c_table():
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C of `data`. Uses the `crc32c` or `google-crc32c` package when installed (C speed);
    otherwise a pure-Python table loop (a few MB/s)."""
    try:
        import crc32c as fast  # type: ignore
        return fast.crc32c(data)
    except ImportError:
        pass
    try:
        import google_crc32c  # type: ignore
        return google_crc32c.value(data)
    except ImportError:
        pass
    crc = 0xFFFFFFFF
    table = _TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def read_tfrecords(path, check_data_crc: bool = True):
    """Yield the records of a TFRecord file, verifying both CRCs. Raises DataError naming the file
    and the byte offset of a truncated or corrupt record."""
    path = require_file(path)
    with open(path, "rb") as f:
        index = 0
        while True:
            offset = f.tell()
            header = f.read(12)
            if not header:
                return
            if len(header) < 12:
                raise DataError(path, f"record {index} at byte {offset}: truncated length header")
            length, length_crc = struct.unpack("<QI", header)
            if masked_crc32c(header[:8]) != length_crc:
                raise DataError(path, f"record {index} at byte {offset}: length CRC mismatch (corrupt file)")
            data = f.read(length)
            footer = f.read(4)
            if len(data) < length or len(footer) < 4:
                raise DataError(path, f"record {index} at byte {offset}: truncated ({len(data)} of {length} bytes)")
            if check_data_crc and masked_crc32c(data) != struct.unpack("<I", footer)[0]:
                raise DataError(path, f"record {index} at byte {offset}: data CRC mismatch (corrupt file)")
            yield data
            index += 1


def write_tfrecord(path, records) -> None:
    with open(path, "wb") as f:
        for data in records:
            header = struct.pack("<Q", len(data))
            f.write(header + struct.pack("<I", masked_crc32c(header)) + data + struct.pack("<I", masked_crc32c(data)))


# ------------------------------------------------------------------------------ protobuf wire
def _varint(buf: bytes, i: int) -> tuple[int, int]:
    result, shift = 0, 0
    while True:
        if i >= len(buf):
            raise ValueError("varint runs past the end of the message")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7
        if shift > 70:
            raise ValueError("varint too long")


def parse_message(buf: bytes) -> dict[int, list]:
    """{field number: [raw values]}: ints for varint, bytes for fixed64/fixed32/length-delimited."""
    fields: dict[int, list] = {}
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 1:
            value, i = buf[i:i + 8], i + 8
        elif wire == 2:
            length, i = _varint(buf, i)
            value, i = buf[i:i + length], i + length
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"unsupported wire type {wire} (field {field})")
        if i > len(buf):
            raise ValueError(f"field {field} runs past the end of the message")
        fields.setdefault(field, []).append(value)
    return fields


def as_double(raw: bytes) -> float:
    return struct.unpack("<d", raw)[0]


def as_float(raw: bytes) -> float:
    return struct.unpack("<f", raw)[0]


def repeated_doubles(values: list) -> list[float]:
    """A repeated double field, packed (one length-delimited blob) or not (one fixed64 each)."""
    out = []
    for v in values:
        out.extend(struct.unpack(f"<{len(v) // 8}d", v))
    return out


def signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


__all__ = ["crc32c", "masked_crc32c", "read_tfrecords", "write_tfrecord", "parse_message"]
