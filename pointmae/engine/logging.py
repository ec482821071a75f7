"""What a run tells people: a progress bar, TensorBoard scalars and pictures, a plain-text log.

Only rank 0 writes anything (files, events, the bar); the other ranks get a logger whose methods
do nothing, so the training loop never needs an `if rank == 0`.

Files in the run directory:
  train.log       plain text, one line per logged step and every message
  metrics.jsonl   the same scalars, one JSON object per logged step (easy to plot or test)
  tb/             TensorBoard events: train/<loss term>, train/lr, train/grad_norm,
                  train/samples_per_s, train/memory_mb, and images
  vis/            the models' pictures as PNG (step_00000100_<name>.png)
"""
from __future__ import annotations

import json
import logging as pylogging
import sys
from pathlib import Path
from typing import Mapping

import numpy as np
import torch


class RunLogger:
    def __init__(self, work_dir: Path, enabled: bool, tensorboard: bool = True, progress_bar: bool = True):
        self.enabled = enabled
        self.work_dir = Path(work_dir)
        self.progress_bar = progress_bar and enabled
        self._bar = None
        self._tb = None
        self._metrics = None
        self._log = pylogging.getLogger(f"pointmae.run.{id(self)}")
        self._log.propagate = False
        self._log.setLevel(pylogging.INFO)
        if not enabled:
            return
        self.work_dir.mkdir(parents=True, exist_ok=True)
        fmt = pylogging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S")
        file_handler = pylogging.FileHandler(self.work_dir / "train.log")
        file_handler.setFormatter(fmt)
        self._log.addHandler(file_handler)
        console = pylogging.StreamHandler(sys.stdout)
        console.setFormatter(fmt)
        self._log.addHandler(console)
        self._metrics = open(self.work_dir / "metrics.jsonl", "a")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                self.info("tensorboard is not installed: no TensorBoard events (pip install tensorboard)")
            else:
                self._tb = SummaryWriter(log_dir=str(self.work_dir / "tb"))

    # -- messages -------------------------------------------------------------------------------------

    def info(self, message: str) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            # Printing through tqdm keeps the bar at the bottom instead of tearing it.
            for h in self._log.handlers:
                if isinstance(h, pylogging.FileHandler):
                    h.emit(self._log.makeRecord(self._log.name, pylogging.INFO, "", 0, message, None, None))
            self._bar.write(message)
        else:
            self._log.info(message)

    # -- progress bar ---------------------------------------------------------------------------------

    def start_epoch(self, epoch: int, total_steps: int, done_steps: int) -> None:
        if not self.progress_bar:
            return
        from tqdm import tqdm
        self._bar = tqdm(total=total_steps, initial=done_steps, desc=f"epoch {epoch}", unit="step",
                         dynamic_ncols=True, mininterval=1.0, file=sys.stderr)

    def advance(self, loss: float, samples_per_s: float, run_eta_s: float) -> None:
        if self._bar is not None:
            eta = int(max(run_eta_s, 0))
            self._bar.set_postfix(loss=f"{loss:.4g}", samples_s=f"{samples_per_s:.1f}",
                                  run_eta=f"{eta // 3600}:{eta // 60 % 60:02d}:{eta % 60:02d}", refresh=False)
            self._bar.update(1)

    def end_epoch(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    # -- scalars and images ---------------------------------------------------------------------------

    def scalars(self, step: int, epoch: int, values: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        values = {k: float(v) for k, v in values.items()}
        if self._tb is not None:
            for key, value in values.items():
                self._tb.add_scalar(f"train/{key}", value, step)
        self._metrics.write(json.dumps({"step": step, "epoch": epoch, **values}) + "\n")
        self._metrics.flush()
        text = " ".join(f"{k}={v:.6g}" for k, v in values.items())
        self.info(f"epoch {epoch} step {step} {text}")

    def images(self, step: int, images: Mapping[str, object]) -> None:
        """Pictures as HxWx3 (or HxW) uint8 arrays / tensors, to TensorBoard and as PNG files."""
        if not self.enabled or not images:
            return
        vis_dir = self.work_dir / "vis"
        vis_dir.mkdir(exist_ok=True)
        for name, picture in images.items():
            array = _to_uint8_hwc(picture)
            if self._tb is not None:
                self._tb.add_image(f"vis/{name}", array, step, dataformats="HWC")
            try:
                from PIL import Image
            except ImportError:
                continue
            safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
            Image.fromarray(array.squeeze(-1) if array.shape[-1] == 1 else array).save(
                vis_dir / f"step_{step:08d}_{safe}.png")

    def close(self) -> None:
        self.end_epoch()
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None
        for h in list(self._log.handlers):
            h.close()
            self._log.removeHandler(h)


def _to_uint8_hwc(picture) -> np.ndarray:
    if isinstance(picture, torch.Tensor):
        picture = picture.detach().cpu().numpy()
    array = np.asarray(picture)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise ValueError(f"a picture must be HxW or HxWxC, got shape {array.shape}")
    if array.dtype != np.uint8:
        # Floats are taken as [0, 1] intensities.
        array = (np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return array


def memory_mb(device: torch.device) -> float:
    """Peak memory of this process: CUDA allocations on a GPU, resident set size on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
    except ImportError:
        return float("nan")

