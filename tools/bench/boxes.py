"""Benchmark of the rotated box ops: IoU matrices (BEV, 3D) and rotated BEV NMS.

Competitors: a vectorised pure-PyTorch rotated IoU (all 24 candidate vertices per pair: corners inside
the other box and edge-edge crossings, sorted by angle, shoelace), and shapely's vectorised polygon
intersection (small size only: it is slow). Boxes are scene-like: car-sized boxes scattered over a
100 m x 100 m area (most pairs far apart, as in evaluation), and for NMS detections clustered around
objects (most pairs near a kept box overlap, as after a detection head).
"""
import math

import torch

from bench.harness import Case
from pointmae.ops import boxes as box_ops

NOTES = ["torch-vectorised: 24 candidate vertices per pair (corners inside + edge crossings), angle sort, "
         "shoelace; computed in row chunks to bound memory. NMS baseline: the classic loop (best remaining box, "
         "one vectorised IoU row against the rest, drop the overlapping ones).",
         "scenes: car-sized boxes uniformly over 100 m x 100 m (IoU); NMS: 4096 detections jittered around 256 objects"]


def scene_boxes(n, seed, device, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 100 - 50
    z = torch.rand(n, 1, generator=g) * 2 - 1
    size = torch.tensor([3.9, 1.6, 1.56]) * (0.6 + 0.8 * torch.rand(n, 3, generator=g))
    heading = torch.rand(n, 1, generator=g) * 2 * math.pi - math.pi
    return torch.cat([xy, z, size, heading], 1).to(device, dtype)


def detections(n, objects, seed, device, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    centres = scene_boxes(objects, seed + 1, "cpu", torch.float32)
    det = centres[torch.randint(0, objects, (n,), generator=g)].clone()
    det[:, :2] += torch.randn(n, 2, generator=g) * 0.4
    det[:, 3:6] *= 1 + 0.1 * torch.randn(n, 3, generator=g)
    det[:, 6] += torch.randn(n, generator=g) * 0.15
    return det.to(device, dtype), torch.rand(n, generator=g).to(device, dtype)


# ------------------------------------------------------------------ vectorised pure-PyTorch competitor
def _corners(b):
    """(N, 7) -> (N, 4, 2) counter-clockwise corners."""
    c, s = torch.cos(b[:, 6]), torch.sin(b[:, 6])
    sx = b.new_tensor([1.0, -1.0, -1.0, 1.0]) * 0.5
    sy = b.new_tensor([1.0, 1.0, -1.0, -1.0]) * 0.5
    lx, ly = sx * b[:, 3:4], sy * b[:, 4:5]
    return torch.stack([b[:, 0:1] + c[:, None] * lx - s[:, None] * ly, b[:, 1:2] + s[:, None] * lx + c[:, None] * ly], -1)


def _inside(points, b):
    """points (N, M, K, 2) inside boxes b broadcast as (1 or N, M, 7)? -> bool (N, M, K)."""
    d = points - b[..., None, 0:2]
    c, s = torch.cos(b[..., 6])[..., None], torch.sin(b[..., 6])[..., None]
    lx = c * d[..., 0] + s * d[..., 1]
    ly = -s * d[..., 0] + c * d[..., 1]
    eps = 1e-6
    return (lx.abs() <= b[..., 3, None] / 2 + eps) & (ly.abs() <= b[..., 4, None] / 2 + eps)


def _intersection_area_vectorised(a, b):
    ca, cb = _corners(a), _corners(b)                      # (N, 4, 2), (M, 4, 2)
    n, m = a.shape[0], b.shape[0]
    A = ca[:, None].expand(n, m, 4, 2)
    B = cb[None].expand(n, m, 4, 2)
    in_b = _inside(A, b[None].expand(n, m, 7))               # corners of a inside b
    in_a = _inside(B, a[:, None].expand(n, m, 7))            # corners of b inside a
    p1, p2 = A[:, :, :, None], A.roll(-1, 2)[:, :, :, None]  # edges of a: (N, M, 4, 1, 2)
    q1, q2 = B[:, :, None], B.roll(-1, 2)[:, :, None]        # edges of b: (N, M, 1, 4, 2)
    r, sv = p2 - p1, q2 - q1
    denom = r[..., 0] * sv[..., 1] - r[..., 1] * sv[..., 0]
    qp = q1 - p1
    safe = torch.where(denom.abs() > 1e-12, denom, torch.ones_like(denom))
    tt = (qp[..., 0] * sv[..., 1] - qp[..., 1] * sv[..., 0]) / safe
    uu = (qp[..., 0] * r[..., 1] - qp[..., 1] * r[..., 0]) / safe
    cross_ok = (denom.abs() > 1e-12) & (tt >= 0) & (tt <= 1) & (uu >= 0) & (uu <= 1)
    crossing = p1 + tt[..., None] * r                        # (N, M, 4, 4, 2)
    pts = torch.cat([A, B, crossing.reshape(n, m, 16, 2)], 2)  # (N, M, 24, 2)
    valid = torch.cat([in_b, in_a, cross_ok.reshape(n, m, 16)], 2)
    count = valid.sum(-1)
    centre = (pts * valid[..., None]).sum(2) / count.clamp(min=1)[..., None]
    rel = pts - centre[:, :, None]
    angle = torch.atan2(rel[..., 1], rel[..., 0]).masked_fill(~valid, 10.0)
    order = angle.argsort(-1)
    rel = rel.gather(2, order[..., None].expand_as(rel))
    valid_sorted = valid.gather(2, order)
    first = rel[:, :, :1].expand_as(rel)
    rel = torch.where(valid_sorted[..., None], rel, first)   # invalid slots repeat the first vertex
    nxt = rel.roll(-1, 2)
    area = 0.5 * (rel[..., 0] * nxt[..., 1] - nxt[..., 0] * rel[..., 1]).sum(-1).abs()
    return torch.where(count >= 3, area, torch.zeros_like(area))


def torch_iou_vectorised(a, b, three_d=False, chunk=128):
    out = []
    for i in range(0, a.shape[0], chunk):
        ai = a[i:i + chunk]
        inter = _intersection_area_vectorised(ai, b)
        area_a, area_b = ai[:, 3] * ai[:, 4], b[:, 3] * b[:, 4]
        if three_d:
            zo = (torch.minimum(ai[:, None, 2] + ai[:, None, 5] / 2, b[None, :, 2] + b[None, :, 5] / 2)
                  - torch.maximum(ai[:, None, 2] - ai[:, None, 5] / 2, b[None, :, 2] - b[None, :, 5] / 2)).clamp(min=0)
            inter = inter * zo
            area_a, area_b = area_a * ai[:, 5], area_b * b[:, 5]
        union = area_a[:, None] + area_b[None] - inter
        out.append(torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter)))
    return torch.cat(out)


def torch_nms(boxes, scores, thr):
    """The classic loop (as in the numpy py_cpu_nms): take the best remaining box, drop the remaining
    boxes that overlap it, repeat; each step is one vectorised 1 x R IoU row."""
    order = torch.sort(scores, descending=True, stable=True).indices
    keep = []
    while order.numel() > 0:
        best = order[0]
        keep.append(best)
        rest = order[1:]
        if rest.numel() == 0:
            break
        iou = torch_iou_vectorised(boxes[best].unsqueeze(0), boxes[rest])[0]
        order = rest[iou <= thr]
    return torch.stack(keep) if keep else order


def shapely_iou(a, b):
    import numpy as np
    import shapely

    def polys(x):
        return shapely.polygons(_corners(x.double().cpu()).numpy())

    pa, pb = polys(a), polys(b)
    inter = shapely.area(shapely.intersection(pa[:, None], pb[None, :]))
    union = shapely.area(pa)[:, None] + shapely.area(pb)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def cases(device, quick):
    threads = torch.get_num_threads()
    out = []
    sizes = [(32, 32)] if quick else [(500, 500), (2000, 2000)]
    for n, m in sizes:
        a, b = scene_boxes(n, 0, device), scene_boxes(m, 1, device)
        for op, fn, three_d in (("box_iou_bev", box_ops.box_iou_bev, False), ("box_iou_3d", box_ops.box_iou_3d, True)):
            comp = {"torch-vectorised": lambda a=a, b=b, t=three_d: torch_iou_vectorised(a, b, t)}
            # the vectorised baseline takes seconds per call at 2000 x 2000: fewer repeats there
            out.append(Case(op=op, size=f"{n} x {m} scene boxes, float32", threads=threads,
                            ours=lambda fn=fn, a=a, b=b: fn(a, b), competitors=comp, repeat=3 if n > 500 else 5))
    # shapely only at a small size (a Python-object polygon per box, GEOS per pair)
    small = 32 if quick else 200
    a, b = scene_boxes(small, 2, device), detections(small, small // 2, 3, device)[0]
    comp = {"torch-vectorised": lambda: torch_iou_vectorised(a, b)}
    try:
        import shapely  # noqa: F401
        comp["shapely"] = lambda: shapely_iou(a, b)
    except ImportError:
        NOTES.append("shapely not installed: left out")
    out.append(Case(op="box_iou_bev", size=f"{small} x {small} overlapping boxes, float32", threads=threads,
                    ours=lambda: box_ops.box_iou_bev(a, b), competitors=comp))
    n_det = 256 if quick else 4096
    det, scores = detections(n_det, n_det // 16, 4, device)
    out.append(Case(op="nms_bev", size=f"{n_det} detections around {n_det // 16} objects, thr 0.5", threads=threads,
                    ours=lambda: box_ops.nms_bev(det, scores, 0.5),
                    competitors={"torch-vectorised": lambda: torch_nms(det, scores, 0.5)},
                    repeat=2))
    return out
