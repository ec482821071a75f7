"""Slow, obviously-correct pure-PyTorch versions of every op: the tests' ground truth.

They favour clarity over speed (loops over clouds, dense distance matrices) and follow the same
conventions as the kernels: packed points + offsets, int64 indices, -1 padding, ties to the lowest
index.
"""
import torch  # noqa: F401


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
