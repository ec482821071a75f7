"""Voxelization benchmarks: hard voxelization of real sweeps against spconv's PointToVoxel and a
pure-PyTorch baseline (unique + sort), dynamic voxelization, and the scatter of point features."""
import os
from pathlib import Path

import numpy as np
import torch

from bench.harness import Case
from pointmae.ops import scatter_to_voxels, voxelize, voxelize_dynamic

DATA = Path(os.environ.get("POINTMAE_SHARED_DATA",
                           Path(__file__).resolve().parents[3] / "shared" / "data"))
KITTI = DATA / "kitti" / "training" / "velodyne" / "000001.bin"
NUSCENES_DIR = DATA / "nuscenes" / "samples" / "LIDAR_TOP"

# SECOND / PV-RCNN KITTI settings (OpenPCDet kitti_dataset.yaml), and CenterPoint nuScenes settings.
KITTI_VOXEL = [0.05, 0.05, 0.1]
KITTI_RANGE = [0.0, -40.0, -3.0, 70.4, 40.0, 1.0]
NUSCENES_VOXEL = [0.075, 0.075, 0.2]
NUSCENES_RANGE = [-54.0, -54.0, -5.0, 54.0, 54.0, 3.0]

NOTES = [
    "spconv 2.3.8 PointToVoxel on CPU is single-threaded; it is built once outside the timed call "
    "(as a data pipeline would) and called with the same (N, C) tensor.",
    "torch baseline: voxel keys, torch.unique + scatter_reduce(amin) for first appearance, a stable sort "
    "for the slot of every point: the same output as ours, in pure PyTorch.",
]


def torch_voxelize(points, voxel_size, point_range, max_points, max_voxels):
    """Pure-PyTorch hard voxelization of one cloud with our rule and order (the benchmark baseline)."""
    p = points[:, :3].double()
    lo = p.new_tensor(point_range[:3])
    hi = p.new_tensor(point_range[3:])
    size = p.new_tensor(voxel_size)
    dims = torch.floor((hi - lo) / size + 0.5)
    cell = torch.floor((p - lo) / size)
    valid = torch.isfinite(p).all(1) & (p >= lo).all(1) & (p < hi).all(1) & (cell >= 0).all(1) & (cell < dims).all(1)
    idx = torch.nonzero(valid).flatten()
    cell = cell[idx].long()
    d = dims.long()
    key = (cell[:, 2] * d[1] + cell[:, 1]) * d[0] + cell[:, 0]
    uniq, inverse = torch.unique(key, return_inverse=True)
    first = torch.full((uniq.numel(),), idx.numel(), dtype=torch.long).scatter_reduce_(
        0, inverse, torch.arange(idx.numel()), "amin")
    rank = torch.empty_like(first)
    rank[torch.argsort(first)] = torch.arange(first.numel())
    voxel = rank[inverse]
    sorted_voxel, order = torch.sort(voxel, stable=True)
    counts = torch.bincount(voxel, minlength=uniq.numel())
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.empty_like(voxel)
    slot[order] = torch.arange(voxel.numel()) - starts[sorted_voxel]
    keep = (voxel < max_voxels) & (slot < max_points)
    num_voxels = min(uniq.numel(), max_voxels)
    voxels = points.new_zeros(num_voxels, max_points, points.shape[1])
    voxels[voxel[keep], slot[keep]] = points[idx[keep]]
    coords = torch.zeros(num_voxels, 3, dtype=torch.int32)
    coords[rank[rank < num_voxels]] = torch.stack([uniq // (d[0] * d[1]), uniq // d[0] % d[1], uniq % d[0]], 1
                                                  )[rank < num_voxels].int()
    return voxels, coords, torch.clamp(counts[:num_voxels], max=max_points)


def _load(path, channels):
    return torch.from_numpy(np.fromfile(path, dtype=np.float32).reshape(-1, channels))


def _spconv(voxel_size, point_range, channels, max_voxels, max_points):
    try:
        from spconv.pytorch.utils import PointToVoxel
    except Exception:  # noqa: BLE001  (not installed, or a broken install)
        return None
    gen = PointToVoxel(vsize_xyz=voxel_size, coors_range_xyz=point_range, num_point_features=channels,
                       max_num_voxels=max_voxels, max_num_points_per_voxel=max_points, device=torch.device("cpu"))
    return gen


def cases(device, quick):
    threads_list = [1] if quick else sorted({1, torch.get_num_threads()})
    out = []
    clouds = []
    if KITTI.exists():
        pts = _load(KITTI, 4)
        clouds.append(("KITTI 000001", pts, KITTI_VOXEL, KITTI_RANGE))
    else:
        pts = torch.rand(120000, 4) * torch.tensor([70.4, 80, 4, 1]) - torch.tensor([0, 40, 3, 0])
        clouds.append(("random 120k", pts, KITTI_VOXEL, KITTI_RANGE))
    nus = sorted(NUSCENES_DIR.glob("*.pcd.bin")) if NUSCENES_DIR.is_dir() else []
    if nus:
        clouds.append(("nuScenes LIDAR_TOP", _load(nus[0], 5), NUSCENES_VOXEL, NUSCENES_RANGE))
    if quick:
        clouds = [(name + " (first 8k)", pts[:8000], vs, pr) for name, pts, vs, pr in clouds[:1]]
    for name, pts, vs, pr in clouds:
        pts_dev = pts.to(device)
        offsets = torch.tensor([0, pts.shape[0]], device=device)
        capacities = [16000] if quick else [16000, 150000]
        for max_voxels in capacities:
            for threads in threads_list:
                comps = {"torch unique+sort": (lambda p=pts_dev, mv=max_voxels, v=vs, r=pr:
                                               torch_voxelize(p, v, r, 5, mv))}
                gen = _spconv(vs, pr, pts.shape[1], max_voxels, 5) if device.type == "cpu" else None
                if gen is not None:
                    comps = {"spconv PointToVoxel": (lambda g=gen, p=pts: g(p)), **comps}
                out.append(Case(op="voxelize (hard, P=5)", size=f"{name} ({pts.shape[0]} pts), max_voxels {max_voxels}",
                                threads=threads,
                                ours=(lambda p=pts_dev, o=offsets, mv=max_voxels, v=vs, r=pr:
                                      voxelize(p, o, v, r, 5, mv)),
                                competitors=comps, memory=not quick, repeat=3 if quick else 15))
        # Dynamic voxelization + mean of the point features into voxels (e.g. a dynamic VFE's input).
        for threads in threads_list:
            dyn = voxelize_dynamic(pts_dev, offsets, vs, pr)
            v = dyn.coords.shape[0]
            out.append(Case(op="voxelize_dynamic", size=f"{name} ({pts.shape[0]} pts)", threads=threads,
                            ours=(lambda p=pts_dev, o=offsets, vv=vs, r=pr: voxelize_dynamic(p, o, vv, r)),
                            repeat=3 if quick else 7))
            feats = torch.randn(pts.shape[0], 64, device=device)
            p2v = dyn.point_to_voxel
            keep = p2v >= 0
            for reduce, torch_reduce in (("mean", "mean"), ("max", "amax")):
                def baseline(f=feats, idx=p2v, k=keep, n=v, red=torch_reduce):
                    return f.new_zeros(n, f.shape[1]).scatter_reduce_(
                        0, idx[k][:, None].expand(-1, f.shape[1]), f[k], red, include_self=False)
                out.append(Case(op=f"scatter_to_voxels ({reduce}, C=64)", size=f"{name} -> {v} voxels",
                                threads=threads,
                                ours=(lambda f=feats, idx=p2v, n=v, red=reduce: scatter_to_voxels(f, idx, n, red)),
                                competitors={"torch scatter_reduce": baseline}, repeat=3 if quick else 7))
    return out
