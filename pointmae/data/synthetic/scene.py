"""Procedural street scenes for the synthetic LiDAR world, in a world frame with the road along +x.

A scene is: a ground height field (slope + roughness), a road (lanes, edge strips used for parking or
cycling, painted lane lines), sidewalks raised by a curb, scenery (buildings, walls, street lights,
trees with porous crowns, bushes), unlabelled distractors (bins, bollards, cones) and labelled agents
(cars, vans, trucks, pedestrians, cyclists) that move at constant velocity. Agents sharing a lane share its speed
and keep their spacing, so nothing drives through anything during a sequence.

Agent sizes follow the KITTI training-set statistics (mean height/width/length: Car 1.53/1.63/3.88 m,
Pedestrian 1.76/0.66/0.84 m, Cyclist 1.74/0.60/1.76 m, Van 2.21/1.90/5.08 m, Truck 3.25/2.59/10.1 m)
with realistic spreads; speeds: cars 5..15 m/s,
cyclists 3..7 m/s, pedestrians 0.8..1.8 m/s (some stand still).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pointmae.data.synthetic.raycast import BOX, CYLINDER, SPHERE

# name -> (albedo, extra dropout). Albedos are rough Lambertian reflectivities at 905 nm.
MATERIALS = {
    "asphalt": (0.10, 0.0), "lane_paint": (0.65, 0.0), "terrain": (0.30, 0.0), "concrete": (0.28, 0.0),
    "facade": (0.40, 0.0), "brick": (0.30, 0.0), "metal": (0.50, 0.0), "foliage": (0.45, 0.05),
    "bark": (0.25, 0.0), "car_paint": (0.30, 0.0), "glass": (0.06, 0.5), "rubber": (0.04, 0.2),
    "clothing": (0.35, 0.0), "skin": (0.40, 0.0), "plastic": (0.55, 0.0), "cone": (0.80, 0.0),
}
LANE_WIDTH = 3.5
EDGE_STRIP = 2.5
FRAME_RATE_HZ = 10.0

AGENT_SIZES = {   # (mean, std) of length, width, height
    "Car": ((3.88, 0.40), (1.63, 0.10), (1.53, 0.12)),
    "Pedestrian": ((0.84, 0.15), (0.66, 0.10), (1.76, 0.11)),
    "Cyclist": ((1.76, 0.12), (0.60, 0.08), (1.74, 0.08)),
    "Van": ((5.08, 0.45), (1.90, 0.10), (2.21, 0.15)),
    "Truck": ((10.1, 1.5), (2.59, 0.10), (3.25, 0.30)),
}
MOVING_VEHICLES = (("Car", 0.85), ("Van", 0.10), ("Truck", 0.05))
PARKED_VEHICLES = (("Car", 0.9), ("Van", 0.1))


@dataclass
class Part:
    """One primitive of an agent in the agent's frame (x forward, y left, z up from the agent's bottom)."""
    kind: int
    params: tuple          # box: (x, y, z, hx, hy, hz); cylinder: (x, y, z0, z1, r); sphere: (x, y, z, r)
    material: str
    porosity: float = 0.0


@dataclass
class Agent:
    track_id: int
    name: str
    dims: np.ndarray        # (3,) length, width, height
    start_xy: np.ndarray    # (2,) world position at t = 0
    heading: float          # world yaw
    velocity: np.ndarray    # (2,) world m/s
    base_offset: float      # height of the surface it stands on above the ground plane (curb or 0)
    parts: list[Part]

    def box_at(self, t: float, slope: tuple[float, float]) -> np.ndarray:
        """(9,) world box at time t: centre, dims, heading, velocity. The agent follows the ground
        plane (z = slope . xy) as it moves."""
        xy = self.start_xy + self.velocity * t
        base = slope[0] * xy[0] + slope[1] * xy[1] + self.base_offset
        return np.r_[xy, base + self.dims[2] / 2, self.dims, self.heading, self.velocity]


@dataclass
class Scene:
    seed: int
    slope: tuple[float, float]
    wave_k: np.ndarray
    wave_phase: np.ndarray
    wave_amp: np.ndarray
    lanes: int
    lane_centres: np.ndarray       # (L,) world y of each lane centre
    lane_speeds: np.ndarray        # (L,) signed speed along +x
    road_half_width: float
    sidewalk_width: float
    curb_height: float
    static_kind: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    static_params: np.ndarray = field(default_factory=lambda: np.zeros((0, 7)))
    static_material: list = field(default_factory=list)
    static_porosity: np.ndarray = field(default_factory=lambda: np.zeros(0))
    agents: list[Agent] = field(default_factory=list)
    ego_lane: int = 0
    ego_speed: float = 0.0
    cross_x: float | None = None       # world x of a crossing street's centre line (None: no intersection)
    cross_half_width: float = 0.0

    def ground_height(self, x, y):
        z = self.slope[0] * np.asarray(x, np.float64) + self.slope[1] * np.asarray(y, np.float64)
        for (kx, ky), ph, amp in zip(self.wave_k, self.wave_phase, self.wave_amp):
            z = z + amp * np.sin(kx * x + ky * y + ph)
        return z

    def plane_height(self, x, y):
        return self.slope[0] * np.asarray(x, np.float64) + self.slope[1] * np.asarray(y, np.float64)

    def ground_albedo(self, x, y):
        """Asphalt on the road with dashed lane lines, terrain beyond the sidewalks."""
        on_road = np.abs(y) <= self.road_half_width
        if self.cross_x is not None:
            on_road = on_road | (np.abs(np.asarray(x) - self.cross_x) <= self.cross_half_width)
        albedo = np.where(on_road, MATERIALS["asphalt"][0], MATERIALS["terrain"][0])
        for line_y in (self.lane_centres[:-1] + self.lane_centres[1:]) / 2:
            dashed = (np.abs(y - line_y) < 0.075) & (np.mod(x, 9.0) < 3.0)
            albedo = np.where(dashed, MATERIALS["lane_paint"][0], albedo)
        return albedo


# ------------------------------------------------------------------------------------ agent shapes
# The shapes stay 5 cm inside their label box (2.5 sigma of the range noise) so that, as in a careful
# annotation, the box contains the object's returns.
INSET = 0.05


def car_parts(l, w, h) -> list[Part]:
    l, w, h = l - 2 * INSET, w - 2 * INSET, h - INSET
    clearance = 0.15 * h
    body_top = 0.62 * h
    parts = [Part(BOX, (0.0, 0.0, (clearance + body_top) / 2, l / 2, w / 2, (body_top - clearance) / 2), "car_paint"),
             Part(BOX, (-0.05 * l, 0.0, (body_top + h) / 2, 0.27 * l, 0.46 * w, (h - body_top) / 2), "glass")]
    for sx in (0.32, -0.32):                       # wheels as short boxes under the body
        for sy in (0.4, -0.4):
            parts.append(Part(BOX, (sx * l, sy * w, clearance / 2 + 0.01, 0.16, 0.1, clearance / 2 + 0.01), "rubber"))
    return parts


def van_parts(l, w, h) -> list[Part]:
    l, w, h = l - 2 * INSET, w - 2 * INSET, h - INSET
    clearance, belt = 0.1 * h, 0.55 * h
    return [Part(BOX, (0.0, 0.0, (clearance + belt) / 2, l / 2, w / 2, (belt - clearance) / 2), "car_paint"),
            Part(BOX, (-0.1 * l, 0.0, (belt + h) / 2, 0.4 * l, w / 2, (h - belt) / 2), "car_paint"),
            Part(BOX, (0.375 * l, 0.0, (belt + 0.92 * h) / 2, 0.075 * l, 0.48 * w, (0.92 * h - belt) / 2), "glass")]


def truck_parts(l, w, h) -> list[Part]:
    l, w, h = l - 2 * INSET, w - 2 * INSET, h - INSET
    clearance = 0.25
    cab = min(2.4, 0.25 * l)
    return [Part(BOX, (l / 2 - cab / 2, 0.0, (clearance + 0.85 * h) / 2, cab / 2, w / 2, (0.85 * h - clearance) / 2), "car_paint"),
            Part(BOX, (-cab / 2 - 0.05, 0.0, (clearance + 0.3 + h) / 2, (l - cab) / 2 - 0.05, w / 2, (h - clearance - 0.3) / 2), "metal")]


def pedestrian_parts(l, w, h) -> list[Part]:
    h = h - INSET
    head = 0.11
    radius = min(0.22, 0.45 * min(l, w))
    return [Part(CYLINDER, (0.0, 0.0, 0.0, h - 2 * head, radius), "clothing"),
            Part(SPHERE, (0.0, 0.0, h - head, head), "skin")]


def cyclist_parts(l, w, h) -> list[Part]:
    l, h = l - 2 * INSET, h - INSET
    return [Part(BOX, (0.0, 0.0, 0.5, 0.48 * l, 0.05, 0.45), "metal"),
            Part(CYLINDER, (-0.05 * l, 0.0, 0.9, h - 0.24, min(0.2, 0.45 * w)), "clothing"),
            Part(SPHERE, (-0.05 * l, 0.0, h - 0.12, 0.12), "skin")]


_PARTS = {"Car": car_parts, "Van": van_parts, "Truck": truck_parts, "Pedestrian": pedestrian_parts,
          "Cyclist": cyclist_parts}


def sample_dims(rng, name) -> np.ndarray:
    (ml, sl), (mw, sw), (mh, sh) = AGENT_SIZES[name]
    dims = np.array([rng.normal(ml, sl), rng.normal(mw, sw), rng.normal(mh, sh)])
    return np.clip(dims, [ml - 2.5 * sl, mw - 2.5 * sw, mh - 2.5 * sh], [ml + 2.5 * sl, mw + 2.5 * sw, mh + 2.5 * sh])


# ------------------------------------------------------------------------------------- generation
def generate_scene(rng: np.random.Generator, duration_s: float, seed: int = 0) -> Scene:
    """A random street for an ego that drives for `duration_s` seconds along +x from x = 0."""
    lanes = int(rng.choice([2, 2, 4]))
    half_lanes = lanes // 2
    lane_centres = np.r_[-(np.arange(half_lanes)[::-1] + 0.5) * LANE_WIDTH, (np.arange(half_lanes) + 0.5) * LANE_WIDTH]
    # Right-hand traffic: lanes with y < 0 drive +x, lanes with y > 0 drive -x.
    lane_speeds = np.where(lane_centres < 0, 1.0, -1.0) * rng.uniform(5.0, 15.0, lanes)
    ego_lane = int(half_lanes - 1)                 # the +x lane next to the centre line
    ego_speed = 0.0 if rng.random() < 0.1 else float(lane_speeds[ego_lane])
    lane_speeds[ego_lane] = ego_speed
    road_half_width = half_lanes * LANE_WIDTH + EDGE_STRIP
    # Roughness: three long undulations (wavelengths 6..60 m, 1..4 cm) and one short ripple
    # (wavelength ~1.5 m, 3 mm), in random directions.
    waves = 4
    direction = rng.uniform(0, 2 * np.pi, waves)
    wavenumber = np.r_[2 * np.pi / rng.uniform(6.0, 60.0, waves - 1), 2 * np.pi / 1.5]
    scene = Scene(seed=seed, slope=(float(rng.uniform(-0.03, 0.03)), float(rng.uniform(-0.015, 0.015))),
                  wave_k=np.c_[np.cos(direction), np.sin(direction)] * wavenumber[:, None],
                  wave_phase=rng.uniform(0, 2 * np.pi, waves),
                  wave_amp=np.r_[rng.uniform(0.01, 0.04, waves - 1), 0.003],
                  lanes=lanes, lane_centres=lane_centres, lane_speeds=lane_speeds,
                  road_half_width=road_half_width, sidewalk_width=float(rng.uniform(3.0, 5.0)),
                  curb_height=float(rng.uniform(0.1, 0.16)), ego_lane=ego_lane, ego_speed=ego_speed)
    x_min, x_max = -110.0, 110.0 + max(ego_speed, 0.0) * duration_s
    if rng.random() < 0.5:      # a crossing street somewhere ahead: cross traffic, open corners
        scene.cross_x = float(rng.uniform(15.0, 60.0) + max(ego_speed, 0.0) * duration_s * rng.uniform(0, 1))
        scene.cross_half_width = LANE_WIDTH + 1.0
    static: list[tuple[int, tuple, str, float]] = []
    _add_sidewalks_and_scenery(rng, scene, static, x_min, x_max)
    if scene.cross_x is not None:
        static = _cut_crossing(scene, static)
    kinds = np.array([s[0] for s in static], dtype=np.int64)
    params = np.zeros((len(static), 7))
    for i, s in enumerate(static):
        params[i, :len(s[1])] = s[1]
    scene.static_kind, scene.static_params = kinds, params
    scene.static_material = [s[2] for s in static]
    scene.static_porosity = np.array([s[3] for s in static])
    _add_agents(rng, scene, x_min, x_max, duration_s)
    if scene.cross_x is not None:
        _add_cross_traffic(rng, scene, duration_s)
    # Cones at the road edge must not stand inside a parked vehicle.
    parked = [a for a in scene.agents if a.name != "Pedestrian" and not np.any(a.velocity)]
    keep = [not (scene.static_material[i] == "cone" and any(
        abs(scene.static_params[i, 0] - a.start_xy[0]) < a.dims[0] / 2 + 0.5 and
        np.sign(scene.static_params[i, 1]) == np.sign(a.start_xy[1]) for a in parked)) for i in range(len(scene.static_kind))]
    keep = np.array(keep, dtype=bool)
    scene.static_kind, scene.static_params = scene.static_kind[keep], scene.static_params[keep]
    scene.static_material = [m for m, k in zip(scene.static_material, keep) if k]
    scene.static_porosity = scene.static_porosity[keep]
    return scene


def _cut_crossing(scene: Scene, static: list) -> list:
    """Open the crossing street: everything off the main road inside the band |x - cross_x| <= w + 1
    is removed; axis-aligned boxes (sidewalks, buildings, walls) are cut back to the band's edges."""
    lo, hi = scene.cross_x - scene.cross_half_width - 1.0, scene.cross_x + scene.cross_half_width + 1.0
    out = []
    for kind, params, material, porosity in static:
        cx, cy = params[0], params[1]
        if abs(cy) < scene.road_half_width - 0.5:          # on the main road: keep
            out.append((kind, params, material, porosity))
            continue
        if kind == BOX:
            x0, x1 = cx - params[3], cx + params[3]
            for a, b in ((x0, min(x1, lo)), (max(x0, hi), x1)):
                if b - a > 0.5:
                    out.append((BOX, ((a + b) / 2, cy, params[2], (b - a) / 2, *params[4:]), material, porosity))
            continue
        radius = params[4] if kind == CYLINDER else params[3]
        if cx + radius < lo or cx - radius > hi:
            out.append((kind, params, material, porosity))
    return out


def _add_cross_traffic(rng, scene: Scene, duration: float) -> None:
    """Cross-street vehicles: a queue waiting at the stop line on each side (facing the main road)
    and vehicles driving away from the intersection. Parked vehicles in the crossing's mouth leave."""
    lo, hi = scene.cross_x - scene.cross_half_width - 1.0, scene.cross_x + scene.cross_half_width + 1.0
    scene.agents = [a for a in scene.agents
                    if not (np.all(a.velocity == 0) and a.name != "Pedestrian" and lo - 3 < a.start_xy[0] < hi + 3)]
    track = max((a.track_id for a in scene.agents), default=-1) + 1
    stop = scene.road_half_width + scene.sidewalk_width + 1.0
    for side in (-1.0, 1.0):
        # Right-hand traffic on the crossing street: driving +y uses x = cross_x + lane/2.
        towards_x = scene.cross_x + LANE_WIDTH / 2 if side < 0 else scene.cross_x - LANE_WIDTH / 2
        away_x = scene.cross_x - LANE_WIDTH / 2 if side < 0 else scene.cross_x + LANE_WIDTH / 2
        heading_towards = np.pi / 2 if side < 0 else -np.pi / 2
        for (y_along, name, dims) in _place_vehicles(rng, stop, stop + rng.uniform(10, 40), 1.5, 4.0, MOVING_VEHICLES):
            scene.agents.append(Agent(track, name, dims, np.array([towards_x + rng.normal(0, 0.1), side * y_along]),
                                      heading_towards + rng.normal(0, 0.02), np.zeros(2), 0.0, _PARTS[name](*dims)))
            track += 1
        speed = rng.uniform(4.0, 10.0)
        for (y_along, name, dims) in _place_vehicles(rng, stop, stop + 60.0, 8.0, 30.0, MOVING_VEHICLES):
            scene.agents.append(Agent(track, name, dims, np.array([away_x, side * y_along]), heading_towards + np.pi,
                                      np.array([0.0, side * speed]), 0.0, _PARTS[name](*dims)))
            track += 1


def _add_sidewalks_and_scenery(rng, scene: Scene, static: list, x_min: float, x_max: float) -> None:
    ground = scene.plane_height
    for side in (-1.0, 1.0):
        inner = scene.road_half_width
        outer = inner + scene.sidewalk_width
        y_mid = side * (inner + outer) / 2
        # Sidewalk in 10 m segments, each at its local ground height (a long box could not follow the slope).
        for x0 in np.arange(x_min, x_max, 10.0):
            z0 = float(ground(x0 + 5, y_mid))
            static.append((BOX, (x0 + 5, y_mid, z0 + scene.curb_height / 2 - 0.25, 5.0, scene.sidewalk_width / 2,
                                 scene.curb_height / 2 + 0.25, 0.0), "concrete", 0.0))
        # Furniture strip (first metre of sidewalk): street lights, trees, bins, bollards.
        furniture_y = side * (inner + 0.5)
        x = x_min + rng.uniform(0, 10)
        while x < x_max:
            z0 = float(ground(x, furniture_y)) + scene.curb_height
            choice = rng.random()
            if choice < 0.3:        # street light
                static.append((CYLINDER, (x, furniture_y, z0, z0 + rng.uniform(5.0, 9.0), rng.uniform(0.08, 0.15)), "metal", 0.0))
            elif choice < 0.7:      # tree: trunk + porous crown
                crown = rng.uniform(1.3, 3.0)
                trunk = rng.uniform(2.4, 3.6) + 0.2 * crown     # crown bottom >= 2.4 m: over pedestrians' heads
                static.append((CYLINDER, (x, furniture_y, z0, z0 + trunk + crown, rng.uniform(0.12, 0.3)), "bark", 0.0))
                static.append((SPHERE, (x, furniture_y, z0 + trunk + 0.8 * crown, crown), "foliage", 0.35))
            elif choice < 0.85:     # trash bin (distractor)
                static.append((CYLINDER, (x, furniture_y, z0, z0 + rng.uniform(0.8, 1.2), rng.uniform(0.25, 0.4)), "plastic", 0.0))
            else:                   # bollard (distractor)
                static.append((CYLINDER, (x, furniture_y, z0, z0 + 0.9, 0.1), "metal", 0.0))
            x += rng.uniform(6.0, 16.0)
        # Buildings, walls and bushes beyond the sidewalk.
        x = x_min
        while x < x_max:
            x += rng.uniform(0.0, 8.0)
            kind = rng.random()
            if kind < 0.65:
                length, depth = rng.uniform(8, 30), rng.uniform(8, 20)
                height = rng.uniform(4, 25)
                near = outer + rng.uniform(0.0, 6.0)
                yc = side * (near + depth / 2)
                z0 = float(ground(x + length / 2, yc)) - 2.0          # foundations below ground: no gaps on slopes
                static.append((BOX, (x + length / 2, yc, z0 + (height + 2) / 2, length / 2, depth / 2, (height + 2) / 2,
                                     rng.normal(0, 0.03)), rng.choice(["facade", "brick", "concrete"]), 0.0))
            elif kind < 0.85:
                length = rng.uniform(5, 20)
                height = rng.uniform(1.0, 2.5)
                yc = side * (outer + rng.uniform(0.3, 2.0))
                z0 = float(ground(x + length / 2, yc)) - 0.5
                static.append((BOX, (x + length / 2, yc, z0 + (height + 0.5) / 2, length / 2, 0.15, (height + 0.5) / 2, 0.0),
                               "brick", 0.0))
            else:
                length = rng.uniform(4, 12)
                for bx in np.arange(x, x + length, 1.5):
                    radius = rng.uniform(0.5, 1.2)
                    yc = side * (outer + 0.5 + radius + rng.uniform(0, 2))
                    static.append((SPHERE, (bx, yc, float(ground(bx, yc)) + 0.3 * radius, radius), "foliage", 0.3))
            x += length
        # Traffic cones on the road edge now and then (distractors).
        for _ in range(rng.integers(0, 3)):
            cx = rng.uniform(x_min, x_max)
            cy = side * (scene.road_half_width - 0.3)
            static.append((CYLINDER, (cx, cy, float(ground(cx, cy)), float(ground(cx, cy)) + 0.7, 0.15), "cone", 0.0))


def _place_along(rng, x_min, x_max, spacing_min, spacing_max, occupied=()) -> list[float]:
    """Positions along x separated by at least spacing_min, avoiding the `occupied` (x, half_gap) slots."""
    xs, x = [], x_min + rng.uniform(0, spacing_max)
    while x < x_max:
        if all(abs(x - ox) > gap for ox, gap in occupied):
            xs.append(x)
        x += rng.uniform(spacing_min, spacing_max)
    return xs


def _place_vehicles(rng, x_min, x_max, gap_min, gap_max, kinds, occupied=()) -> list[tuple[float, str, np.ndarray]]:
    """Vehicles along x: each gets a class from `kinds` ((name, probability), ...) and a size, and
    keeps at least gap_min metres of free road to its neighbours, whatever their lengths."""
    names, probs = zip(*kinds)
    out, front = [], x_min + rng.uniform(0, gap_max)           # `front`: where the free road starts
    while True:
        name = str(rng.choice(names, p=np.array(probs) / sum(probs)))
        dims = sample_dims(rng, name)
        x = front + dims[0] / 2
        if x + dims[0] / 2 > x_max:
            return out
        if all(abs(x - ox) > gap + dims[0] / 2 for ox, gap in occupied):
            out.append((x, name, dims))
        front = x + dims[0] / 2 + rng.uniform(gap_min, gap_max)


def _add_agents(rng, scene: Scene, x_min: float, x_max: float, duration: float) -> None:
    track = 0

    def add(name, x, y, heading, velocity, base_offset=0.0, dims=None):
        nonlocal track
        dims = sample_dims(rng, name) if dims is None else dims
        scene.agents.append(Agent(track, name, dims, np.array([x, y]), float(heading), np.asarray(velocity, float),
                                  float(base_offset), _PARTS[name](*dims)))
        track += 1

    # Cars in lanes. Every car of a lane moves with the lane's speed, so the spacing never changes;
    # the ego's slot (x = 0 at t = 0) is kept free in its own lane.
    for lane, (y, speed) in enumerate(zip(scene.lane_centres, scene.lane_speeds)):
        occupied = [(0.0, 2.5 + 2.5)] if lane == scene.ego_lane else []     # the ego: ~5 m long
        for x, name, dims in _place_vehicles(rng, x_min, x_max, 5.0, 35.0, MOVING_VEHICLES, occupied):
            add(name, x, y + rng.normal(0, 0.15), 0.0 if y < 0 else np.pi, (speed, 0.0), dims=dims)
    # Edge strips: parked cars (standing, either heading) or a bike lane with cyclists.
    for side in (-1.0, 1.0):
        y = side * (scene.road_half_width - EDGE_STRIP / 2)
        if rng.random() < 0.6:
            for x, name, dims in _place_vehicles(rng, x_min, x_max, 1.0, 15.0, PARKED_VEHICLES):
                add(name, x, y + rng.normal(0, 0.1), rng.choice([0.0, np.pi]) + rng.normal(0, 0.05), (0.0, 0.0),
                    dims=dims)
        else:
            speed = side * -1 * rng.uniform(3.0, 7.0)
            for x in _place_along(rng, x_min, x_max, 8.0, 40.0):
                add("Cyclist", x, y + rng.normal(0, 0.2), 0.0 if speed > 0 else np.pi, (speed, 0.0))
    # Pedestrians on the sidewalks, outside the furniture strip, on walking lines 1.1 m apart across
    # the sidewalk. Everyone on a line walks at the line's speed (or stands), spaced >= 2 m along it,
    # so nobody walks through anybody.
    for side in (-1.0, 1.0):
        first = scene.road_half_width + 1.5
        last = scene.road_half_width + scene.sidewalk_width - 0.6
        lines = np.arange(first, last + 1e-9, 1.1)
        for offset in lines:
            y = side * offset
            standing = rng.random() < 0.25
            speed = 0.0 if standing else float(rng.choice([-1.0, 1.0]) * rng.uniform(0.8, 1.8))
            for x, name, dims in _place_vehicles(rng, -60.0, 70.0 + max(scene.ego_speed, 0) * duration, 2.0, 40.0,
                                                 (("Pedestrian", 1.0),)):
                heading = rng.uniform(-np.pi, np.pi) if standing else (0.0 if speed > 0 else np.pi)
                add("Pedestrian", x, y, heading, (speed, 0.0), scene.curb_height, dims=dims)
