"""Checkpoints that survive crashes: atomic writes, a content digest, keep-last-N and best, fallback.

A checkpoint is one `torch.save` file holding a plain dict (loadable with `torch.load(...,
weights_only=True)`): the model, optimizer, LR scheduler and grad scaler states, the epoch / global
step / batches consumed in the epoch (the data-loader position), the RNG states of every rank
(python, numpy, torch, CUDA), the resolved config, a format version, and a SHA-256 digest of all of
that. The digest catches what the zip container does not: torch's reader notices a truncated file
but happily loads flipped bytes inside a tensor.

Writes go to a temporary file in the same directory, are fsync'ed, renamed over the final name
(atomic on POSIX) and the directory is fsync'ed, so a crash at any moment leaves either the old or
the new file, never a half-written one under the real name.
"""
from __future__ import annotations

import hashlib
import os
import random
import re
import warnings
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

FORMAT = "pointmae-checkpoint"
FORMAT_VERSION = 1
_STEP_FILE = re.compile(r"^ckpt_step(\d+)\.pt$")
BEST_NAME = "best.pt"


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used; the message names the file and what is wrong with it."""


# ----------------------------------------------------------------------------------------------------
# Atomic file writing


def atomic_torch_save(obj: Any, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _atomic_link_or_copy(src: Path, dst: Path) -> None:
    # best.pt is the same bytes as the step checkpoint: a hard link costs no I/O and survives the
    # pruning of the step file; rename makes the switch atomic.
    tmp = dst.with_name(f".{dst.name}.tmp.{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:  # file systems without hard links
        import shutil
        shutil.copyfile(src, tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
    os.replace(tmp, dst)
    _fsync_dir(dst.parent)


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable: without it a power cut can forget the new directory entry.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------------------------------
# Content digest


def state_digest(state: Any) -> str:
    """SHA-256 over every tensor's dtype, shape and bytes and every other leaf's repr, in key order."""
    h = hashlib.sha256()
    _feed(h, state)
    return h.hexdigest()


def _feed(h, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, dict):
        h.update(b"{")
        for key in sorted(value, key=repr):
            h.update(repr(key).encode())
            _feed(h, value[key])
        h.update(b"}")
    elif isinstance(value, (list, tuple)):
        h.update(b"[" if isinstance(value, list) else b"(")
        for item in value:
            _feed(h, item)
        h.update(b"]")
    else:
        h.update(repr(value).encode())


# ----------------------------------------------------------------------------------------------------
# RNG states (one dict per rank; only plain types and tensors so that weights_only loading works)


def capture_rng_state(device: torch.device) -> dict:
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
    }
    return state


def restore_rng_state(state: dict, device: torch.device) -> None:
    random.setstate(_as_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"], device)


def _as_tuple(value):
    # random.setstate wants tuples all the way down; a round trip may hand back lists.
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


# ----------------------------------------------------------------------------------------------------
# Reading


def load_checkpoint(path: Path) -> dict:
    """Loads and verifies one checkpoint; any problem is a CheckpointError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, garbage bytes, unpickling errors: all mean "unusable"
        raise CheckpointError(f"checkpoint {path} is truncated or corrupted and cannot be read "
                              f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a pointmae training checkpoint (no '{FORMAT}' marker)")
    version = state.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} has format version {version}; this pointmae reads "
                              f"version {FORMAT_VERSION}")
    stored = state.pop("digest", None)
    if stored is None or stored != state_digest(state):
        raise CheckpointError(f"checkpoint {path} is corrupted: its content does not match the digest "
                              "stored in it")
    return state


# ----------------------------------------------------------------------------------------------------
# The directory of a run's checkpoints


class CheckpointManager:
    """`ckpt_step00001234.pt` files (the last `keep_last` are kept) plus `best.pt` in one directory."""

    def __init__(self, directory: Path, keep_last: int):
        if keep_last < 1:
            raise ValueError(f"keep_last must be >= 1, got {keep_last}")
        self.directory = Path(directory)
        self.keep_last = keep_last

    def step_path(self, step: int) -> Path:
        return self.directory / f"ckpt_step{step:08d}.pt"

    @property
    def best_path(self) -> Path:
        return self.directory / BEST_NAME

    def step_checkpoints(self) -> list[Path]:
        """Newest first."""
        if not self.directory.is_dir():
            return []
        found = []
        for p in self.directory.iterdir():
            m = _STEP_FILE.match(p.name)
            if m:
                found.append((int(m.group(1)), p))
        return [p for _, p in sorted(found, reverse=True)]

    def save(self, state: dict, step: int, is_best: bool = False) -> Path:
        state = {"format": FORMAT, "format_version": FORMAT_VERSION, **state}
        state["digest"] = state_digest(state)
        path = self.step_path(step)
        atomic_torch_save(state, path)
        if is_best:
            _atomic_link_or_copy(path, self.best_path)
        self._prune()
        return path

    def _prune(self) -> None:
        for old in self.step_checkpoints()[self.keep_last:]:
            old.unlink(missing_ok=True)

    def remove_stale_temporaries(self) -> None:
        """Temporary files of writes that a crash interrupted; the real files are untouched."""
        if self.directory.is_dir():
            for p in self.directory.glob(".*.tmp.*"):
                p.unlink(missing_ok=True)

    def load_latest(self) -> Optional[tuple[Path, dict]]:
        """The newest checkpoint that loads and verifies, falling back over broken ones (with a warning).

        None when there are no checkpoints; a CheckpointError when there are some but none is usable
        (starting over would silently throw the run away).
        """
        candidates = self.step_checkpoints()
        if not candidates:
            return None
        problems = []
        for path in candidates:
            try:
                return path, load_checkpoint(path)
            except CheckpointError as e:
                warnings.warn(f"{e}; falling back to the previous checkpoint", stacklevel=2)
                problems.append(str(e))
        raise CheckpointError(f"none of the checkpoints in {self.directory} can be used:\n  "
                              + "\n  ".join(problems))
