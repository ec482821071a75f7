"""Slow, obviously-correct pure-PyTorch versions of every op: the tests' ground truth.

They favour clarity over speed (loops over clouds, dense distance matrices) and follow the same
conventions as the kernels: packed points + offsets, int64 indices, -1 padding, ties to the lowest
index.
"""
import torch  # noqa: F401


# ---------------------------------------------------------------------------------------------- boxes
# Rotated boxes (x, y, z, dx, dy, dz, heading, ...): world-coordinate Sutherland-Hodgman clipping of
# one rectangle by the four edges of the other, in float64, one pair at a time. Deliberately a
# different formulation from the kernels (which clip in the local frame of one box).

def box_corners_bev(box: torch.Tensor) -> torch.Tensor:
    """(>=7,) box -> (4, 2) float64 corners in the x-y plane, counter-clockwise."""
    b = box.double()
    x, y, dx, dy, h = b[0], b[1], b[3], b[4], b[6]
    local = torch.stack([torch.stack([dx / 2, dy / 2]), torch.stack([-dx / 2, dy / 2]),
                         torch.stack([-dx / 2, -dy / 2]), torch.stack([dx / 2, -dy / 2])])
    rot = torch.stack([torch.stack([torch.cos(h), -torch.sin(h)]), torch.stack([torch.sin(h), torch.cos(h)])])
    return local @ rot.T + torch.stack([x, y])


def _polygon_area(poly) -> float:
    n = len(poly)
    if n < 3:
        return 0.0
    s = 0.0
    for i in range(n):
        (x0, y0), (x1, y1) = poly[i], poly[(i + 1) % n]
        s += x0 * y1 - x1 * y0
    return abs(s) / 2.0


def convex_polygon_intersection_area(subject, clip) -> float:
    """Area of the intersection of two convex polygons given as lists of (x, y), clip counter-clockwise."""
    out = [tuple(p) for p in subject]
    for i in range(len(clip)):
        a, b = clip[i], clip[(i + 1) % len(clip)]

        def side(p):  # > 0 left of a->b (inside for a counter-clockwise clip polygon)
            return (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0])

        src, out = out, []
        for j in range(len(src)):
            p, q = src[j], src[(j + 1) % len(src)]
            sp, sq = side(p), side(q)
            if (sp >= 0) != (sq >= 0):
                t = sp / (sp - sq)
                out.append((p[0] + t * (q[0] - p[0]), p[1] + t * (q[1] - p[1])))
            if sq >= 0:
                out.append(q)
        if not out:
            return 0.0
    return _polygon_area(out)


def box_intersection_bev(a: torch.Tensor, b: torch.Tensor) -> float:
    area_a, area_b = float(a[3] * a[4]), float(b[3] * b[4])
    if area_a <= 0 or area_b <= 0:
        return 0.0
    inter = convex_polygon_intersection_area(box_corners_bev(a).tolist(), box_corners_bev(b).tolist())
    return min(inter, area_a, area_b)


def box_iou_bev(boxes_a: torch.Tensor, boxes_b: torch.Tensor) -> torch.Tensor:
    """(N, >=7), (M, >=7) -> (N, M) BEV IoU, in the dtype of boxes_a; 0 where the union is empty."""
    out = torch.zeros(boxes_a.shape[0], boxes_b.shape[0], dtype=torch.float64)
    for i, a in enumerate(boxes_a.double().cpu()):
        for j, b in enumerate(boxes_b.double().cpu()):
            inter = box_intersection_bev(a, b)
            union = float(a[3] * a[4]) + float(b[3] * b[4]) - inter
            out[i, j] = inter / union if union > 0 else 0.0
    return out.to(boxes_a.dtype)


def box_iou_3d(boxes_a: torch.Tensor, boxes_b: torch.Tensor) -> torch.Tensor:
    """(N, >=7), (M, >=7) -> (N, M) 3D IoU of upright boxes: BEV intersection x z overlap / union volume."""
    out = torch.zeros(boxes_a.shape[0], boxes_b.shape[0], dtype=torch.float64)
    for i, a in enumerate(boxes_a.double().cpu()):
        for j, b in enumerate(boxes_b.double().cpu()):
            z_overlap = min(float(a[2] + a[5] / 2), float(b[2] + b[5] / 2)) - max(float(a[2] - a[5] / 2),
                                                                                 float(b[2] - b[5] / 2))
            inter = box_intersection_bev(a, b) * max(z_overlap, 0.0)
            union = float(a[3] * a[4] * a[5]) + float(b[3] * b[4] * b[5]) - inter
            out[i, j] = inter / union if union > 0 and inter > 0 else 0.0
    return out.to(boxes_a.dtype)


def nms_bev(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS: by descending score (ties: lower index), keep a box unless its BEV IoU with a kept
    box is > iou_threshold. Returns (K,) int64."""
    order = sorted(range(boxes.shape[0]), key=lambda i: (-float(scores[i]), i))
    kept = []
    for i in order:
        if all(float(box_iou_bev(boxes[i:i + 1], boxes[k:k + 1])[0, 0]) <= iou_threshold for k in kept):
            kept.append(i)
    return torch.tensor(kept, dtype=torch.int64)
