"""Slow, obviously-correct pure-PyTorch versions of every op: the tests' ground truth.

They favour clarity over speed (loops over clouds, dense distance matrices) and follow the same
conventions as the kernels: packed points + offsets, int64 indices, -1 padding, ties to the lowest
index.
"""
import torch  # noqa: F401


# ---------------------------------------------------------------- sampling: farthest point sampling
def fps_dist2(points: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
    """THE squared distance of FPS (csrc/fps/fps_core.h): (dx*dx + dy*dy) + dz*dz, each operation
    rounded on its own, in the accumulation dtype (the input dtype; float32 for float16)."""
    d = points - sample
    return (d[:, 0] * d[:, 0] + d[:, 1] * d[:, 1]) + d[:, 2] * d[:, 2]


def fps(points: torch.Tensor, offsets: torch.Tensor, num_samples: int, start_idx: torch.Tensor) -> torch.Tensor:
    """Naive O(N * M) farthest point sampling, cloud by cloud.

    points (N, 3) float, offsets (B+1,) int64, start_idx (B,) int64 local indices.
    Returns (B, num_samples) int64 indices into the packed points. The next sample is the unselected
    point whose distance to its nearest sample is largest; ties go to the lowest index; selected
    points are never picked again (duplicates included).
    """
    acc = torch.float32 if points.dtype == torch.float16 else points.dtype
    pts = points.to(acc)
    offsets = offsets.tolist()
    starts = start_idx.tolist()
    out = torch.empty((len(offsets) - 1, num_samples), dtype=torch.int64)
    for b in range(len(offsets) - 1):
        if num_samples == 0:
            continue
        lo, hi = offsets[b], offsets[b + 1]
        cloud = pts[lo:hi]
        min_dist = torch.full((hi - lo,), float("inf"), dtype=acc)
        selected = torch.zeros(hi - lo, dtype=torch.bool)
        current = starts[b]
        for k in range(num_samples):
            out[b, k] = lo + current
            selected[current] = True
            min_dist = torch.minimum(min_dist, fps_dist2(cloud, cloud[current]))
            candidates = min_dist.masked_fill(selected, -1.0)
            if k + 1 < num_samples:
                # first (lowest) index among the maxima of the unselected points
                current = int(torch.nonzero(candidates == candidates.max())[0, 0])
    return out.to(points.device)
# ------------------------------------------------------------------------------ neighbours (knn, ball_query)
def squared_distance_reference(query: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """(Q, 3), (N, 3) -> (Q, N): the one distance formula of the neighbour ops.

    ((dx*dx) + (dy*dy)) + (dz*dz), every operation a separate rounded tensor op in the input dtype, so
    that it matches the kernels bit for bit (see csrc/neighbors/neighbors_core.h).
    """
    dx = query[:, None, 0] - points[None, :, 0]
    dy = query[:, None, 1] - points[None, :, 1]
    dz = query[:, None, 2] - points[None, :, 2]
    return dx * dx + dy * dy + dz * dz


def _neighbors_reference(query, query_offsets, points, point_offsets, k, max_dist2, chunk=256):
    out_dtype = query.dtype
    compute = torch.float32 if query.dtype == torch.float16 else query.dtype
    query, points = query.to(compute), points.to(compute)
    num_queries = query.shape[0]
    dist = torch.full((num_queries, k), float("inf"), dtype=compute, device=query.device)
    idx = torch.full((num_queries, k), -1, dtype=torch.int64, device=query.device)
    limit = torch.tensor(max_dist2, dtype=compute)
    qo, po = query_offsets.tolist(), point_offsets.tolist()
    for b in range(len(qo) - 1):
        p_begin, p_end = po[b], po[b + 1]
        take = min(k, p_end - p_begin)
        if take == 0:
            continue
        for q_begin in range(qo[b], qo[b + 1], chunk):
            q_end = min(q_begin + chunk, qo[b + 1])
            d = squared_distance_reference(query[q_begin:q_end], points[p_begin:p_end])
            # A stable sort keeps equal distances in index order: ties go to the lowest index.
            sorted_d, order = torch.sort(d, dim=1, stable=True)
            sorted_d, order = sorted_d[:, :take], order[:, :take]
            within = sorted_d <= limit.to(d.device)
            dist[q_begin:q_end, :take] = torch.where(within, sorted_d, torch.full_like(sorted_d, float("inf")))
            idx[q_begin:q_end, :take] = torch.where(within, order + p_begin, torch.full_like(order, -1))
    return dist.to(out_dtype), idx


def knn_reference(query, query_offsets, points, point_offsets, k):
    """Dense kNN: (dist2 (Q, k) ascending, idx (Q, k) packed), ties by lowest index, -1 / inf padding."""
    return _neighbors_reference(query, query_offsets, points, point_offsets, k, float("inf"))


def ball_query_reference(query, query_offsets, points, point_offsets, radius, k):
    """Dense ball query: the (up to) k nearest points with dist2 <= radius^2 (radius^2 computed in
    float64, rounded once to the dtype), ascending, ties by lowest index, -1 / inf padding."""
    return _neighbors_reference(query, query_offsets, points, point_offsets, k, float(radius) * float(radius))
# ---------------------------------------------------------------------------- grouping (gather_points)

def gather_points(features: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """(N, C), (Q, k) int64 with -1 padding -> (Q, k, C); padding rows are zero."""
    out = torch.zeros(idx.shape + (features.shape[1],), dtype=features.dtype, device=features.device)
    valid = idx >= 0
    out[valid] = features[idx[valid]]
    return out


def gather_points_backward(grad_out: torch.Tensor, idx: torch.Tensor, num_points: int) -> torch.Tensor:
    """Adjoint of gather_points: grad[p] = sum of grad_out[q, j] over idx[q, j] = p, in increasing (q, j)
    order (accumulated in float64, then rounded to the dtype of grad_out)."""
    c = grad_out.shape[-1]
    grad = torch.zeros(num_points, c, dtype=torch.float64, device=grad_out.device)
    flat_idx = idx.reshape(-1)
    flat_grad = grad_out.reshape(-1, c).to(torch.float64)
    for e in range(flat_idx.numel()):
        p = int(flat_idx[e])
        if p >= 0:
            grad[p] += flat_grad[e]
    return grad.to(grad_out.dtype)


# ---------------------------------------------------------------------------- Chamfer distance

def squared_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The one squared distance: dx*dx + dy*dy + dz*dz, left to right, each operation rounded in the
    compute dtype (float32 for float16 inputs). a, b broadcast to (..., 3)."""
    d = a - b
    return d[..., 0] * d[..., 0] + d[..., 1] * d[..., 1] + d[..., 2] * d[..., 2]


def _nearest(query: torch.Tensor, partner: torch.Tensor):
    """Nearest partner of every query with the ordering of the kernels: smaller distance, then lower
    index; NaN after every number (all NaN -> index 0, NaN); no partner -> +inf, -1."""
    q = query.shape[0]
    if partner.shape[0] == 0:
        return (torch.full((q,), float("inf"), dtype=query.dtype, device=query.device),
                torch.full((q,), -1, dtype=torch.int64, device=query.device))
    d = squared_distance(query[:, None, :], partner[None, :, :])     # (q, m): a dense matrix, fine here
    finite_min = torch.where(torch.isnan(d), torch.full_like(d, float("inf")), d).min(dim=1).values
    is_best = d == finite_min[:, None]                                # NaN never equals
    has_best = is_best.any(dim=1)
    first = torch.argmax(is_best.to(torch.uint8), dim=1)            # first True = lowest index
    idx = torch.where(has_best, first, torch.zeros_like(first))
    dist = torch.where(has_best, finite_min, torch.full_like(finite_min, float("nan")))
    return dist, idx


def chamfer_distance(x: torch.Tensor, x_offsets: torch.Tensor, y: torch.Tensor, y_offsets: torch.Tensor):
    """Packed Chamfer distance: (dist_x (Nx,), idx_x (Nx,), dist_y (Ny,), idx_y (Ny,)), indices packed.

    float16 inputs are computed in float32 and the distances rounded to float16, as in the kernels.
    Not differentiable itself; see `chamfer_distance_differentiable`.
    """
    compute = torch.float32 if x.dtype == torch.float16 else x.dtype
    xc, yc = x.to(compute), y.to(compute)
    dist_x = torch.empty(x.shape[0], dtype=compute, device=x.device)
    dist_y = torch.empty(y.shape[0], dtype=compute, device=y.device)
    idx_x = torch.empty(x.shape[0], dtype=torch.int64, device=x.device)
    idx_y = torch.empty(y.shape[0], dtype=torch.int64, device=y.device)
    for b in range(x_offsets.numel() - 1):
        x0, x1 = int(x_offsets[b]), int(x_offsets[b + 1])
        y0, y1 = int(y_offsets[b]), int(y_offsets[b + 1])
        d, i = _nearest(xc[x0:x1], yc[y0:y1])
        dist_x[x0:x1], idx_x[x0:x1] = d, torch.where(i < 0, i, i + y0)
        d, i = _nearest(yc[y0:y1], xc[x0:x1])
        dist_y[y0:y1], idx_y[y0:y1] = d, torch.where(i < 0, i, i + x0)
    return dist_x.to(x.dtype), idx_x, dist_y.to(y.dtype), idx_y


def chamfer_distance_differentiable(x, x_offsets, y, y_offsets):
    """(dist_x, dist_y) recomputed from the reference indices with plain autograd ops, for gradients."""
    _, idx_x, _, idx_y = chamfer_distance(x.detach(), x_offsets, y.detach(), y_offsets)
    big = torch.full((), float("inf"), dtype=x.dtype, device=x.device)
    dist_x = torch.where(idx_x >= 0, squared_distance(x, y[idx_x.clamp(min=0)]) if y.shape[0] else big, big)
    dist_y = torch.where(idx_y >= 0, squared_distance(y, x[idx_y.clamp(min=0)]) if x.shape[0] else big, big)
    return dist_x, dist_y


def chamfer_loss(x, x_offsets, y, y_offsets, variant: str = "l2", reduction: str = "mean"):
    """Point-MAE's Chamfer losses per cloud, then averaged over clouds ('mean') or not ('none').
    l2: mean dist_x + mean dist_y; l1: (mean sqrt dist_x + mean sqrt dist_y) / 2."""
    dist_x, dist_y = chamfer_distance_differentiable(x, x_offsets, y, y_offsets)
    per_cloud = []
    for b in range(x_offsets.numel() - 1):
        dx = dist_x[int(x_offsets[b]):int(x_offsets[b + 1])]
        dy = dist_y[int(y_offsets[b]):int(y_offsets[b + 1])]
        if variant == "l2":
            per_cloud.append(dx.mean() + dy.mean())
        else:
            per_cloud.append((dx.sqrt().mean() + dy.sqrt().mean()) / 2)
    per_cloud = torch.stack(per_cloud)
    return per_cloud.mean() if reduction == "mean" else per_cloud
# ---------------------------------------------------------------------------------------------------
# voxelization (pointmae.ops.voxelize): one Python dict per cloud, walked in point order.
def _voxel_grid_reference(voxel_size, point_range):
    """Grid size per axis: round((x1 - x0) / vx), half away from zero (C++ std::round)."""
    import math
    return [int(math.floor((point_range[d + 3] - point_range[d]) / voxel_size[d] + 0.5)) for d in range(3)]


def voxel_cells_reference(points, voxel_size, point_range):
    """(N, 3) int64 voxel cells (ix, iy, iz) and (N,) status: 0 inside, 1 outside range, 2 non-finite.

    float64 arithmetic: inside when x0 <= x < x1; ix = floor((x - x0) / vx), kept when 0 <= ix < gx.
    """
    p = points[:, :3].to(torch.float64)
    lo = torch.tensor(point_range[:3], dtype=torch.float64)
    hi = torch.tensor(point_range[3:], dtype=torch.float64)
    size = torch.tensor(voxel_size, dtype=torch.float64)
    dims = torch.tensor(_voxel_grid_reference(voxel_size, point_range), dtype=torch.float64)
    finite = torch.isfinite(p).all(1)
    cell = torch.floor((p - lo) / size)
    inside = finite & (p >= lo).all(1) & (p < hi).all(1) & (cell >= 0).all(1) & (cell < dims).all(1)
    status = torch.where(finite, torch.where(inside, 0, 1), 2)
    cell = torch.where(inside[:, None], cell, torch.zeros_like(cell)).to(torch.int64)
    return cell, status


def voxelize_reference(points, offsets, voxel_size, point_range, max_points_per_voxel, max_voxels):
    """Hard voxelization; returns (voxels, coords, num_points, voxel_offsets, stats) like the op."""
    points = points.cpu()
    offsets = offsets.cpu().tolist()
    num_clouds, channels, cap = len(offsets) - 1, points.shape[1], max_points_per_voxel
    cell, status = voxel_cells_reference(points, voxel_size, point_range)
    cells, statuses = cell.tolist(), status.tolist()
    voxels, coords, num_points, voxel_offsets, stats = [], [], [], [0], []
    for b in range(num_clouds):
        slot_of = {}  # (ix, iy, iz) -> voxel number in this cloud, in order of first appearance
        kept = over = 0
        cloud_voxels = []
        for i in range(offsets[b], offsets[b + 1]):
            if statuses[i] != 0:
                continue
            key = tuple(cells[i])
            if key not in slot_of:
                if len(slot_of) >= max_voxels:
                    over += 1
                    continue
                slot_of[key] = len(cloud_voxels)
                cloud_voxels.append([key, []])
            rows = cloud_voxels[slot_of[key]][1]
            if len(rows) < cap:
                rows.append(i)
                kept += 1
            else:
                over += 1
        for (ix, iy, iz), rows in cloud_voxels:
            v = torch.zeros(cap, channels, dtype=points.dtype)
            v[:len(rows)] = points[rows]
            voxels.append(v)
            coords.append([b, iz, iy, ix])
            num_points.append(len(rows))
        voxel_offsets.append(voxel_offsets[-1] + len(cloud_voxels))
        s = status[offsets[b]:offsets[b + 1]]
        stats.append([kept, int((s == 1).sum()), int((s == 2).sum()), over])
    voxels = torch.stack(voxels) if voxels else torch.zeros(0, cap, channels, dtype=points.dtype)
    return (voxels, torch.tensor(coords, dtype=torch.int32).reshape(-1, 4),
            torch.tensor(num_points, dtype=torch.int32), torch.tensor(voxel_offsets, dtype=torch.int64),
            torch.tensor(stats, dtype=torch.int64).reshape(num_clouds, 4))


def voxelize_dynamic_reference(points, offsets, voxel_size, point_range):
    """Dynamic voxelization; returns (point_to_voxel, coords, voxel_offsets, stats) like the op."""
    points = points.cpu()
    offsets = offsets.cpu().tolist()
    num_clouds = len(offsets) - 1
    cell, status = voxel_cells_reference(points, voxel_size, point_range)
    cells, statuses = cell.tolist(), status.tolist()
    point_to_voxel = [-1] * points.shape[0]
    coords, voxel_offsets, stats = [], [0], []
    for b in range(num_clouds):
        voxel_of = {}
        for i in range(offsets[b], offsets[b + 1]):
            if statuses[i] != 0:
                continue
            key = tuple(cells[i])
            if key not in voxel_of:
                voxel_of[key] = len(coords)
                coords.append([b, key[2], key[1], key[0]])
            point_to_voxel[i] = voxel_of[key]
        voxel_offsets.append(len(coords))
        s = status[offsets[b]:offsets[b + 1]]
        stats.append([int((s == 0).sum()), int((s == 1).sum()), int((s == 2).sum())])
    return (torch.tensor(point_to_voxel, dtype=torch.int64), torch.tensor(coords, dtype=torch.int32).reshape(-1, 4),
            torch.tensor(voxel_offsets, dtype=torch.int64), torch.tensor(stats, dtype=torch.int64).reshape(num_clouds, 3))


def scatter_to_voxels_reference(features, point_to_voxel, num_voxels, reduce="mean"):
    """(out (V, C), arg (V, C) int64 for "max" / None): a loop over voxels; max ties to the lowest point
    index, the first NaN wins; empty voxels give 0 (arg -1)."""
    channels = features.shape[1]
    out = features.new_zeros(num_voxels, channels)
    arg = torch.full((num_voxels, channels), -1, dtype=torch.int64, device=features.device)
    for v in range(num_voxels):
        members = torch.nonzero(point_to_voxel == v).flatten()  # ascending point index
        if members.numel() == 0:
            continue
        rows = features[members]
        if reduce == "mean":
            out[v] = rows.sum(0) / members.numel()
        else:
            nan = torch.isnan(rows)
            best = torch.where(nan.any(0), torch.full_like(rows[0], float("nan")), rows.max(0).values)
            hit = torch.where(nan.any(0)[None, :], nan, rows == best[None, :])
            first = torch.argmax(hit.to(torch.int8), dim=0)  # first maximal entry = lowest point index
            out[v] = best
            arg[v] = members[first]
    return out, (arg if reduce == "max" else None)
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
