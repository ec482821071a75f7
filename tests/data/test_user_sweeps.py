import numpy as np
import pytest

from pointmae.data.collate import collate_frames
from pointmae.data.errors import DataError
from pointmae.data.pcd import lzf_decompress, read_pcd, write_pcd
from pointmae.data.user_sweeps import SweepFolderDataset, parse_bin_layout, read_point_file, read_poses


@pytest.fixture
def cloud():
    rng = np.random.default_rng(0)
    return np.c_[rng.normal(size=(50, 3)) * 10, rng.uniform(0, 1, 50)].astype(np.float32)


@pytest.mark.parametrize("mode", ["ascii", "binary", "binary_compressed"])
def test_pcd_modes_round_trip(tmp_path, cloud, mode):
    write_pcd(tmp_path / "a.pcd", cloud, ["x", "y", "z", "intensity"], mode)
    points, names, header = read_pcd(tmp_path / "a.pcd")
    np.testing.assert_array_equal(points, cloud)
    assert names == ["x", "y", "z", "intensity"] and header["viewpoint"][3] == 1.0


def test_pcd_mixed_types_counts_and_field_order(tmp_path):
    # Hand-written binary PCD: intensity first (uint8), then xyz as one field with COUNT 3? PCL writes
    # separate fields; we test COUNT > 1 via a "normal" field and mixed types.
    n = 3
    rec = np.zeros(n, dtype=[("intensity", "u1"), ("x", "<f4"), ("y", "<f4"), ("z", "<f8"), ("normal", "<f4", (3,))])
    rec["intensity"] = [1, 2, 3]
    rec["x"], rec["y"], rec["z"] = [1, 2, 3], [4, 5, 6], [7, 8, 9]
    header = ("VERSION .7\nFIELDS intensity x y z normal\nSIZE 1 4 4 8 4\nTYPE U F F F F\nCOUNT 1 1 1 1 3\n"
              f"WIDTH {n}\nHEIGHT 1\nPOINTS {n}\nDATA binary\n").encode()
    (tmp_path / "m.pcd").write_bytes(header + rec.tobytes())
    points, names = read_point_file(tmp_path / "m.pcd")
    assert names == ["x", "y", "z", "intensity", "normal_0", "normal_1", "normal_2"]
    np.testing.assert_array_equal(points[:, :4], [[1, 4, 7, 1], [2, 5, 8, 2], [3, 6, 9, 3]])


def test_lzf_back_references():
    assert lzf_decompress(bytes([2]) + b"abc" + bytes([0b01000000, 2]), 7) == b"abcabca"
    with pytest.raises(ValueError):
        lzf_decompress(bytes([0b00100000, 5]), 3)


def test_bad_pcd(tmp_path, cloud):
    write_pcd(tmp_path / "a.pcd", cloud[:3], ["x", "y", "z", "intensity"], "ascii")
    text = (tmp_path / "a.pcd").read_text().splitlines()
    text[-1] = "1 2 3"
    (tmp_path / "a.pcd").write_text("\n".join(text) + "\n")
    with pytest.raises(DataError, match=r"a\.pcd:14: 3 values, expected 4"):
        read_pcd(tmp_path / "a.pcd")
    (tmp_path / "b.pcd").write_text("VERSION .7\nFIELDS x y z\n")
    with pytest.raises(DataError, match="before its DATA line"):
        read_pcd(tmp_path / "b.pcd")


def test_bin_layouts(tmp_path):
    rec = np.zeros(4, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("intensity", "u1"), ("ring", "<u2")])
    rec["x"], rec["intensity"], rec["ring"] = [1, 2, 3, 4], [10, 20, 30, 40], [0, 1, 2, 3]
    rec.tofile(tmp_path / "a.bin")
    points, names = read_point_file(tmp_path / "a.bin", "x:f4,y:f4,z:f4,intensity:u1,ring:u2")
    assert names == ["x", "y", "z", "intensity", "ring"] and points[:, 3].tolist() == [10, 20, 30, 40]
    with pytest.raises(DataError, match="declare its point layout"):
        read_point_file(tmp_path / "a.bin")
    with pytest.raises(DataError, match=r"a\.bin: size 60 bytes is not a multiple of the point stride 16"):
        read_point_file(tmp_path / "a.bin", "x,y,z,intensity")
    with pytest.raises(ValueError, match="start with x,y,z"):
        parse_bin_layout("intensity,x,y,z")


def test_ply_and_las(tmp_path, cloud):
    plyfile = pytest.importorskip("plyfile")
    vertex = np.array([tuple(r) for r in cloud], dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("reflectance", "f4")])
    plyfile.PlyData([plyfile.PlyElement.describe(vertex, "vertex")]).write(str(tmp_path / "a.ply"))
    points, names = read_point_file(tmp_path / "a.ply")
    assert names == ["x", "y", "z", "intensity"]
    np.testing.assert_array_equal(points, cloud)

    laspy = pytest.importorskip("laspy")
    header = laspy.LasHeader(point_format=0, version="1.2")
    header.offsets, header.scales = [500000.0, 4000000.0, 0.0], [0.001, 0.001, 0.001]
    las = laspy.LasData(header)
    xyz = cloud[:, :3].astype(np.float64)
    las.x, las.y, las.z = xyz[:, 0] + 500000.0, xyz[:, 1] + 4000000.0, xyz[:, 2]
    las.intensity = (cloud[:, 3] * 1000).astype(np.uint16)
    las.write(str(tmp_path / "a.las"))
    assert len(SweepFolderDataset(tmp_path / "a.las")) == 1          # a single point file is a source too
    (tmp_path / "list.txt").write_text("a.las\n")
    frame = SweepFolderDataset(tmp_path / "list.txt")[0]
    np.testing.assert_allclose(frame.points[:, :3], cloud[:, :3], atol=1e-3)     # relative to the LAS offset
    np.testing.assert_allclose(frame.pose[:3, 3], [500000.0, 4000000.0, 0.0])


def test_folder_dataset_with_poses_and_collate(tmp_path, cloud):
    folder = tmp_path / "sweeps"
    folder.mkdir()
    cloud.tofile(folder / "000.bin")
    np.save(folder / "001.npy", cloud[:, :3])
    write_pcd(folder / "002.pcd", cloud, ["x", "y", "z", "intensity"], "binary")
    (folder / "notes.txt").write_text("ignored: not a point file")
    poses = np.tile(np.eye(4), (3, 1, 1))
    poses[:, 0, 3] = [0.0, 1.0, 2.0]
    (tmp_path / "poses.txt").write_text("".join(" ".join(map(str, p[:3].ravel())) + "\n" for p in poses))
    ds = SweepFolderDataset(folder, bin_layout="x,y,z,intensity", poses=tmp_path / "poses.txt")
    assert len(ds) == 3
    frames = [ds[i] for i in range(3)]
    assert frames[1].meta["filled_channels"] == ["intensity"] and (frames[1].channel("intensity") == 0).all()
    assert frames[2].pose[0, 3] == 2.0 and len(frames[0].boxes) == 0
    batch = collate_frames(frames)
    assert batch["points"].shape == (150, 4) and batch["offsets"].tolist() == [0, 50, 100, 150]
    with pytest.raises(DataError, match="2 poses for 3 sweeps"):
        np.save(tmp_path / "p.npy", poses[:2])
        SweepFolderDataset(folder, bin_layout="x,y,z,intensity", poses=tmp_path / "p.npy")


def test_bad_sources(tmp_path, cloud):
    with pytest.raises(DataError, match="file not found"):
        SweepFolderDataset(tmp_path / "nothing")
    (tmp_path / "list.txt").write_text("# my sweeps\na.npy\n")
    with pytest.raises(DataError, match=r"list\.txt:2: listed file not found"):
        SweepFolderDataset(tmp_path / "list.txt")
    bad = cloud.copy()
    bad[5, 2] = np.nan
    np.save(tmp_path / "a.npy", bad)
    with pytest.raises(DataError, match=r"a\.npy: 1 point\(s\) with NaN/Inf"):
        SweepFolderDataset(tmp_path / "list.txt")[0]
    with pytest.warns(UserWarning):
        frame = SweepFolderDataset(tmp_path / "list.txt", nonfinite="drop")[0]
    assert frame.num_points == 49 and frame.meta["dropped_nonfinite"] == 1
    (tmp_path / "poses.txt").write_text("1 0 0\n")
    with pytest.raises(DataError, match=r"poses\.txt:1: a pose line needs 12"):
        read_poses(tmp_path / "poses.txt")


def test_missing_extra_message(tmp_path, monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_plyfile(name, *args, **kwargs):
        if name == "plyfile":
            raise ImportError("no plyfile")
        return real_import(name, *args, **kwargs)
    (tmp_path / "a.ply").write_text("ply\n")
    monkeypatch.setattr(builtins, "__import__", no_plyfile)
    with pytest.raises(DataError, match="optional extra 'plyfile': pip install plyfile"):
        read_point_file(tmp_path / "a.ply")
