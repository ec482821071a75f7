"""The embedded default object dataset: surface point clouds of procedurally generated shapes.

No download is needed: item i of a split is generated from (seed, split, i) alone, so the dataset is
deterministic, independent of worker order, and as large as asked. Each class is a primitive or a
composite of primitives with random proportions; every cloud gets a random pose (rotation about the
up axis plus a small tilt), Gaussian surface noise, and is normalised to the unit sphere like
ModelNet40 (centred, max norm 1). Points are sampled uniformly by area on each surface.

Two class sets: "basic" (10 classes that differ in kind: sphere, box, torus, table, ...) and "fine"
(16: the basic ones plus look-alikes that differ in parts or proportions: chair vs. table vs. stool,
cup vs. mug vs. cylinder, bottle, capsule vs. dumbbell, hourglass vs. cone). Two options make the
clouds look more like scans (ScanObjectNN-style rather than ModelNet-style): `partial_view` keeps
only the points a single random viewpoint sees (a depth buffer over the projected points: the back
and self-occluded parts are missing), and `density_jitter` makes the sampling density vary linearly
across the object (a random direction, up to 1 + density_jitter times denser on one side).
"""
import math
from dataclasses import dataclass
from typing import Callable, List, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

# ---- area-uniform surface samplers of primitives in their own frame (z up) -----------------------


def _sphere(rng, n, r):
    v = rng.normal(size=(n, 3))
    return r * v / np.linalg.norm(v, axis=1, keepdims=True)


def _sphere_area(r):
    return 4 * math.pi * r * r


def _box(rng, n, a, b, c):
    # faces in pairs: (b*c) at x = +-a/2, (a*c) at y = +-b/2, (a*b) at z = +-c/2
    areas = np.array([b * c, a * c, a * b])
    face = rng.choice(3, size=n, p=areas / areas.sum())
    sign = rng.choice([-1.0, 1.0], size=n)
    p = (rng.random((n, 3)) - 0.5) * np.array([a, b, c])
    half = np.array([a, b, c]) / 2
    p[np.arange(n), face] = sign * half[face]
    return p


def _box_area(a, b, c):
    return 2 * (a * b + b * c + a * c)


def _cylinder(rng, n, r, h):
    side, cap = 2 * math.pi * r * h, math.pi * r * r
    part = rng.choice(3, size=n, p=np.array([side, cap, cap]) / (side + 2 * cap))
    theta = rng.random(n) * 2 * math.pi
    rad = np.where(part == 0, r, r * np.sqrt(rng.random(n)))           # sqrt: uniform on a disc
    z = np.where(part == 0, (rng.random(n) - 0.5) * h, np.where(part == 1, h / 2, -h / 2))
    return np.stack([rad * np.cos(theta), rad * np.sin(theta), z], axis=1)


def _cylinder_area(r, h):
    return 2 * math.pi * r * h + 2 * math.pi * r * r


def _cone(rng, n, r, h):
    slant = math.sqrt(r * r + h * h)
    lateral, base = math.pi * r * slant, math.pi * r * r
    on_side = rng.random(n) < lateral / (lateral + base)
    theta = rng.random(n) * 2 * math.pi
    t = np.sqrt(rng.random(n))                                           # distance from apex, area-uniform
    rad = np.where(on_side, r * t, r * np.sqrt(rng.random(n)))
    z = np.where(on_side, h / 2 - h * t, -h / 2)
    return np.stack([rad * np.cos(theta), rad * np.sin(theta), z], axis=1)


def _cone_area(r, h):
    return math.pi * r * math.sqrt(r * r + h * h) + math.pi * r * r


def _torus(rng, n, big_r, small_r):
    # The area element is proportional to (R + r cos v): rejection-sample v against it.
    out = np.empty((0, 3))
    while len(out) < n:
        m = 2 * (n - len(out)) + 16
        u, v = rng.random(m) * 2 * math.pi, rng.random(m) * 2 * math.pi
        keep = rng.random(m) < (big_r + small_r * np.cos(v)) / (big_r + small_r)
        u, v = u[keep], v[keep]
        ring = big_r + small_r * np.cos(v)
        out = np.concatenate([out, np.stack([ring * np.cos(u), ring * np.sin(u), small_r * np.sin(v)], 1)])
    return out[:n]


def _torus_area(big_r, small_r):
    return 4 * math.pi * math.pi * big_r * small_r


@dataclass
class Part:
    sample: Callable
    area: float
    offset: Tuple[float, float, float] = (0.0, 0.0, 0.0)
    rotate_x90: bool = False            # lay the part on its side (e.g. a mug handle)


def _u(rng, lo, hi):
    return float(rng.uniform(lo, hi))


# ---- classes: each returns the parts of one random instance ----------------------------------------

def _c_sphere(rng):
    r = _u(rng, 0.5, 1.0)
    return [Part(lambda g, n: _sphere(g, n, r), _sphere_area(r))]


def _c_box(rng):
    a, b, c = _u(rng, 0.4, 1.2), _u(rng, 0.4, 1.2), _u(rng, 0.4, 1.2)
    return [Part(lambda g, n: _box(g, n, a, b, c), _box_area(a, b, c))]


def _c_cylinder(rng):
    r, h = _u(rng, 0.2, 0.5), _u(rng, 0.8, 2.0)
    return [Part(lambda g, n: _cylinder(g, n, r, h), _cylinder_area(r, h))]


def _c_cone(rng):
    r, h = _u(rng, 0.3, 0.7), _u(rng, 0.8, 1.8)
    return [Part(lambda g, n: _cone(g, n, r, h), _cone_area(r, h))]


def _c_torus(rng):
    big, small = _u(rng, 0.6, 1.0), _u(rng, 0.12, 0.3)
    return [Part(lambda g, n: _torus(g, n, big, small), _torus_area(big, small))]


def _c_table(rng):
    w, d, t, h, lr = _u(rng, 1.0, 1.6), _u(rng, 0.6, 1.2), _u(rng, 0.04, 0.1), _u(rng, 0.6, 1.0), _u(rng, 0.03, 0.07)
    parts = [Part(lambda g, n: _box(g, n, w, d, t), _box_area(w, d, t), (0, 0, h / 2))]
    for sx in (-1, 1):
        for sy in (-1, 1):
            parts.append(Part(lambda g, n: _cylinder(g, n, lr, h), _cylinder_area(lr, h),
                              (sx * (w / 2 - 2 * lr), sy * (d / 2 - 2 * lr), 0.0)))
    return parts


def _c_lamp(rng):
    pr, ph, sr, sh = _u(rng, 0.03, 0.06), _u(rng, 0.8, 1.4), _u(rng, 0.3, 0.5), _u(rng, 0.3, 0.5)
    br, bh = _u(rng, 0.2, 0.35), _u(rng, 0.04, 0.1)
    return [Part(lambda g, n: _cylinder(g, n, pr, ph), _cylinder_area(pr, ph), (0, 0, 0)),
            Part(lambda g, n: _cone(g, n, sr, sh), _cone_area(sr, sh), (0, 0, ph / 2 + sh / 4)),
            Part(lambda g, n: _cylinder(g, n, br, bh), _cylinder_area(br, bh), (0, 0, -ph / 2))]


def _c_dumbbell(rng):
    r, br, length = _u(rng, 0.25, 0.45), _u(rng, 0.05, 0.1), _u(rng, 0.8, 1.4)
    return [Part(lambda g, n: _sphere(g, n, r), _sphere_area(r), (0, 0, length / 2)),
            Part(lambda g, n: _sphere(g, n, r), _sphere_area(r), (0, 0, -length / 2)),
            Part(lambda g, n: _cylinder(g, n, br, length), _cylinder_area(br, length))]


def _c_mug(rng):
    r, h = _u(rng, 0.35, 0.55), _u(rng, 0.7, 1.1)
    hr, ht = _u(rng, 0.2, 0.3), _u(rng, 0.04, 0.07)
    return [Part(lambda g, n: _cylinder(g, n, r, h), _cylinder_area(r, h)),
            Part(lambda g, n: _torus(g, n, hr, ht), _torus_area(hr, ht), (r + hr * 0.6, 0, 0), rotate_x90=True)]


def _c_snowman(rng):
    r1, r2, r3 = _u(rng, 0.4, 0.55), _u(rng, 0.28, 0.4), _u(rng, 0.15, 0.27)
    return [Part(lambda g, n: _sphere(g, n, r1), _sphere_area(r1), (0, 0, 0)),
            Part(lambda g, n: _sphere(g, n, r2), _sphere_area(r2), (0, 0, r1 + r2 * 0.8)),
            Part(lambda g, n: _sphere(g, n, r3), _sphere_area(r3), (0, 0, r1 + 1.6 * r2 + r3 * 0.8))]


def _legs(w, d, h, lr, z0, count=4):
    """`count` cylinder legs of radius lr and height h under a w x d top whose underside is at z0."""
    if count == 3:
        spots = [(w / 2 * math.cos(a), d / 2 * math.sin(a)) for a in (0.0, 2 * math.pi / 3, 4 * math.pi / 3)]
    else:
        spots = [(sx * (w / 2 - 2 * lr), sy * (d / 2 - 2 * lr)) for sx in (-1, 1) for sy in (-1, 1)]
    return [Part(lambda g, n: _cylinder(g, n, lr, h), _cylinder_area(lr, h), (x, y, z0 - h / 2)) for x, y in spots]


def _c_chair(rng):
    # a table-like seat with a back rest: differs from a table by the back and its proportions
    w, t, h, lr = _u(rng, 0.5, 0.8), _u(rng, 0.04, 0.08), _u(rng, 0.4, 0.7), _u(rng, 0.025, 0.05)
    bh = _u(rng, 0.5, 0.9)
    return ([Part(lambda g, n: _box(g, n, w, w, t), _box_area(w, w, t), (0, 0, 0)),
             Part(lambda g, n: _box(g, n, w, t, bh), _box_area(w, t, bh), (0, w / 2 - t / 2, bh / 2))]
            + _legs(w, w, h, lr, -t / 2))


def _c_stool(rng):
    # a round seat on three legs
    r, t, h, lr = _u(rng, 0.25, 0.45), _u(rng, 0.04, 0.1), _u(rng, 0.6, 1.0), _u(rng, 0.025, 0.05)
    return ([Part(lambda g, n: _cylinder(g, n, r, t), _cylinder_area(r, t), (0, 0, 0))]
            + _legs(1.6 * r, 1.6 * r, h, lr, -t / 2, count=3))


def _open_cylinder(rng, n, r, h):
    # a cylinder with its bottom cap only (an open cup)
    side, cap = 2 * math.pi * r * h, math.pi * r * r
    on_side = rng.random(n) < side / (side + cap)
    theta = rng.random(n) * 2 * math.pi
    rad = np.where(on_side, r, r * np.sqrt(rng.random(n)))
    z = np.where(on_side, (rng.random(n) - 0.5) * h, -h / 2)
    return np.stack([rad * np.cos(theta), rad * np.sin(theta), z], axis=1)


def _c_cup(rng):
    # an open cup: a mug without handle and without lid (a cylinder's top cap is missing)
    r, h = _u(rng, 0.35, 0.55), _u(rng, 0.7, 1.1)
    return [Part(lambda g, n: _open_cylinder(g, n, r, h), 2 * math.pi * r * h + math.pi * r * r)]


def _c_bottle(rng):
    r, h, nr, nh = _u(rng, 0.25, 0.4), _u(rng, 0.8, 1.3), _u(rng, 0.06, 0.12), _u(rng, 0.3, 0.5)
    sh = _u(rng, 0.15, 0.3)
    return [Part(lambda g, n: _cylinder(g, n, r, h), _cylinder_area(r, h)),
            Part(lambda g, n: _cone(g, n, r, sh), _cone_area(r, sh), (0, 0, h / 2 + sh / 2)),
            Part(lambda g, n: _cylinder(g, n, nr, nh), _cylinder_area(nr, nh), (0, 0, h / 2 + sh * 0.7 + nh / 2))]


def _c_capsule(rng):
    # a cylinder with hemispherical ends (spheres of the cylinder's radius at both ends)
    r, length = _u(rng, 0.2, 0.4), _u(rng, 0.6, 1.4)
    return [Part(lambda g, n: _cylinder(g, n, r, length), 2 * math.pi * r * length),
            Part(lambda g, n: _sphere(g, n, r), _sphere_area(r), (0, 0, length / 2)),
            Part(lambda g, n: _sphere(g, n, r), _sphere_area(r), (0, 0, -length / 2))]


def _c_hourglass(rng):
    # two cones tip to tip
    r, h = _u(rng, 0.3, 0.6), _u(rng, 0.5, 0.9)
    flipped = lambda g, n: _cone(g, n, r, h) * np.array([1.0, 1.0, -1.0])  # noqa: E731
    return [Part(lambda g, n: _cone(g, n, r, h), _cone_area(r, h), (0, 0, -h / 2)),
            Part(flipped, _cone_area(r, h), (0, 0, h / 2))]


CLASSES = {
    "sphere": _c_sphere, "box": _c_box, "cylinder": _c_cylinder, "cone": _c_cone, "torus": _c_torus,
    "table": _c_table, "lamp": _c_lamp, "dumbbell": _c_dumbbell, "mug": _c_mug, "snowman": _c_snowman,
    "chair": _c_chair, "stool": _c_stool, "cup": _c_cup, "bottle": _c_bottle, "capsule": _c_capsule,
    "hourglass": _c_hourglass,
}
CLASS_SETS = {"basic": list(CLASSES)[:10], "fine": list(CLASSES)}
CLASS_NAMES: List[str] = CLASS_SETS["basic"]
_SPLIT_SALT = {"train": 0, "test": 1}


def _rotation(rng, tilt_deg: float) -> np.ndarray:
    yaw = rng.uniform(0, 2 * math.pi)
    ax, ay = np.radians(rng.uniform(-tilt_deg, tilt_deg, size=2))
    cz, sz, cx, sx, cy, sy = math.cos(yaw), math.sin(yaw), math.cos(ax), math.sin(ax), math.cos(ay), math.sin(ay)
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    return ry @ rx @ rz


def visible_from(points: np.ndarray, view_dir: np.ndarray, cell: float) -> np.ndarray:
    """Bool mask of the points a distant camera looking along -view_dir sees: points are projected
    onto the image plane, binned into cells of size `cell`, and in each cell only those within two
    cell sizes of the nearest depth are kept (a point-splat depth buffer; surfaces steeper than
    about 60 degrees to the image plane are thinned out, as grazing angles are in real scans)."""
    v = view_dir / np.linalg.norm(view_dir)
    a = np.cross(v, [0.0, 0.0, 1.0] if abs(v[2]) < 0.9 else [1.0, 0.0, 0.0])
    a /= np.linalg.norm(a)
    b = np.cross(v, a)
    depth = -(points @ v)                                    # smaller = closer to the camera
    i = np.floor(points @ a / cell).astype(np.int64)
    j = np.floor(points @ b / cell).astype(np.int64)
    i, j = i - i.min(), j - j.min()
    cell_id = i * (j.max() + 1) + j                          # one integer per image cell
    # Nearest depth per cell: sort by (cell, depth); the first entry of each cell is its nearest.
    order = np.lexsort((depth, cell_id))
    first = np.ones(len(order), dtype=bool)
    first[1:] = cell_id[order][1:] != cell_id[order][:-1]
    nearest = np.empty(cell_id.max() + 1)
    nearest[cell_id[order][first]] = depth[order][first]
    return depth <= nearest[cell_id] + 2 * cell


def make_shape(class_name: str, num_points: int, rng: np.random.Generator, noise_std: float = 0.01,
               tilt_deg: float = 15.0, partial_view: bool = False, density_jitter: float = 0.0) -> np.ndarray:
    """One random instance of `class_name` as (num_points, 3) float32 on the unit sphere.
    partial_view / density_jitter: see the module docstring."""
    if class_name not in CLASSES:
        raise ValueError(f"make_shape: unknown class {class_name!r}; choose from {list(CLASSES)}")
    if density_jitter < 0:
        raise ValueError(f"make_shape: density_jitter must be >= 0, got {density_jitter}")
    if partial_view or density_jitter > 0:
        # Sample densely, remove what the view hides / thin out by density, then draw num_points.
        dense = _surface_points(class_name, 4 * num_points, rng)
        dense -= dense.mean(0)
        dense /= np.linalg.norm(dense, axis=1).max()
        weight = np.ones(len(dense))
        if partial_view:
            # A camera above the horizon at a random azimuth (objects stand on the ground).
            az, el = rng.uniform(0, 2 * math.pi), rng.uniform(math.radians(10), math.radians(60))
            view = np.array([math.cos(az) * math.cos(el), math.sin(az) * math.cos(el), math.sin(el)])
            # Cells of 0.14 hold several points of the 4x dense sampling, so that a cell in front
            # of a hidden part is seldom empty (an empty one would let the back show through).
            weight *= visible_from(dense, view, cell=0.14)
        if density_jitter > 0:
            d = rng.normal(size=3)
            weight *= 1.0 + density_jitter * (dense @ (d / np.linalg.norm(d)) + 1.0) / 2.0
        p = weight / weight.sum()
        idx = rng.choice(len(dense), size=num_points, replace=int((weight > 0).sum()) < num_points, p=p)
        pts = dense[idx]
    else:
        pts = _surface_points(class_name, num_points, rng)
    pts = pts @ _rotation(rng, tilt_deg).T + rng.normal(scale=noise_std, size=pts.shape)
    pts -= pts.mean(axis=0)
    pts /= np.linalg.norm(pts, axis=1).max()
    return pts.astype(np.float32)


def _surface_points(class_name: str, num_points: int, rng: np.random.Generator) -> np.ndarray:
    """Area-uniform points of one random instance, in the class's own frame (z up), shuffled."""
    parts = CLASSES[class_name](rng)
    areas = np.array([p.area for p in parts])
    counts = rng.multinomial(num_points, areas / areas.sum())
    pieces = []
    for part, n in zip(parts, counts):
        if n == 0:
            continue
        pts = part.sample(rng, int(n))
        if part.rotate_x90:
            pts = pts[:, [0, 2, 1]]
        pieces.append(pts + np.asarray(part.offset))
    return np.concatenate(pieces)[rng.permutation(num_points)]


class SyntheticShapes(Dataset):
    """Procedural shapes, `samples_per_class` instances of each class per split.

    Item -> (points (num_points, 3) float32 tensor, label int). Generated on the fly from
    (seed, split, index): the same arguments always give the same data.
    """

    def __init__(self, split: str = "train", num_points: int = 1024, samples_per_class: int = 100,
                 seed: int = 0, noise_std: float = 0.01, classes: List[str] = None, class_set: str = "basic",
                 partial_view: bool = False, density_jitter: float = 0.0, cache: bool = False):
        if split not in _SPLIT_SALT:
            raise ValueError(f"SyntheticShapes: split must be one of {list(_SPLIT_SALT)}, got {split!r}")
        if num_points < 1 or samples_per_class < 1:
            raise ValueError(f"SyntheticShapes: num_points and samples_per_class must be >= 1, got "
                             f"{num_points} and {samples_per_class}")
        if class_set not in CLASS_SETS:
            raise ValueError(f"SyntheticShapes: class_set must be one of {list(CLASS_SETS)}, got {class_set!r}")
        if density_jitter < 0:
            raise ValueError(f"SyntheticShapes: density_jitter must be >= 0, got {density_jitter}")
        self.classes = list(classes or CLASS_SETS[class_set])
        unknown = sorted(set(self.classes) - set(CLASSES))
        if unknown:
            raise ValueError(f"SyntheticShapes: unknown classes {unknown}; choose from {list(CLASSES)}")
        self.partial_view, self.density_jitter = partial_view, density_jitter
        # Generated clouds kept in memory (12 KB per 1024 points): later epochs skip the generation,
        # which for partial views costs as much as a small model's training step.
        self._cache = {} if cache else None
        self.split, self.num_points, self.samples_per_class = split, num_points, samples_per_class
        self.seed, self.noise_std = seed, noise_std

    def __len__(self):
        return len(self.classes) * self.samples_per_class

    @property
    def labels(self) -> List[int]:
        """The label of every item, without generating the shapes (item i has label i mod #classes)."""
        return [i % len(self.classes) for i in range(len(self))]

    def __getitem__(self, index: int):
        if not 0 <= index < len(self):
            raise IndexError(f"SyntheticShapes: index {index} out of range [0, {len(self)})")
        label = index % len(self.classes)
        if self._cache is not None and index in self._cache:
            return self._cache[index].clone(), label
        rng = np.random.default_rng([self.seed, _SPLIT_SALT[self.split], index])
        pts = torch.from_numpy(make_shape(self.classes[label], self.num_points, rng, self.noise_std,
                                          partial_view=self.partial_view, density_jitter=self.density_jitter))
        if self._cache is not None:
            self._cache[index] = pts.clone()
        return pts, label
