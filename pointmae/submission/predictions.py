"""The prediction contract (see pointmae/submission/__init__.py): checking, saving and loading it."""
from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

PREDICTIONS_FORMAT = "pointmae-predictions"
PREDICTIONS_VERSION = 1


def check_predictions(predictions: Sequence[dict], name: str = "predictions") -> list[dict]:
    """Validate the contract; returns the entries with numpy arrays (boxes float64 (M, 7|9), scores
    float64 (M,), names str (M,)). Raises ValueError naming the entry and the field."""
    if isinstance(predictions, dict) or not isinstance(predictions, (list, tuple)):
        raise ValueError(f"{name} must be a list of per-frame dicts, got {type(predictions).__name__}")
    checked, seen = [], set()
    for index, entry in enumerate(predictions):
        where = f"{name}[{index}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{where} must be a dict with frame_id, boxes, scores, names; got {type(entry).__name__}")
        missing = [k for k in ("frame_id", "boxes", "scores", "names") if k not in entry]
        if missing:
            raise ValueError(f"{where} lacks {missing} (expected keys frame_id, boxes, scores, names)")
        frame_id = entry["frame_id"]
        if not isinstance(frame_id, str) or not frame_id:
            raise ValueError(f"{where}['frame_id'] must be a non-empty str, got {frame_id!r}")
        where = f"{where} (frame {frame_id!r})"
        if frame_id in seen:
            raise ValueError(f"{where}: frame_id appears twice")
        seen.add(frame_id)
        boxes = np.asarray(entry["boxes"], dtype=np.float64)
        if boxes.size == 0:
            boxes = boxes.reshape(0, boxes.shape[1] if boxes.ndim == 2 and boxes.shape[1] in (7, 9) else 7)
        if boxes.ndim != 2 or boxes.shape[1] not in (7, 9):
            raise ValueError(f"{where}['boxes'] must be (M, 7) or (M, 9), got shape {boxes.shape}")
        if not np.isfinite(boxes).all():
            raise ValueError(f"{where}['boxes'] contains NaN/Inf")
        if (boxes[:, 3:6] < 0).any():
            raise ValueError(f"{where}['boxes'] has negative sizes (dx, dy, dz)")
        scores = np.asarray(entry["scores"], dtype=np.float64).reshape(-1)
        names = np.asarray(entry["names"], dtype=str).reshape(-1)
        if len(scores) != len(boxes) or len(names) != len(boxes):
            raise ValueError(f"{where}: {len(boxes)} boxes but {len(scores)} scores and {len(names)} names")
        if not np.isfinite(scores).all():
            raise ValueError(f"{where}['scores'] contains NaN/Inf")
        checked.append({**entry, "frame_id": frame_id, "boxes": boxes, "scores": scores, "names": names})
    return checked


def save_predictions(path, predictions: Sequence[dict]) -> Path:
    """Write the contract's list to a .pkl (atomically: a temporary file, then a rename)."""
    path = Path(path)
    checked = check_predictions(predictions)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": PREDICTIONS_FORMAT, "version": PREDICTIONS_VERSION, "predictions": checked}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            pickle.dump(payload, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_predictions(path) -> list[dict]:
    """Read predictions (only trusted files: pickles are code). Accepted: the file save_predictions
    writes, and, for convenience, a bare list of per-frame dicts saved with pickle or torch.save (.pt)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"predictions file {path} not found")
    try:
        if path.suffix in (".pt", ".pth"):
            import torch
            payload = torch.load(path, map_location="cpu", weights_only=False)
        else:
            with open(path, "rb") as f:
                payload = pickle.load(f)
    except Exception as exc:
        raise ValueError(f"{path}: not a readable predictions file ({exc})") from None
    if isinstance(payload, (list, tuple)) and payload and all(isinstance(p, dict) for p in payload):
        return check_predictions(list(payload), name=f"{path}: predictions")
    if not isinstance(payload, dict) or payload.get("format") != PREDICTIONS_FORMAT:
        raise ValueError(f"{path}: expected a dict with format={PREDICTIONS_FORMAT!r} (written by "
                         f"pointmae.submission.save_predictions) or a list of per-frame dicts, got "
                         f"{type(payload).__name__}"
                         + (f" with format={payload.get('format')!r}" if isinstance(payload, dict) else ""))
    if payload.get("version") != PREDICTIONS_VERSION:
        raise ValueError(f"{path}: predictions format version {payload.get('version')!r}, this pointmae reads "
                         f"version {PREDICTIONS_VERSION}")
    return check_predictions(payload["predictions"], name=f"{path}: predictions")
