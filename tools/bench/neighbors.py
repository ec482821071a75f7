"""Benchmarks of knn and ball_query against scipy's cKDTree, open3d's KDTreeFlann (when installed)
and a pure-PyTorch chunked cdist + topk. Every measured call does the whole work: index build plus
queries (our ops build their k-d tree inside every call)."""
import os
from pathlib import Path

import numpy as np
import torch

import pointmae.ops as ops
from bench.harness import Case

NOTES = []

def _find_kitti():
    """../shared/data beside the checkout (as tests/conftest.py), or POINTMAE_SHARED_DATA, or one level up
    (git worktrees live one folder deeper than the main checkout)."""
    root = Path(__file__).resolve().parents[2]
    candidates = [Path(os.environ["POINTMAE_SHARED_DATA"])] if "POINTMAE_SHARED_DATA" in os.environ else []
    candidates += [root.parent / "shared" / "data", root.parent.parent / "shared" / "data"]
    for data in candidates:
        path = data / "kitti" / "training" / "velodyne" / "000001.bin"
        if path.exists():
            return path
    return candidates[0] / "kitti" / "training" / "velodyne" / "000001.bin"


KITTI = _find_kitti()

try:
    from scipy.spatial import cKDTree
except ImportError:  # pragma: no cover
    cKDTree = None
    NOTES.append("scipy not installed: no cKDTree rows")

try:
    import open3d as o3d
except Exception as e:  # noqa: BLE001  (open3d fails to import for several reasons: missing libusb, ...)
    o3d = None
    NOTES.append(f"open3d not usable ({type(e).__name__}: {e}); left out")

NOTES.append("torch-cluster not installed (builds from source in several minutes; not tried); left out")
NOTES.append("on a busy machine with few cores, OpenMP's default active waiting (torch's libgomp) makes our "
             "timings erratic (spinning workers steal the cores the serial steps need); "
             "OMP_WAIT_POLICY=passive gives stable numbers. cKDTree uses its own threads and is not affected")
NOTES.append("ours = k-d tree build + queries in one call; cKDTree = build + query(workers = threads); "
             "ball query rows compare with cKDTree.query(k, distance_upper_bound=r), the same 'k nearest within r'")


def _torch_knn(query, points, k, radius=None, chunk=1024):
    """Pure-PyTorch baseline: chunked cdist + topk (sorted), masked by the radius for ball query."""
    outs = []
    for s in range(0, query.shape[0], chunk):
        d = torch.cdist(query[s:s + chunk], points).square_()
        val, idx = torch.topk(d, k, dim=1, largest=False, sorted=True)
        if radius is not None:
            idx = torch.where(val <= radius * radius, idx, torch.full_like(idx, -1))
        outs.append(idx)
    return torch.cat(outs)


def _scipy_knn(query_np, points_np, k, threads, radius=None):
    tree = cKDTree(points_np)
    if radius is None:
        return tree.query(query_np, k, workers=threads)
    return tree.query(query_np, k, distance_upper_bound=radius, workers=threads)


def _open3d_knn(query_np, points_np, k, radius=None):
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points_np.astype(np.float64)))
    tree = o3d.geometry.KDTreeFlann(pcd)
    out = []
    for q in query_np.astype(np.float64):
        if radius is None:
            out.append(tree.search_knn_vector_3d(q, k))
        else:
            out.append(tree.search_hybrid_vector_3d(q, radius, k))
    return out


def _load_kitti():
    raw = np.fromfile(KITTI, dtype=np.float32).reshape(-1, 4)
    return torch.from_numpy(raw[:, :3].copy())


def _case(op, size, threads, query, points, k, radius=None, torch_baseline=True, open3d=True, repeat=5):
    query_np, points_np = query.numpy(), points.numpy()
    if radius is None:
        ours = lambda: ops.knn(query, None, points, None, k)  # noqa: E731
    else:
        ours = lambda: ops.ball_query(query, None, points, None, radius, k)  # noqa: E731
    competitors = {}
    if cKDTree is not None:
        competitors["scipy cKDTree"] = lambda: _scipy_knn(query_np, points_np, k, threads, radius)
    if o3d is not None and open3d:
        competitors["open3d KDTreeFlann (1 thread, python loop)"] = lambda: _open3d_knn(query_np, points_np, k, radius)
    if torch_baseline:
        competitors["torch cdist+topk"] = lambda: _torch_knn(query, points, k, radius)
    return Case(op=op, size=size, threads=threads, ours=ours, competitors=competitors, repeat=repeat)


def cases(device, quick):
    if device.type != "cpu":
        NOTES.append("CUDA rows: only pointmae and torch cdist+topk (cKDTree is CPU-only)")
    threads = torch.get_num_threads()
    gen = torch.Generator().manual_seed(0)
    out = []
    if device.type == "cpu":
        n = 10_000 if quick else 100_000
        pts = torch.rand(n, 3, generator=gen)
        qry = torch.rand(n, 3, generator=gen)
        out.append(_case("knn", f"uniform {n} -> {n} queries, k=16", threads, qry, pts, 16,
                         torch_baseline=quick, open3d=quick))
        # ~16 neighbours expected within r in the unit cube: 4/3 pi r^3 n = 16.
        r = float((16 * 3 / (4 * np.pi * n)) ** (1 / 3))
        out.append(_case("ball_query", f"uniform {n} -> {n} queries, r={r:.4f}, k=32", threads, qry, pts, 32, radius=r,
                         torch_baseline=quick, open3d=quick))
        if KITTI.exists():
            kitti = _load_kitti()
            if quick:
                kitti = kitti[:20000]
            m = 512 if quick else 4096
            qk = kitti[torch.randperm(kitti.shape[0], generator=gen)[:m]]
            label = f"KITTI 000001 ({kitti.shape[0]} pts), {m} random queries"
            for k in (16, 32):
                out.append(_case("knn", f"{label}, k={k}", threads, qk, kitti, k))
            out.append(_case("ball_query", f"{label}, r=0.5, k=32", threads, qk, kitti, 32, radius=0.5))
            if not quick:
                out.append(_case("knn", f"KITTI 000001 all {kitti.shape[0]} pts -> themselves, k=16", threads, kitti,
                                 kitti, 16, torch_baseline=False, open3d=False, repeat=3))
        else:
            NOTES.append(f"KITTI sample not found at {KITTI}: no KITTI rows")
    else:
        n = 10_000 if quick else 100_000
        pts = torch.rand(n, 3, generator=gen, device=device)
        qry = torch.rand(n, 3, generator=gen, device="cpu").to(device)
        out.append(Case("knn", f"uniform {n} -> {n} queries, k=16", threads,
                        lambda: ops.knn(qry, None, pts, None, 16),
                        {"torch cdist+topk": lambda: _torch_knn(qry, pts, 16, chunk=8192)}))
        if KITTI.exists():
            kitti = _load_kitti().to(device)
            qk = kitti[torch.randperm(kitti.shape[0], generator=gen)[:4096].to(device)]
            for k in (16, 32, 128):
                out.append(Case("knn", f"KITTI 000001 ({kitti.shape[0]} pts), 4096 queries, k={k}", threads,
                                lambda k=k: ops.knn(qk, None, kitti, None, k),
                                {"torch cdist+topk": lambda k=k: _torch_knn(qk, kitti, k, chunk=4096)}))
            out.append(Case("ball_query", f"KITTI 000001, 4096 queries, r=0.5, k=32", threads,
                            lambda: ops.ball_query(qk, None, kitti, None, 0.5, 32),
                            {"torch cdist+topk": lambda: _torch_knn(qk, kitti, 32, 0.5, chunk=4096)}))
    return out

