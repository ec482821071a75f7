"""The synthetic LiDAR world: scenes (scene.py) scanned by a spinning LiDAR (sensor.py) through the
ray caster (raycast.py), producing labelled pointmae Frames, sequence by sequence.

Determinism: sequence s of world seed S is generated from np.random.default_rng([S, s]); the noise of
frame f from default_rng([S, s, f]). Any frame can be produced alone, in any order, with the same bytes.

Motion distortion (optional, motion_distortion=True): a real spinning sensor fires column c at
t + dt_c over its 0.1 s rotation (dt_c from -0.05 s behind the car through 0 straight ahead to
+0.05 s) and reports each point in the sensor frame of ITS firing time, so the uncompensated sweep is
skewed by the ego's motion (a seam behind the car). We apply the ego part of that effect exactly:
p_reported = inv(pose(t + dt_c)) @ pose(t) @ p; the agents' own motion within one rotation is not
modelled (the scene is cast at t).

Simplifications (documented, not hidden): the scene is cast at the frame time (agents do not move
during one rotation); the ego and the agents stay upright on the mean ground plane (the sensor sees the
slope; nothing tilts with it); a ray returns at most one echo.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pointmae.data.boxes import untransform_boxes
from pointmae.data.frame import Frame
from pointmae.data.synthetic.raycast import BOX, CYLINDER, GroundField, Primitives, cast_rays
from pointmae.data.synthetic.scene import FRAME_RATE_HZ, MATERIALS, Scene, generate_scene
from pointmae.data.synthetic.sensor import SpinningLidar, sensor_preset

CHANNELS = ("x", "y", "z", "intensity", "ring")
LANE_WOBBLE_M, LANE_WOBBLE_RAD_S = 0.25, 0.6   # the ego's gentle lane keeping: y(t) = A sin(w t)


def occlusion_level(visible_fraction: np.ndarray) -> np.ndarray:
    """KITTI's occlusion states from the fraction of the object's rays that reach it:
    0 fully visible (>= 0.8), 1 partly (>= 0.4), 2 largely occluded (> 0), 3 unknown (no ray at all)."""
    v = np.asarray(visible_fraction)
    return np.select([v >= 0.8, v >= 0.4, v > 0], [0, 1, 2], default=3).astype(np.int64)


@dataclass
class SyntheticWorld:
    seed: int = 0
    sensor: SpinningLidar = field(default_factory=lambda: sensor_preset("hdl64"))
    frames_per_sequence: int = 20
    motion_distortion: bool = False

    def __post_init__(self):
        self._rays = self.sensor.ray_directions()
        self._scenes: dict[int, Scene] = {}

    # ---- scenes and poses ---------------------------------------------------------------------
    def scene(self, sequence: int) -> Scene:
        if sequence not in self._scenes:
            rng = np.random.default_rng([self.seed, sequence])
            self._scenes[sequence] = generate_scene(rng, self.frames_per_sequence / FRAME_RATE_HZ,
                                                    seed=self.seed)
        return self._scenes[sequence]

    def ego_pose(self, scene: Scene, t: float) -> np.ndarray:
        """4x4 sensor -> world at time t (yaw only: the sensor stays level)."""
        moving = scene.ego_speed > 0
        wobble = LANE_WOBBLE_M if moving else 0.0
        x = scene.ego_speed * t
        y = scene.lane_centres[scene.ego_lane] + wobble * np.sin(LANE_WOBBLE_RAD_S * t)
        yaw = np.arctan2(wobble * LANE_WOBBLE_RAD_S * np.cos(LANE_WOBBLE_RAD_S * t), scene.ego_speed) if moving else 0.0
        pose = np.eye(4)
        c, s = np.cos(yaw), np.sin(yaw)
        pose[:3, :3] = [[c, -s, 0], [s, c, 0], [0, 0, 1]]
        pose[:3, 3] = [x, y, scene.plane_height(x, y) + self.sensor.mount_height]
        return pose

    # ---- one frame ----------------------------------------------------------------------------
    def frame(self, sequence: int, index: int) -> Frame:
        scene = self.scene(sequence)
        t = index / FRAME_RATE_HZ
        pose = self.ego_pose(scene, t)
        sensor = self.sensor
        agent_boxes = np.array([a.box_at(t, scene.slope) for a in scene.agents]).reshape(-1, 9)
        prims = self._primitives(scene, agent_boxes, pose)
        ground = self._ground(scene, pose)
        rng = np.random.default_rng([self.seed, sequence, index])
        directions, elevation, azimuth = self._rays
        hit = cast_rays(directions, elevation, azimuth, ground, prims, sensor.max_range,
                        pass_through=rng.random(len(directions)))

        valid = np.isfinite(hit.t) & (hit.t >= sensor.min_range)
        owner_all = np.where(hit.primitive >= 0, prims.owner[np.maximum(hit.primitive, 0)], -1)
        nearest_hits = np.bincount(owner_all[valid & (owner_all >= 0)], minlength=len(scene.agents))
        rays = np.flatnonzero(valid)
        prim = hit.primitive[rays]
        extra_drop = np.where(prim >= 0, prims.dropout[np.maximum(prim, 0)], 0.0)
        p_drop = sensor.dropout + sensor.far_dropout * (hit.t[rays] / sensor.max_range) ** 2 + extra_drop
        keep = rng.random(len(rays)) >= p_drop
        rays, prim = rays[keep], prim[keep]
        ranges = hit.t[rays] + rng.normal(0.0, sensor.range_noise_std, len(rays))
        in_spec = (ranges >= sensor.min_range) & (ranges <= sensor.max_range)   # noise can push past the limits
        rays, prim, ranges = rays[in_spec], prim[in_spec], ranges[in_spec]
        xyz = directions[rays] * ranges[:, None]

        # Intensity: Lambertian, albedo x cos(incidence), plus noise; clipped to the reflectance scale.
        cos_incidence = np.abs(np.einsum("ij,ij->i", directions[rays], hit.normal[rays]))
        world_xy = xyz[:, :2] @ pose[:2, :2].T + pose[:2, 3]
        albedo = np.where(prim >= 0, prims.albedo[np.maximum(prim, 0)], scene.ground_albedo(world_xy[:, 0], world_xy[:, 1]))
        intensity = np.clip(albedo * cos_incidence + rng.normal(0, sensor.intensity_noise_std, len(rays)), 0.0, 1.0)
        intensity = intensity * sensor.intensity_scale
        if sensor.intensity_scale > 1:
            intensity = np.round(intensity)
        ring = (rays // len(azimuth)).astype(np.float64)
        if self.motion_distortion and scene.ego_speed > 0:
            xyz = self._distort(scene, t, pose, xyz, rays % len(azimuth), len(azimuth))
        points = np.c_[xyz, intensity, ring].astype(np.float32)

        # Labels: agents whose centre is within the sensor's range.
        owners = np.where(prim >= 0, prims.owner[np.maximum(prim, 0)], -1)
        returned = np.bincount(owners[owners >= 0], minlength=len(scene.agents))
        unoccluded = np.array([hit.unoccluded.get(a, 0) for a in range(len(scene.agents))])
        boxes = untransform_boxes(agent_boxes, pose) if len(agent_boxes) else np.zeros((0, 9))
        in_range = np.hypot(boxes[:, 0], boxes[:, 1]) <= sensor.max_range
        with np.errstate(invalid="ignore", divide="ignore"):
            visible = np.where(unoccluded > 0, nearest_hits / np.maximum(unoccluded, 1), 0.0)
        names = np.array([a.name for a in scene.agents], dtype=str)
        box_meta = {"track_id": np.array([a.track_id for a in scene.agents], dtype=np.int64)[in_range],
                    "num_points": returned[in_range].astype(np.int64),
                    "visible_fraction": visible[in_range],
                    "occluded": occlusion_level(np.where(unoccluded > 0, visible, -1))[in_range]}
        meta = {"ego_velocity_world": np.array([scene.ego_speed, 0.0]), "sensor": sensor.name,
                "num_rays": len(directions), "dropped_by_sensor_model": int((~keep).sum() + (~in_spec).sum())}
        return Frame(points=points, channels=CHANNELS, pose=pose, timestamp=t,
                     frame_id=f"{sequence:04d}_{index:04d}", sequence_id=f"synthetic-{self.seed}-{sequence:04d}",
                     boxes=boxes[in_range], names=names[in_range], box_meta=box_meta, meta=meta)

    def sequence(self, sequence: int):
        for index in range(self.frames_per_sequence):
            yield self.frame(sequence, index)

    # ---- helpers ------------------------------------------------------------------------------
    def _distort(self, scene: Scene, t: float, pose: np.ndarray, xyz: np.ndarray, columns: np.ndarray,
                 num_columns: int) -> np.ndarray:
        """Each point re-expressed in the sensor frame of its column's firing time (see module doc)."""
        period = 1.0 / FRAME_RATE_HZ
        out = np.empty_like(xyz)
        # The ego moves smoothly: 64 pose samples over the rotation, each column uses the nearest.
        samples = 64
        group = (columns * samples) // num_columns
        for g in np.unique(group):
            dt = ((g + 0.5) / samples - 0.5) * period
            relative = np.linalg.solve(self.ego_pose(scene, t + dt), pose)     # inv(P(t+dt)) @ P(t)
            sel = group == g
            out[sel] = xyz[sel] @ relative[:3, :3].T + relative[:3, 3]
        return out

    def _ground(self, scene: Scene, pose: np.ndarray) -> GroundField:
        """The world ground height field rewritten in the sensor frame of `pose` (yaw-only)."""
        c, s = pose[0, 0], pose[1, 0]
        px, py, pz = pose[:3, 3]
        a, b = scene.slope
        k = scene.wave_k
        return GroundField(slope_x=a * c + b * s, slope_y=-a * s + b * c, offset=a * px + b * py - pz,
                           wave_k=np.c_[k[:, 0] * c + k[:, 1] * s, -k[:, 0] * s + k[:, 1] * c],
                           wave_phase=scene.wave_phase + k[:, 0] * px + k[:, 1] * py, wave_amp=scene.wave_amp)

    def _primitives(self, scene: Scene, agent_boxes: np.ndarray, pose: np.ndarray) -> Primitives:
        kinds = [scene.static_kind]
        params = [scene.static_params]
        materials = list(scene.static_material)
        porosity = [scene.static_porosity]
        owner = [np.full(len(scene.static_kind), -1)]
        for a, (agent, box) in enumerate(zip(scene.agents, agent_boxes)):
            c, s = np.cos(agent.heading), np.sin(agent.heading)
            base = box[2] - box[5] / 2
            for part in agent.parts:
                p = np.zeros(7)
                lx, ly = part.params[0], part.params[1]
                p[0], p[1] = box[0] + c * lx - s * ly, box[1] + s * lx + c * ly
                if part.kind == BOX:
                    p[2:6] = base + part.params[2], *part.params[3:6]
                    p[6] = agent.heading
                elif part.kind == CYLINDER:
                    p[2:5] = base + part.params[2], base + part.params[3], part.params[4]
                else:
                    p[2:4] = base + part.params[2], part.params[3]
                kinds.append(np.array([part.kind]))
                params.append(p[None])
                materials.append(part.material)
                porosity.append(np.array([part.porosity]))
                owner.append(np.array([a]))
        kind = np.concatenate(kinds)
        world = np.concatenate(params)
        # World -> sensor (yaw-only pose): rotate/translate centres, shift z, turn box yaws.
        local = world.copy()
        rotation, t = pose[:3, :3], pose[:3, 3]
        local[:, :2] = (world[:, :2] - t[:2]) @ rotation[:2, :2]
        yaw = np.arctan2(rotation[1, 0], rotation[0, 0])
        local[:, 2] -= t[2]
        local[kind == CYLINDER, 3] -= t[2]
        local[kind == BOX, 6] -= yaw
        albedo = np.array([MATERIALS[m][0] for m in materials])
        dropout = np.array([MATERIALS[m][1] for m in materials])
        prims = Primitives(kind=kind, params=local, albedo=albedo, dropout=dropout,
                           porosity=np.concatenate(porosity), owner=np.concatenate(owner))
        # Drop what cannot be reached.
        cx, cy, radius, _, _ = prims.bounds()
        near = np.hypot(cx, cy) - radius <= self.sensor.max_range
        return Primitives(*(getattr(prims, f)[near] for f in ("kind", "params", "albedo", "dropout", "porosity", "owner")))
