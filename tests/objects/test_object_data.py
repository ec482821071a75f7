import os
import pickle

import numpy as np
import pytest
import torch

from pointmae.data.objects import (CLASS_NAMES, DataFileError, SyntheticShapes, make_shape,
                                   modelnet40_pickle, modelnet40_txt, shapenet55)


def test_synthetic_shapes_deterministic_and_normalised():
    a, b = SyntheticShapes(seed=3, samples_per_class=2), SyntheticShapes(seed=3, samples_per_class=2)
    for i in range(len(a)):
        (pa, la), (pb, lb) = a[i], b[i]
        assert torch.equal(pa, pb) and la == lb
        assert pa.shape == (1024, 3) and pa.dtype == torch.float32
        assert torch.allclose(pa.norm(dim=1).max(), torch.tensor(1.0))
        assert pa.mean(0).abs().max() < 1e-5
    assert [a[i][1] for i in range(len(CLASS_NAMES))] == list(range(len(CLASS_NAMES)))


def test_synthetic_shapes_differ_by_seed_and_split():
    assert not torch.equal(SyntheticShapes(seed=0)[0][0], SyntheticShapes(seed=1)[0][0])
    assert not torch.equal(SyntheticShapes(split="train")[0][0], SyntheticShapes(split="test")[0][0])


def test_primitive_geometry():
    rng = np.random.default_rng(0)
    # A sphere's points are all at the same distance from its centre after normalisation (noise-free).
    pts = make_shape("sphere", 2000, rng, noise_std=0.0, tilt_deg=0.0)
    r = np.linalg.norm(pts - pts.mean(0), axis=1)
    assert r.std() < 0.02
    # A box without tilt keeps its top face horizontal: a sizeable share of its points share the
    # maximum z (the face's area share, at least 1/6 of the smallest face pair's share).
    box = make_shape("box", 2000, rng, noise_std=0.0, tilt_deg=0.0)
    top = np.abs(box[:, 2] - box[:, 2].max()) < 1e-5
    assert 0.03 < top.mean() < 0.5


def test_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        SyntheticShapes(split="val")
    with pytest.raises(ValueError, match="unknown classes"):
        SyntheticShapes(classes=["sphere", "dragon"])
    with pytest.raises(IndexError):
        SyntheticShapes(samples_per_class=1)[10]


def _modelnet_root(shared_data):
    return str(shared_data / "objects" / "modelnet40_normal_resampled")


def test_modelnet40_txt_on_real_samples(shared_data):
    root = _modelnet_root(shared_data)
    ds = modelnet40_txt(root, "test", num_points=1024, names=["chair_0391", "airplane_0126"])
    pts, label = ds[0]
    assert pts.shape == (1024, 3) and ds.class_names[label] == "chair"
    assert ds.class_names[ds[1][1]] == "airplane"
    with_normals = modelnet40_txt(root, "test", num_points=512, use_normals=True, names=["chair_0391"])[0][0]
    assert with_normals.shape == (512, 6)
    assert torch.allclose(with_normals[:, 3:].norm(dim=1), torch.ones(512), atol=1e-3)


def test_modelnet40_txt_errors_name_the_file(shared_data, tmp_path):
    root = _modelnet_root(shared_data)
    with pytest.raises(DataFileError, match="modelnet40_train.txt"):
        modelnet40_txt(root, "train")
    with pytest.raises(DataFileError, match="chair_9999.txt"):
        modelnet40_txt(root, "test", names=["chair_9999"])
    bad = tmp_path / "chair"
    bad.mkdir()
    (tmp_path / "modelnet40_shape_names.txt").write_text("chair\n")
    (bad / "chair_0001.txt").write_text("0,0,0,0,0,1\n1,2,3\n")
    with pytest.raises(DataFileError, match=r"chair_0001.txt:2: expected 6"):
        modelnet40_txt(str(tmp_path), "test", names=["chair_0001"])


def test_modelnet40_pickle_and_truncated(tmp_path):
    clouds = [np.random.default_rng(i).random((2048, 6), dtype=np.float32) for i in range(3)]
    path = tmp_path / "modelnet40_test_8192pts_fps.dat"
    with open(path, "wb") as f:
        pickle.dump((clouds, [np.array([4]), np.array([1]), np.array([0])]), f)
    ds = modelnet40_pickle(str(path), CLASS_NAMES, num_points=1024)
    assert len(ds) == 3 and ds[0][1] == 4 and torch.equal(ds[2][0], torch.from_numpy(clouds[2][:1024, :3]))
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DataFileError, match="modelnet40_test_8192pts_fps.dat"):
        modelnet40_pickle(str(path), CLASS_NAMES)


def test_shapenet55_layout(tmp_path):
    (tmp_path / "ShapeNet-55").mkdir()
    (tmp_path / "shapenet_pc").mkdir()
    names = ["02691156-aaa.npy", "03001627-bbb.npy", "02691156-ccc.npy"]
    for i, n in enumerate(names):
        np.save(tmp_path / "shapenet_pc" / n, np.full((8192, 3), i, np.float32))
    (tmp_path / "ShapeNet-55" / "train.txt").write_text("\n".join(names) + "\n")
    ds = shapenet55(str(tmp_path), "train", num_points=1024)
    assert [ds[i][1] for i in range(3)] == [0, 1, 0] and ds[1][0].shape == (1024, 3)
    os.remove(tmp_path / "shapenet_pc" / names[1])
    with pytest.raises(DataFileError, match="03001627-bbb.npy"):
        shapenet55(str(tmp_path), "train")
