"""Ground-truth sampling ("GT-Aug", SECOND, Yan et al., Sensors 2018): paste objects from other
training frames into the current one, so that every frame shows more (and rarer) objects.

`GTDatabase.build` collects, from the labelled training frames, every box of the wanted classes with
at least `min_points` points together with the points inside it (in the sensor frame of its own
frame, i.e. at its original place). `GTSampler` then tops each class up to `sample_counts[class]`
objects per frame: it draws candidates, rejects every one whose BEV footprint overlaps (IoU > 0,
pointmae.ops.box_iou_bev) an existing box or an already accepted candidate, removes the frame's own
points inside the accepted boxes and adds the objects' points.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from pointmae import ops
from pointmae.data.boxes import points_in_boxes
from pointmae.data.frame import Frame


@dataclass
class GTDatabase:
    """Per class: boxes (K, 7|9) float64 and the points (P_k, C) float32 of each box (same channels
    as the frames they came from), plus the frame each came from."""
    channels: tuple[str, ...]
    boxes: dict[str, np.ndarray] = field(default_factory=dict)
    points: dict[str, list[np.ndarray]] = field(default_factory=dict)
    source_frames: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def build(cls, frames: Iterable[Frame], class_names, min_points: int = 5) -> "GTDatabase":
        db = None
        wanted = set(class_names)
        collected: dict[str, list] = {name: [] for name in class_names}
        for frame in frames:
            frame = frame.to_numpy()
            if db is None:
                db = cls(channels=tuple(frame.channels))
            elif tuple(frame.channels) != db.channels:
                raise ValueError(f"frame {frame.frame_id} has channels {frame.channels}, the database {db.channels}")
            select = np.array([n in wanted for n in frame.names], dtype=bool)
            if not select.any():
                continue
            boxes, names = frame.boxes[select], frame.names[select]
            inside = points_in_boxes(frame.points[:, :3], boxes)                  # (N, M)
            for m in range(len(boxes)):
                pts = frame.points[inside[:, m]]
                if len(pts) >= min_points:
                    collected[str(names[m])].append((boxes[m], pts, frame.frame_id))
        if db is None:
            raise ValueError("GTDatabase.build: no frames given")
        width = max((len(e[0]) for entries in collected.values() for e in entries), default=7)
        for name, entries in collected.items():
            db.boxes[name] = np.array([_width(e[0], width) for e in entries], dtype=np.float64).reshape(-1, width)
            db.points[name] = [e[1] for e in entries]
            db.source_frames[name] = [e[2] for e in entries]
        return db

    def counts(self) -> dict[str, int]:
        return {name: len(b) for name, b in self.boxes.items()}

    def save(self, path) -> None:
        state = {"channels": list(self.channels),
                 "boxes": {k: torch.from_numpy(v) for k, v in self.boxes.items()},
                 "points": {k: [torch.from_numpy(p) for p in v] for k, v in self.points.items()},
                 "source_frames": self.source_frames}
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, path)

    @classmethod
    def load(cls, path) -> "GTDatabase":
        state = torch.load(path, map_location="cpu", weights_only=True)
        return cls(channels=tuple(state["channels"]), boxes={k: v.numpy() for k, v in state["boxes"].items()},
                   points={k: [p.numpy() for p in v] for k, v in state["points"].items()},
                   source_frames=state["source_frames"])


def _width(box: np.ndarray, width: int) -> np.ndarray:
    """A box padded to `width` columns with NaN (unknown velocity) or cut to it."""
    if len(box) >= width:
        return box[:width]
    return np.r_[box, np.full(width - len(box), np.nan)]


def _extend_meta(value: np.ndarray, n: int) -> np.ndarray:
    value = np.asarray(value)
    if value.dtype == bool:
        fill = False
    elif np.issubdtype(value.dtype, np.floating):
        fill = np.nan
    elif np.issubdtype(value.dtype, np.integer):
        fill = -1
    else:
        fill = ""
    return np.concatenate([value, np.full((n,) + value.shape[1:], fill, dtype=value.dtype)])


@dataclass
class GTSampler:
    """Transform `sampler(frame, rng) -> frame`. sample_counts: {class: objects wanted per frame}.
    The pasted boxes are marked in box_meta["gt_sampled"]; box_meta["num_points"] holds their points."""
    database: GTDatabase
    sample_counts: dict

    def __post_init__(self):
        unknown = [c for c in self.sample_counts if c not in self.database.boxes]
        if unknown:
            raise ValueError(f"gt_sample_counts names classes {unknown} that the database does not have "
                             f"(it has {sorted(self.database.boxes)})")

    def __call__(self, frame: Frame, rng: np.random.Generator) -> Frame:
        frame = frame.to_numpy()
        if tuple(frame.channels) != self.database.channels:
            raise ValueError(f"frame {frame.frame_id} has channels {frame.channels}; the GT database was built "
                             f"with {self.database.channels}")
        chosen_boxes, chosen_points, chosen_names = [], [], []
        occupied = frame.boxes[:, :7]
        for name, wanted in self.sample_counts.items():
            pool = self.database.boxes[name]
            need = int(wanted) - int(np.sum(frame.names == name))
            if need <= 0 or len(pool) == 0:
                continue
            picks = rng.choice(len(pool), size=min(need, len(pool)), replace=False)
            candidates = pool[picks]
            accepted = _non_colliding(candidates[:, :7], occupied)
            for k in np.flatnonzero(accepted):
                chosen_boxes.append(candidates[k])
                chosen_points.append(self.database.points[name][picks[k]])
                chosen_names.append(name)
            if accepted.any():
                occupied = np.concatenate([occupied, candidates[accepted, :7]])
        if not chosen_boxes:
            return replace(frame, box_meta=dict(frame.box_meta, gt_sampled=np.zeros(len(frame.boxes), bool)))
        new_boxes = np.stack([_width(b, frame.boxes.shape[1]) for b in chosen_boxes])
        # The frame's own points inside a pasted object would sit inside a solid object: remove them.
        covered = points_in_boxes(frame.points[:, :3], new_boxes).any(axis=1)
        points = np.concatenate([frame.points[~covered]] + chosen_points).astype(np.float32)
        n_new = len(new_boxes)
        meta = {k: _extend_meta(v, n_new) for k, v in frame.box_meta.items() if k != "gt_sampled"}
        if "num_points" in meta:
            meta["num_points"][-n_new:] = [len(p) for p in chosen_points]
        meta["gt_sampled"] = np.r_[np.zeros(len(frame.boxes), bool), np.ones(n_new, bool)]
        return replace(frame, points=points, boxes=np.concatenate([frame.boxes, new_boxes]),
                       names=np.concatenate([frame.names, np.array(chosen_names, dtype=frame.names.dtype
                                                                   if len(frame.names) else str)]).astype(str),
                       box_meta=meta, meta=dict(frame.meta, gt_sampled=n_new))


def _non_colliding(candidates: np.ndarray, occupied: np.ndarray) -> np.ndarray:
    """(K,) bool: candidate k overlaps (BEV IoU > 0) neither an occupied box nor an earlier accepted
    candidate. candidates (K, 7), occupied (M, 7)."""
    cand = torch.from_numpy(np.ascontiguousarray(candidates, dtype=np.float64))
    accepted = np.ones(len(candidates), dtype=bool)
    if len(occupied):
        iou = ops.box_iou_bev(cand, torch.from_numpy(np.ascontiguousarray(occupied, dtype=np.float64)))
        accepted &= ~(iou > 0).any(dim=1).numpy()
    among = (ops.box_iou_bev(cand, cand) > 0).numpy()
    for k in range(len(candidates)):
        if accepted[k] and accepted[:k][among[k, :k]].any():
            accepted[k] = False
    return accepted
