import importlib.util
import struct
from pathlib import Path

import numpy as np
import pytest

from pointmae.data.errors import DataError
from pointmae.data.tfrecord import crc32c, masked_crc32c, parse_message, read_tfrecords, write_tfrecord
from pointmae.data.waymo import (WaymoConvertedDataset, difficulty_with_default, read_converted_frame,
                                 read_mmdet3d_waymo_bin, read_openpcdet_npy, read_tfrecord_frames)

SMALL = "waymo/tfrecord/mmdet3d_val.tfrecord"
BIG = "waymo/tfrecord/pvps_data_one_frame.tfrecord"


def load_tool():
    spec = importlib.util.spec_from_file_location("convert_waymo", Path(__file__).parents[2] / "tools" / "convert_waymo.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def test_crc32c_known_values():
    assert crc32c(b"123456789") == 0xE3069283           # RFC 3720 check value
    assert crc32c(b"") == 0
    assert crc32c(bytes(32)) == 0x8A9136AA               # RFC 3720 B.4: 32 bytes of zeros


def test_real_tfrecords_frame_and_crc(shared_data):
    frames = read_tfrecord_frames(shared_data / SMALL)
    assert len(frames) == 1
    f = frames[0]
    assert f.sequence_id == "1071392229495085036_1844_790_1864_790"
    assert f.meta["timestamp_micros"] == 1507315488219118
    assert len(f.boxes) == 18 and f.num_points == 0 and f.meta["lasers_with_data"] == 0
    np.testing.assert_allclose(f.pose[:3, :3] @ f.pose[:3, :3].T, np.eye(3), atol=1e-6)
    np.testing.assert_array_equal(f.pose[3], [0, 0, 0, 1])
    vehicles = f.boxes[f.names == "Vehicle"]
    assert (vehicles[:, 3] > vehicles[:, 4]).all()       # length (field 5) > width (field 4)
    assert set(f.box_meta["difficulty"]) <= {1, 2} and (f.box_meta["num_points"] >= 0).all()


@pytest.mark.slow
def test_big_tfrecord(shared_data):
    f = read_tfrecord_frames(shared_data / BIG)[0]     # 2.2 MB: ~0.5 s of pure-Python CRC
    assert f.sequence_id == "1024360143612057520_3580_000_3600_000"
    assert f.meta["timestamp_micros"] == 1553735853462203 and len(f.boxes) == 75


def test_corrupt_tfrecords(shared_data, tmp_path):
    data = (shared_data / SMALL).read_bytes()
    flipped = bytearray(data)
    flipped[100] ^= 1
    (tmp_path / "bad.tfrecord").write_bytes(bytes(flipped))
    with pytest.raises(DataError, match=r"bad\.tfrecord: record 0 at byte 0: data CRC mismatch"):
        list(read_tfrecords(tmp_path / "bad.tfrecord"))
    (tmp_path / "short.tfrecord").write_bytes(data[:-10])
    with pytest.raises(DataError, match="truncated"):
        list(read_tfrecords(tmp_path / "short.tfrecord"))
    write_tfrecord(tmp_path / "two.tfrecord", [b"hello", b""])
    assert list(read_tfrecords(tmp_path / "two.tfrecord")) == [b"hello", b""]
    assert masked_crc32c(struct.pack("<Q", 5)) == struct.unpack("<I", (tmp_path / "two.tfrecord").read_bytes()[8:12])[0]


def test_protobuf_wire_decoder():
    # field 1 varint 150 (the protobuf docs' example), field 2 string "hi", field 3 packed doubles
    packed = struct.pack("<2d", 1.5, -2.0)
    buf = bytes([0x08, 0x96, 0x01, 0x12, 0x02]) + b"hi" + bytes([0x1A, len(packed)]) + packed
    m = parse_message(buf)
    assert m[1] == [150] and m[2] == [b"hi"] and struct.unpack("<2d", m[3][0]) == (1.5, -2.0)
    with pytest.raises(ValueError):
        parse_message(bytes([0x12, 0x05]) + b"hi")


def test_converter_labels_only_round_trip(shared_data, tmp_path):
    tool = load_tool()
    tool.main([str(shared_data / SMALL), "--out", str(tmp_path), "--labels-only"])
    dataset = WaymoConvertedDataset(tmp_path)
    frame = dataset[0]
    raw = read_tfrecord_frames(shared_data / SMALL)[0]
    np.testing.assert_array_equal(frame.boxes, raw.boxes)
    np.testing.assert_array_equal(frame.names, raw.names)
    np.testing.assert_array_equal(frame.pose, raw.pose)
    assert frame.sequence_id == raw.sequence_id and frame.timestamp == raw.timestamp
    assert dataset.previous(0) is None


def test_converted_frame_with_points_and_nlz(tmp_path):
    tool = load_tool()
    rng = np.random.default_rng(0)
    points = np.c_[rng.normal(size=(100, 5)), (np.arange(100) % 10 == 0), np.arange(100) % 2].astype(np.float32)
    for i in range(2):
        tool.save_frame(tmp_path, "ctx", i, points, np.ones(100), np.ones((2, 9)), ["Vehicle", "Pedestrian"], ["a", "b"],
                        [3, 40], [0, 2], [0, 0], np.eye(4), 1_000_000 + i * 100_000)
    dataset = WaymoConvertedDataset(tmp_path, drop_nlz=True)
    frame = dataset[1]
    assert frame.num_points == 90 and frame.meta["dropped_nlz"] == 10
    assert frame.box_meta["difficulty"].tolist() == [2, 2] and frame.timestamp == pytest.approx(1.1)
    assert dataset.previous(1).frame_id == "ctx_0000"
    assert difficulty_with_default([0, 0, 1], [5, 6, 1]).tolist() == [2, 1, 1]
    np.savez(tmp_path / "ctx" / "0002.npz", points=points)
    with pytest.raises(DataError, match=r"0002\.npz: format ''"):
        read_converted_frame(tmp_path / "ctx" / "0002.npz")


def test_openpcdet_and_mmdet3d_extractions(shared_data):
    frame = read_openpcdet_npy(shared_data / "waymo/openpcdet_processed/0004.npy")
    assert frame.num_points == 172359 and frame.channels[-1] == "nlz"
    assert frame.channel("nlz").sum() == 0                  # all -1 in this file: outside every NLZ
    assert frame.channel("intensity").max() == pytest.approx(900.0)
    bin_frame = read_mmdet3d_waymo_bin(shared_data / "waymo/kitti_format_subsampled/0000000.bin")
    assert bin_frame.num_points == 800 and bin_frame.meta["timestamp_micros"] == pytest.approx(1.5500835e15, rel=1e-6)
