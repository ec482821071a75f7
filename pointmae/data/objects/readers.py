"""Readers for the object datasets as users have them on disk. Each returns (points, label) items
with points (N, C) float32 tensors (xyz first; normals follow where the files have them).

- ModelNet40 `modelnet40_normal_resampled` (PointNet++ release, Qi et al. 2017): <root>/<class>/<class>_NNNN.txt
  (comma-separated x,y,z,nx,ny,nz, 10000 rows), class names in modelnet40_shape_names.txt, splits in
  modelnet40_{train,test}.txt (one `<class>_NNNN` per line).
- ModelNet40 pre-sampled pickle (Point-BERT / Point-MAE `modelnet40_{split}_8192pts_fps.dat`): a pickle
  of (list of (8192, 6) arrays, list of labels).
- ModelNet40 HDF5 (`modelnet40_ply_hdf5_2048/ply_data_{split}*.h5`, datasets `data` (M, 2048, 3), `label`).
- ScanObjectNN (Uy et al., ICCV 2019) HDF5: `data` (M, 2048, 3), `label` (M,), variants OBJ_ONLY
  (main_split_nobg), OBJ_BG (main_split) and PB_T50_RS (main_split/*_augmentedrot_scale75.h5).
- ShapeNet-55 (Yu et al., Point-BERT, CVPR 2022): <root>/shapenet_pc/<taxonomy>-<model>.npy (8192, 3),
  splits in <root>/ShapeNet-55/{train,test}.txt; the label is the taxonomy id's index among the
  sorted taxonomy ids.

Missing or corrupt files raise errors naming the file (and the line for text files).
"""
import os
import pickle
from typing import List, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset


class DataFileError(ValueError):
    """A dataset file is missing, unreadable or malformed; the message names the file."""


def _need(path: str, what: str):
    if not os.path.exists(path):
        raise DataFileError(f"{what} not found: {path}")


def _read_lines(path: str, what: str) -> List[str]:
    _need(path, what)
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def read_modelnet_txt(path: str) -> np.ndarray:
    """One modelnet40_normal_resampled file -> (N, 6) float32; errors name the file and line."""
    _need(path, "ModelNet40 point file")
    rows = []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            parts = line.split(",")
            if len(parts) != 6:
                raise DataFileError(f"{path}:{lineno}: expected 6 comma-separated values (x,y,z,nx,ny,nz), "
                                    f"got {len(parts)}: {line[:80]!r}")
            try:
                rows.append([float(p) for p in parts])
            except ValueError:
                raise DataFileError(f"{path}:{lineno}: not a number in {line[:80]!r}") from None
    if not rows:
        raise DataFileError(f"{path}: no points")
    pts = np.asarray(rows, dtype=np.float32)
    if not np.isfinite(pts).all():
        bad = int(np.flatnonzero(~np.isfinite(pts).all(1))[0]) + 1
        raise DataFileError(f"{path}: non-finite value in point {bad}")
    return pts


def _h5py():
    try:
        import h5py
    except ImportError:
        raise ImportError("reading HDF5 datasets needs the optional extra h5py: pip install h5py") from None
    return h5py


def _read_h5(path: str, what: str):
    _need(path, what)
    h5py = _h5py()
    try:
        with h5py.File(path, "r") as f:
            if "data" not in f or "label" not in f:
                raise DataFileError(f"{path}: expected datasets 'data' and 'label', found {sorted(f.keys())}")
            data = np.asarray(f["data"], dtype=np.float32)
            label = np.asarray(f["label"]).reshape(-1).astype(np.int64)
    except OSError as e:
        raise DataFileError(f"{path}: not a readable HDF5 file ({e})") from None
    if data.ndim != 3 or data.shape[0] != label.shape[0]:
        raise DataFileError(f"{path}: 'data' must be (M, N, C) with M = len(label); got {data.shape} and "
                            f"{label.shape}")
    return data, label


class PointCloudList(Dataset):
    """In-memory clouds + labels with an optional fixed number of points per item."""

    def __init__(self, clouds: Sequence[np.ndarray], labels: Sequence[int], class_names: List[str],
                 num_points: Optional[int] = None, use_normals: bool = False):
        self.clouds, self.labels, self.class_names = clouds, [int(x) for x in labels], class_names
        self.num_points, self.use_normals = num_points, use_normals

    def __len__(self):
        return len(self.clouds)

    def __getitem__(self, i):
        pts = self.clouds[i]
        if self.num_points is not None:
            if pts.shape[0] < self.num_points:
                raise DataFileError(f"item {i} has {pts.shape[0]} points, fewer than num_points={self.num_points}")
            # A prefix of the stored order, as the reference loaders do (PointNet++ for the txt files;
            # the pre-sampled pickles are stored in FPS order, so their prefix is an FPS subsample).
            pts = pts[: self.num_points]
        pts = pts if self.use_normals else pts[:, :3]
        return torch.from_numpy(np.ascontiguousarray(pts, dtype=np.float32)), self.labels[i]


def modelnet40_txt(root: str, split: str, num_points: int = 1024, use_normals: bool = False,
                   names: Optional[List[str]] = None) -> PointCloudList:
    """ModelNet40 from `modelnet40_normal_resampled`. `names` overrides the split file (e.g.
    ["chair_0391"]); otherwise <root>/modelnet40_<split>.txt lists the shapes."""
    classes = _read_lines(os.path.join(root, "modelnet40_shape_names.txt"), "ModelNet40 class list")
    if names is None:
        names = _read_lines(os.path.join(root, f"modelnet40_{split}.txt"), f"ModelNet40 {split} split file")
    clouds, labels = [], []
    for name in names:
        cls = name.rsplit("_", 1)[0]
        if cls not in classes:
            raise DataFileError(f"ModelNet40 shape {name!r}: class {cls!r} is not in modelnet40_shape_names.txt")
        clouds.append(read_modelnet_txt(os.path.join(root, cls, name + ".txt")))
        labels.append(classes.index(cls))
    return PointCloudList(clouds, labels, classes, num_points, use_normals)


def modelnet40_pickle(path: str, class_names: List[str], num_points: int = 1024,
                      use_normals: bool = False) -> PointCloudList:
    """ModelNet40 pre-sampled pickle (modelnet40_<split>_8192pts_fps.dat)."""
    _need(path, "ModelNet40 pickle")
    try:
        with open(path, "rb") as f:
            clouds, labels = pickle.load(f)
    except Exception as e:  # a truncated or foreign pickle raises many kinds of errors
        raise DataFileError(f"{path}: not a ModelNet40 (points, labels) pickle ({type(e).__name__}: {e})") from None
    labels = [int(np.asarray(x).reshape(-1)[0]) for x in labels]
    return PointCloudList([np.asarray(c, np.float32) for c in clouds], labels, class_names, num_points, use_normals)


def modelnet40_h5(files: Sequence[str], class_names: List[str], num_points: int = 1024) -> PointCloudList:
    clouds, labels = [], []
    for path in files:
        data, label = _read_h5(path, "ModelNet40 HDF5 file")
        clouds += list(data)
        labels += label.tolist()
    return PointCloudList(clouds, labels, class_names, num_points)


SCANOBJECTNN_FILES = {
    "OBJ_ONLY": ("main_split_nobg", "objectdataset.h5"),
    "OBJ_BG": ("main_split", "objectdataset.h5"),
    "PB_T50_RS": ("main_split", "objectdataset_augmentedrot_scale75.h5"),
}
SCANOBJECTNN_CLASSES = ["bag", "bin", "box", "cabinet", "chair", "desk", "display", "door", "shelf", "table",
                        "bed", "pillow", "sink", "sofa", "toilet"]


def scanobjectnn(root: str, variant: str, split: str, num_points: int = 2048) -> PointCloudList:
    if variant not in SCANOBJECTNN_FILES:
        raise ValueError(f"scanobjectnn: variant must be one of {list(SCANOBJECTNN_FILES)}, got {variant!r}")
    if split not in ("train", "test"):
        raise ValueError(f"scanobjectnn: split must be 'train' or 'test', got {split!r}")
    folder, suffix = SCANOBJECTNN_FILES[variant]
    prefix = "training_" if split == "train" else "test_"
    data, label = _read_h5(os.path.join(root, folder, prefix + suffix), f"ScanObjectNN {variant} {split} file")
    return PointCloudList(list(data), label.tolist(), SCANOBJECTNN_CLASSES, num_points)


def shapenet55(root: str, split: str, num_points: int = 8192) -> PointCloudList:
    lines = _read_lines(os.path.join(root, "ShapeNet-55", f"{split}.txt"), f"ShapeNet-55 {split} split file")
    taxonomies = sorted({line.split("-", 1)[0] for line in lines})
    clouds, labels = [], []
    for line in lines:
        path = os.path.join(root, "shapenet_pc", line)
        _need(path, "ShapeNet-55 point file")
        try:
            pts = np.load(path).astype(np.float32)
        except Exception as e:
            raise DataFileError(f"{path}: not a readable .npy file ({e})") from None
        if pts.ndim != 2 or pts.shape[1] < 3:
            raise DataFileError(f"{path}: expected (N, 3) points, got shape {pts.shape}")
        clouds.append(pts)
        labels.append(taxonomies.index(line.split("-", 1)[0]))
    return PointCloudList(clouds, labels, taxonomies, num_points)
