"""Ray casting from the sensor origin against analytic primitives, all rays of a primitive at once.

Primitives (all upright, written in the sensor frame; the sensor sits at the origin):
* box      (cx, cy, cz, half_x, half_y, half_z, yaw)  slab test in the box's own frame
                                                      (Kay & Kajiya 1986, "Ray tracing complex scenes")
* cylinder (cx, cy, z_bottom, z_top, radius)          vertical; side by the 2D quadratic, plus top cap
* sphere   (cx, cy, cz, radius)                       quadratic
* the ground, a height field z = a x + b y + c + roughness(x, y), by fixed-point iteration on the plane
  intersection (converges because the roughness slope is small against the ray's grazing angle).

Occlusion is real: every ray keeps the nearest hit over all primitives. To keep one 120k-ray frame
under a second on one core, each primitive only tests the sub-grid of (beam, column) rays that can
reach its bounding cylinder: the azimuth interval it subtends and the elevation interval spanned by
its height range at its nearest and farthest horizontal distance.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BOX, CYLINDER, SPHERE = 0, 1, 2


@dataclass
class Primitives:
    """K primitives. params (K, 7) per kind as in the module docstring (unused slots 0)."""
    kind: np.ndarray        # (K,) int
    params: np.ndarray      # (K, 7) float64
    albedo: np.ndarray      # (K,) reflectivity 0..1 (Lambertian)
    dropout: np.ndarray     # (K,) extra probability of no return (glass, dark rubber)
    porosity: np.ndarray    # (K,) probability a ray passes through (foliage)
    owner: np.ndarray       # (K,) agent index, -1 for scenery

    def __len__(self):
        return len(self.kind)

    def bounds(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Bounding vertical cylinders: centre x, y, horizontal radius, z_min, z_max (each (K,))."""
        p, kind = self.params, self.kind
        cx, cy = p[:, 0].copy(), p[:, 1].copy()
        radius = np.where(kind == BOX, np.hypot(p[:, 3], p[:, 4]),
                          np.where(kind == CYLINDER, p[:, 4], p[:, 3]))
        z_min = np.where(kind == BOX, p[:, 2] - p[:, 5], np.where(kind == CYLINDER, p[:, 2], p[:, 2] - p[:, 3]))
        z_max = np.where(kind == BOX, p[:, 2] + p[:, 5], np.where(kind == CYLINDER, p[:, 3], p[:, 2] + p[:, 3]))
        return cx, cy, radius, z_min, z_max


def _intersect_box(d, params):
    cx, cy, cz, hx, hy, hz, yaw = params
    c, s = np.cos(yaw), np.sin(yaw)
    # Ray origin (0,0,0) and direction d in the box's frame.
    o = np.array([-(cx * c + cy * s), -(-cx * s + cy * c), -cz])
    dl = np.stack([d[:, 0] * c + d[:, 1] * s, -d[:, 0] * s + d[:, 1] * c, d[:, 2]], axis=1)
    half = np.array([hx, hy, hz])
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / dl
        t1 = (-half - o) * inv
        t2 = (half - o) * inv
    near = np.minimum(t1, t2)
    far = np.maximum(t1, t2)
    axis = np.argmax(near, axis=1)
    t_near = near[np.arange(len(d)), axis]
    t_far = far.min(axis=1)
    hit = (t_near <= t_far) & (t_near > 0)
    t = np.where(hit, t_near, np.inf)
    # Normal of the entry face: -sign(direction) along the entry axis, rotated back.
    sign = -np.sign(dl[np.arange(len(d)), axis])
    nl = np.zeros_like(dl)
    nl[np.arange(len(d)), axis] = sign
    normal = np.stack([nl[:, 0] * c - nl[:, 1] * s, nl[:, 0] * s + nl[:, 1] * c, nl[:, 2]], axis=1)
    return t, normal


def _intersect_cylinder(d, params):
    cx, cy, z0, z1, r = params[:5]
    a = d[:, 0] ** 2 + d[:, 1] ** 2
    b = -2.0 * (cx * d[:, 0] + cy * d[:, 1])
    c = cx * cx + cy * cy - r * r
    disc = b * b - 4 * a * c
    with np.errstate(invalid="ignore", divide="ignore"):
        t_side = (-b - np.sqrt(disc)) / (2 * a)
    z_side = t_side * d[:, 2]
    side = (disc >= 0) & (t_side > 0) & (z_side >= z0) & (z_side <= z1)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_cap = z1 / d[:, 2]
    cap_x, cap_y = t_cap * d[:, 0] - cx, t_cap * d[:, 1] - cy
    cap = (t_cap > 0) & (z1 < 0) & (cap_x ** 2 + cap_y ** 2 <= r * r)  # top seen from above only
    t = np.where(side, t_side, np.where(cap, t_cap, np.inf))
    normal = np.zeros_like(d)
    normal[:, 0] = np.where(side, (t_side * d[:, 0] - cx) / r, 0.0)
    normal[:, 1] = np.where(side, (t_side * d[:, 1] - cy) / r, 0.0)
    normal[:, 2] = np.where(side, 0.0, 1.0)
    return t, normal


def _intersect_sphere(d, params):
    centre = params[:3]
    r = params[3]
    b = d @ centre
    disc = b * b - (centre @ centre - r * r)
    with np.errstate(invalid="ignore"):
        t = b - np.sqrt(disc)
    t = np.where((disc >= 0) & (t > 0), t, np.inf)
    with np.errstate(invalid="ignore"):
        normal = (t[:, None] * d - centre) / r
    return t, normal


_INTERSECT = {BOX: _intersect_box, CYLINDER: _intersect_cylinder, SPHERE: _intersect_sphere}


@dataclass
class GroundField:
    """z = slope_x * x + slope_y * y + offset + sum_i amp_i * sin(kx_i x + ky_i y + phase_i), sensor frame.

    The wave terms are defined in world coordinates and shifted into the sensor frame by the caller
    (`phase` absorbs the translation, (kx, ky) the rotation), so the terrain stays put as the ego moves."""
    slope_x: float
    slope_y: float
    offset: float
    wave_k: np.ndarray       # (W, 2)
    wave_phase: np.ndarray   # (W,)
    wave_amp: np.ndarray     # (W,)

    def height(self, x, y):
        z = self.slope_x * x + self.slope_y * y + self.offset
        for (kx, ky), ph, amp in zip(self.wave_k, self.wave_phase, self.wave_amp):
            z = z + amp * np.sin(kx * x + ky * y + ph)
        return z

    def gradient(self, x, y):
        gx = np.full_like(x, self.slope_x)
        gy = np.full_like(y, self.slope_y)
        for (kx, ky), ph, amp in zip(self.wave_k, self.wave_phase, self.wave_amp):
            cos = amp * np.cos(kx * x + ky * y + ph)
            gx, gy = gx + kx * cos, gy + ky * cos
        return gx, gy

    def intersect(self, d, iterations: int = 3):
        denom = d[:, 2] - self.slope_x * d[:, 0] - self.slope_y * d[:, 1]
        down = denom < -1e-6
        dd = d[down]
        den = denom[down]
        t = self.offset / den                     # the plane alone
        for _ in range(iterations):
            x, y = t * dd[:, 0], t * dd[:, 1]
            rough = self.height(x, y) - (self.slope_x * x + self.slope_y * y + self.offset)
            t = (self.offset + rough) / den
        t_all = np.full(len(d), np.inf)
        t_all[down] = np.where(t > 0, t, np.inf)
        gx, gy = self.gradient(t_all[down] * dd[:, 0], t_all[down] * dd[:, 1]) if down.any() else (0, 0)
        normal = np.zeros_like(d)
        normal[down] = np.stack([-np.asarray(gx) * np.ones(len(dd)), -np.asarray(gy) * np.ones(len(dd)),
                                 np.ones(len(dd))], axis=1)
        normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
        return t_all, normal


@dataclass
class CastResult:
    t: np.ndarray            # (R,) range of the nearest hit, inf for none
    normal: np.ndarray       # (R, 3) surface normal at the hit
    primitive: np.ndarray    # (R,) index of the hit primitive, -1 ground, -2 nothing
    unoccluded: dict         # agent index -> number of rays that would hit it without occluders


def cast_rays(directions: np.ndarray, elevation: np.ndarray, azimuth: np.ndarray, ground: GroundField,
              prims: Primitives, max_range: float, pass_through: np.ndarray) -> CastResult:
    """Nearest hit per ray. `directions` is (B * A, 3) beam-major for B elevations and A azimuths
    (sorted ascending, evenly spaced); `pass_through` (R,) uniform [0, 1) per ray decides foliage
    transparency (a ray passes a porous primitive when (u + k * 0.618...) mod 1 < porosity)."""
    num_beams, num_cols = len(elevation), len(azimuth)
    t_best, normal_best = ground.intersect(directions)
    t_best[t_best > max_range] = np.inf
    prim_best = np.where(np.isfinite(t_best), -1, -2)
    step = 2 * np.pi / num_cols
    cx, cy, radius, z_min, z_max = prims.bounds()
    dist = np.hypot(cx, cy)
    agent_rays: dict[int, list] = {}
    beam_order = np.argsort(elevation)
    sorted_elev = elevation[beam_order]
    for k in range(len(prims)):
        if dist[k] - radius[k] > max_range:
            continue
        if dist[k] > radius[k] + 1e-6:
            half_width = np.arcsin(min(1.0, radius[k] / dist[k]))
            centre = np.arctan2(cy[k], cx[k])
            first = int(np.floor((centre - half_width + np.pi) / step)) - 1
            last = int(np.ceil((centre + half_width + np.pi) / step)) + 1
            columns = np.arange(first, last + 1) % num_cols
            near, far = dist[k] - radius[k], dist[k] + radius[k]
            angles = np.arctan2([z_min[k], z_min[k], z_max[k], z_max[k]], [near, far, near, far])
            lo, hi = angles.min() - 0.01, angles.max() + 0.01
            beams = beam_order[np.searchsorted(sorted_elev, lo):np.searchsorted(sorted_elev, hi, side="right")]
        else:   # the sensor is inside the bounding cylinder: test everything
            columns = np.arange(num_cols)
            beams = np.arange(num_beams)
        if len(beams) == 0 or len(columns) == 0:
            continue
        rays = (beams[:, None] * num_cols + columns[None, :]).ravel()
        t, normal = _INTERSECT[int(prims.kind[k])](directions[rays], prims.params[k])
        if prims.porosity[k] > 0:
            u = (pass_through[rays] + k * 0.6180339887) % 1.0
            t = np.where(u < prims.porosity[k], np.inf, t)
        hit = t <= max_range
        if prims.owner[k] >= 0 and hit.any():
            agent_rays.setdefault(int(prims.owner[k]), []).append(rays[hit])
        closer = t < t_best[rays]
        if closer.any():
            idx = rays[closer]
            t_best[idx] = t[closer]
            normal_best[idx] = normal[closer]
            prim_best[idx] = k
    unoccluded = {a: len(np.unique(np.concatenate(r))) for a, r in agent_rays.items()}
    return CastResult(t_best, normal_best, prim_best, unoccluded)
