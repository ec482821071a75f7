"""A minimal protobuf wire-format *encoder* (the decoder is pointmae.data.tfrecord.parse_message), enough
to write benchmark submission protos without the protobuf package or generated code.

Wire format (protobuf.dev, "Encoding"): a message is a sequence of fields, each a key varint
``field_number << 3 | wire_type`` and a value: wire type 0 varint (ints, bools, enums; negative int32 /
int64 as their 64-bit two's complement, 10 bytes), 1 fixed 64-bit little-endian (double), 2
length-delimited (strings, bytes, sub-messages, packed repeated), 5 fixed 32-bit little-endian
(float). Repeated scalar fields of proto2 files are not packed unless declared so: one key per element.
Fields are written in increasing field-number order (as protobuf's own serializers do); parsers
accept any order.
"""
from __future__ import annotations

import math
import struct

VARINT, FIXED64, LENGTH_DELIMITED, FIXED32 = 0, 1, 2, 5


def varint(value: int) -> bytes:
    """Base-128 varint of a non-negative int < 2**64, or of a negative int64 (two's complement)."""
    value = int(value)
    if value < 0:
        if value < -(1 << 63):
            raise ValueError(f"varint value {value} is below the int64 range")
        value += 1 << 64
    if value >= 1 << 64:
        raise ValueError(f"varint value {value} does not fit in 64 bits")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def key(field: int, wire_type: int) -> bytes:
    if field < 1 or field >= 1 << 29:
        raise ValueError(f"field number must be in [1, 2**29); got {field}")
    return varint(field << 3 | wire_type)


def int_field(field: int, value: int) -> bytes:
    """int32 / int64 / enum / bool field (wire type 0)."""
    return key(field, VARINT) + varint(value)


def double_field(field: int, value: float) -> bytes:
    return key(field, FIXED64) + struct.pack("<d", float(value))


def float_field(field: int, value: float) -> bytes:
    value = float(value)
    if math.isfinite(value) and abs(value) > 3.4028234663852886e38:
        raise ValueError(f"float field {field}: {value} overflows float32")
    return key(field, FIXED32) + struct.pack("<f", value)


def bytes_field(field: int, value: bytes) -> bytes:
    value = bytes(value)
    return key(field, LENGTH_DELIMITED) + varint(len(value)) + value


def string_field(field: int, value: str) -> bytes:
    return bytes_field(field, str(value).encode("utf-8"))


def message_field(field: int, payload: bytes) -> bytes:
    """An embedded message (its already-serialized bytes)."""
    return bytes_field(field, payload)
