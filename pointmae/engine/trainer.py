"""The training loop, the same for every model in pointmae.

The contract with a model is small: `model(batch)` returns a dict with a scalar `loss` (back-
propagated) and any other scalar terms (logged); an optional `model.visualize(batch, outputs)`
returns pictures. Everything else (devices, DDP, mixed precision, accumulation, checkpoints, exact
resumption, logging) lives here.

Exact resumption: a checkpoint is taken only between optimizer steps and holds, besides the
model/optimizer/scheduler/scaler states, the epoch, the number of batches already consumed in that
epoch and the RNG states of every rank. On resume the sampler reshuffles the epoch with the same
seed and skips the consumed batches, and the data loader gets a per-epoch seeded generator (never
the global RNG), so the resumed run sees the same batches with the same random numbers as an
uninterrupted one: on the CPU the final weights are bit-identical.
"""
from __future__ import annotations

import contextlib
import math
import os
import random
import signal
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from pointmae.config import OptimConfig, SchedConfig, TrainConfig
from pointmae.engine import distributed as D
from pointmae.engine.builders import build_optimizer, build_scheduler
from pointmae.engine.checkpoint import (CheckpointError, CheckpointManager, atomic_torch_save,
                                        capture_rng_state, load_checkpoint, restore_rng_state)
from pointmae.engine.logging import RunLogger, memory_mb


class NonFiniteLossError(RuntimeError):
    """The loss (or gradient norm) became NaN/Inf; the message names the step."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def set_deterministic(enabled: bool) -> None:
    if enabled:
        # cuBLAS needs a fixed workspace to be deterministic; it must be set before the first call.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


def move_to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: move_to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)) and not hasattr(batch, "_fields"):
        return type(batch)(move_to_device(v, device) for v in batch)
    return batch


class Trainer:
    def __init__(self, model: nn.Module, dataset: Dataset, train: TrainConfig, optim: OptimConfig,
                 sched: SchedConfig, work_dir: Path, config_dict: Optional[dict] = None,
                 info: Optional[D.DistInfo] = None, collate_fn: Optional[Callable] = None,
                 lr_mults: Optional[dict[str, float]] = None):
        self.cfg = train
        self.work_dir = Path(work_dir)
        self.config_dict = config_dict or {}
        self.info = info or D.init_distributed(train.device)
        for key in ("epochs", "batch_size", "grad_accum", "log_every", "keep_last"):
            if getattr(train, key) < 1:
                raise ValueError(f"train.{key} must be >= 1, got {getattr(train, key)}")
        if train.amp == "fp16" and self.info.device.type != "cuda":
            raise ValueError("train.amp=fp16 needs a GPU; use bf16 on the CPU")
        set_deterministic(train.deterministic)
        dev = self.info.device

        # The model was built under `seed` (identical on every rank; DDP also broadcasts rank 0's
        # weights). From here on each rank draws its own random numbers (dropout, augmentation).
        self.model = model.to(dev)
        seed_everything(train.seed + self.info.rank)
        self.ddp = D.wrap_model(self.model, self.info, train.sync_bn)
        if self.ddp is not self.model:
            self.model = D.unwrap(self.ddp)  # SyncBatchNorm conversion may have replaced modules
        self.train_model = torch.compile(self.ddp) if train.compile else self.ddp

        self.sampler = D.ResumableDistributedSampler(dataset, self.info, shuffle=True, seed=train.seed,
                                                     drop_last=True)
        self.loader = DataLoader(dataset, batch_size=train.batch_size, sampler=self.sampler,
                                 num_workers=train.num_workers, collate_fn=collate_fn or
                                 getattr(dataset, "collate_fn", None), drop_last=True,
                                 pin_memory=dev.type == "cuda", generator=torch.Generator())
        batches_per_epoch = len(self.sampler) // train.batch_size
        self.steps_per_epoch = batches_per_epoch // train.grad_accum
        if self.steps_per_epoch < 1:
            raise ValueError(
                f"the dataset ({len(dataset)} samples) is too small for one optimizer step of "
                f"batch_size={train.batch_size} x grad_accum={train.grad_accum} x "
                f"world_size={self.info.world_size}")
        self.total_steps = train.epochs * self.steps_per_epoch
        if train.max_steps is not None:
            self.total_steps = min(self.total_steps, train.max_steps)

        self.optimizer = build_optimizer(self.model, optim, lr_mults)
        self.scheduler = build_scheduler(self.optimizer, sched, optim.lr, self.steps_per_epoch,
                                         self.total_steps)
        self.scaler = torch.amp.GradScaler(dev.type, enabled=train.amp == "fp16")
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(train.amp)
        self.checkpoints = CheckpointManager(self.work_dir / "checkpoints", train.keep_last)
        self.log = RunLogger(self.work_dir, self.info.is_main, train.tensorboard, train.progress_bar)

        # Position and bookkeeping; all of it goes into checkpoints.
        self.epoch = 0
        self.step = 0                  # optimizer steps done (skipped non-finite steps included)
        self.batches_done = 0          # batches of the current epoch already consumed
        self.skipped_steps = 0
        self.epoch_loss_sum = 0.0      # this rank's sum of micro-batch losses in the epoch
        self.epoch_loss_count = 0
        self.best_loss = math.inf
        self.interrupted = False       # stopped early by SIGTERM, with a checkpoint
        self._stop_requested = False

    # ------------------------------------------------------------------------------------------------
    # Checkpoints

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch, "step": self.step, "batches_done": self.batches_done,
            "skipped_steps": self.skipped_steps, "best_loss": self.best_loss,
            "epoch_loss_sum": self.epoch_loss_sum, "epoch_loss_count": self.epoch_loss_count,
            "world_size": self.info.world_size,
            "batch_size": self.cfg.batch_size, "grad_accum": self.cfg.grad_accum,
            "config": self.config_dict,
        }

    def save_checkpoint(self, is_best: bool = False) -> None:
        # Every rank's RNG state is needed to continue exactly; rank 0 writes them all.
        rngs = D.all_gather_objects(capture_rng_state(self.info.device), self.info)
        if self.info.is_main:
            state = self.state_dict()
            state["rng"] = rngs
            path = self.checkpoints.save(state, self.step, is_best=is_best)
            self.log.info(f"saved checkpoint {path}" + (" (best so far)" if is_best else ""))
        D.barrier(self.info)

    def resume(self, path: Optional[Path] = None) -> bool:
        """Loads `path`, or the newest good checkpoint of the work dir; False when there is none.

        Rank 0 picks and verifies the file and tells the others (which then load the same file), so
        every rank continues from the same checkpoint, and a failure is raised on every rank rather
        than leaving the others waiting.
        """
        state, chosen, problem = None, None, None
        if self.info.is_main:
            self.checkpoints.remove_stale_temporaries()
            try:
                if path is None:
                    found = self.checkpoints.load_latest()
                    if found is not None:
                        chosen, state = str(found[0]), found[1]
                else:
                    chosen, state = str(path), load_checkpoint(Path(path))
            except CheckpointError as e:
                problem = str(e)
        chosen, problem = D.broadcast_object((chosen, problem), self.info)
        if problem is not None:
            raise CheckpointError(problem)
        if chosen is None:
            return False
        if state is None:
            state = load_checkpoint(Path(chosen))
        self._load_state(state, Path(chosen))
        self.log.info(f"resumed from {chosen}: epoch {self.epoch}, step {self.step}, "
                      f"{self.batches_done} batches into the epoch")
        return True

    def _load_state(self, state: dict, path: Path) -> None:
        if (state["batch_size"], state["grad_accum"]) != (self.cfg.batch_size, self.cfg.grad_accum):
            raise CheckpointError(
                f"checkpoint {path} was written with batch_size={state['batch_size']}, grad_accum="
                f"{state['grad_accum']}; this run has {self.cfg.batch_size}, {self.cfg.grad_accum}: the "
                "data-loader position would not mean the same samples")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        for key in ("epoch", "step", "batches_done", "skipped_steps", "best_loss",
                    "epoch_loss_sum", "epoch_loss_count"):
            setattr(self, key, state[key])
        rngs = state.get("rng") or []
        if len(rngs) == self.info.world_size and state["world_size"] == self.info.world_size:
            restore_rng_state(rngs[self.info.rank], self.info.device)
        else:
            warnings.warn(f"checkpoint {path} was written by {state['world_size']} processes, this run "
                          f"has {self.info.world_size}: random states are reseeded, so the "
                          "continuation is not bit-exact")
            seed_everything(self.cfg.seed + self.info.rank + 7919 * self.step)
        if state["world_size"] != self.info.world_size and self.batches_done:
            # A mid-epoch position counts this rank's batches; with another world size it maps to
            # different samples, so restart the epoch rather than skip the wrong ones.
            self.batches_done = 0

    # ------------------------------------------------------------------------------------------------
    # The loop

    def fit(self) -> nn.Module:
        c = self.cfg
        samples_per_step = c.batch_size * c.grad_accum * self.info.world_size
        self.log.info(f"training on {self.info.device} x {self.info.world_size} process(es): "
                      f"{self.steps_per_epoch} steps/epoch, {self.total_steps} steps in all, "
                      f"{samples_per_step} samples per optimizer step")
        previous_handler = self._catch_sigterm()
        try:
            while self.epoch < c.epochs and self.step < self.total_steps and not self.interrupted:
                self._run_epoch(samples_per_step)
            if not self.interrupted:
                self._save_final_weights()
        except Exception as e:
            self.log.info(f"stopped: {type(e).__name__}: {e}")  # into train.log, not only the console
            raise
        finally:
            if previous_handler is not None:
                signal.signal(signal.SIGTERM, previous_handler)
            self.log.close()
        return self.model

    def _catch_sigterm(self):
        """SIGTERM (torchrun shutting down, SLURM preemption or time limit, `kill`) asks the loop to
        finish the current optimizer step, write a checkpoint and return, so nothing since the last
        periodic checkpoint is lost. Returns the previous handler (None when not in the main thread)."""
        if threading.current_thread() is not threading.main_thread():
            return None

        def request_stop(signum, frame):
            self._stop_requested = True

        return signal.signal(signal.SIGTERM, request_stop)

    def _epoch_loader(self):
        self.sampler.set_epoch(self.epoch)
        self.sampler.skip(self.batches_done * self.cfg.batch_size)
        # Worker seeds derive from this generator; seeding it per epoch and rank keeps them off the
        # global RNG, whose state a resumed run must find exactly as the uninterrupted one left it.
        self.loader.generator.manual_seed(self.cfg.seed * 1_000_003 + self.epoch * 101 + self.info.rank)
        return self.loader

    def _run_epoch(self, samples_per_step: int) -> None:
        c = self.cfg
        batches_in_epoch = self.steps_per_epoch * c.grad_accum
        self.log.start_epoch(self.epoch, self.steps_per_epoch, self.batches_done // c.grad_accum)
        window_bad = False
        sums: dict[str, torch.Tensor] = {}
        count = 0
        tick = time.perf_counter()
        step_time_avg = None
        last_log_step, last_log_time = self.step, tick
        for batch in self._epoch_loader():
            if self.batches_done >= batches_in_epoch:
                break  # the leftover batches that do not fill an accumulation window
            last_in_window = (self.batches_done + 1) % c.grad_accum == 0
            batch = move_to_device(batch, self.info.device)
            sync = contextlib.nullcontext()
            if self.info.distributed and not last_in_window:
                sync = self.ddp.no_sync()  # accumulate locally; all-reduce on the window's last batch
            with sync:
                with torch.autocast(self.info.device.type, dtype=self.amp_dtype,
                                    enabled=self.amp_dtype is not None):
                    outputs = self.train_model(batch)
                loss = outputs["loss"]
                loss_value = float(loss.detach().float())
                # One collective answers both: did any rank see a NaN, did any rank get SIGTERM.
                bad, stop = D.any_rank_flags([not math.isfinite(loss_value),
                                              last_in_window and self._stop_requested], self.info)
                if bad:
                    window_bad = True
                    self._nonfinite(f"non-finite loss ({loss_value} on rank {self.info.rank})")
                else:
                    self.scaler.scale(loss / c.grad_accum).backward()
            self.batches_done += 1
            if not bad:  # a skipped batch's NaN would poison the logged means
                self.epoch_loss_sum += loss_value
                self.epoch_loss_count += 1
                for key, value in outputs.items():
                    if isinstance(value, torch.Tensor) and value.numel() == 1:
                        v = value.detach().float().reshape(())
                        sums[key] = sums[key] + v if key in sums else v
                count += 1
            if not last_in_window:
                continue

            lr = self.optimizer.param_groups[0]["lr"]  # the LR this step uses (logged below)
            grad_norm = self._optimizer_step(window_bad)
            window_bad = False
            self.step += 1
            now = time.perf_counter()
            step_time, tick = now - tick, now
            throughput = samples_per_step / max(step_time, 1e-9)
            # The bar's own ETA covers the epoch; this one covers the whole run.
            step_time_avg = step_time if step_time_avg is None else 0.9 * step_time_avg + 0.1 * step_time
            self.log.advance(loss_value, throughput, (self.total_steps - self.step) * step_time_avg)

            if self.step % c.log_every == 0 or self.step == self.total_steps:
                elapsed = now - last_log_time
                rate = samples_per_step * (self.step - last_log_step) / max(elapsed, 1e-9)
                self._log_scalars(sums, count, lr, grad_norm, rate)
                sums, count = {}, 0
                last_log_step, last_log_time = self.step, now
            if c.vis_every and self.step % c.vis_every == 0:
                self._visualize(batch, outputs)

            end_of_epoch = self.batches_done >= batches_in_epoch
            finished = self.step >= self.total_steps
            if end_of_epoch:
                self._end_epoch()
                self.interrupted = stop
                break
            if finished or stop or (c.ckpt_every_steps and self.step % c.ckpt_every_steps == 0):
                self.save_checkpoint()
            if stop:
                self.interrupted = True
                self.log.info(f"stopped by SIGTERM after step {self.step}; the checkpoint is saved, "
                              "run the same command again to continue")
            if finished or stop:
                break
        self.log.end_epoch()

    def _end_epoch(self) -> None:
        totals = torch.tensor([self.epoch_loss_sum, float(self.epoch_loss_count)], dtype=torch.float64,
                              device=self.info.device)
        if self.info.distributed:
            torch.distributed.all_reduce(totals)
        mean_loss = (totals[0] / totals[1].clamp(min=1)).item()
        is_best = mean_loss < self.best_loss
        if is_best:
            self.best_loss = mean_loss
        self.log.info(f"epoch {self.epoch} done: mean loss {mean_loss:.6g}"
                      + (f", {self.skipped_steps} non-finite steps skipped so far" if self.skipped_steps else ""))
        self.epoch += 1
        self.batches_done = 0
        self.epoch_loss_sum, self.epoch_loss_count = 0.0, 0
        self.log.end_epoch()
        self.save_checkpoint(is_best=is_best)

    def _nonfinite(self, what: str) -> None:
        where = (f"at optimizer step {self.step + 1} (epoch {self.epoch}, batch {self.batches_done} "
                 f"of the epoch)")
        if self.cfg.nonfinite == "stop":
            raise NonFiniteLossError(f"{what} {where}; stopping. Set train.nonfinite=skip to skip such "
                                     "steps instead, or lower the learning rate / use bf16.")
        self.log.info(f"warning: {what} {where}; skipping this optimizer step")

    def _optimizer_step(self, window_bad: bool) -> Optional[float]:
        c = self.cfg
        grad_norm = None
        if not window_bad:
            self.scaler.unscale_(self.optimizer)
            params = [p for p in self.model.parameters() if p.grad is not None]
            norm = torch.nn.utils.get_total_norm([p.grad for p in params])
            grad_norm = float(norm)
            # With fp16 the scaler itself skips steps with inf/NaN gradients and lowers its scale.
            if c.amp != "fp16" and not math.isfinite(grad_norm):
                window_bad = True
                self._nonfinite(f"non-finite gradient norm ({grad_norm})")
            elif c.clip_grad is not None:
                torch.nn.utils.clip_grads_with_norm_(params, c.clip_grad, norm)
        if window_bad:
            # (With fp16 a window is only ever bad before unscale_, so the scaler needs no update.)
            self.skipped_steps += 1
        else:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return grad_norm

    def _log_scalars(self, sums: dict, count: int, lr: float, grad_norm: Optional[float],
                     rate: float) -> None:
        keys = sorted(sums)
        if keys:
            stacked = torch.stack([sums[k] for k in keys]) / max(count, 1)
            means = D.all_reduce_mean(stacked, self.info).tolist()
        else:
            means = []
        values = dict(zip(keys, means))
        values["lr"] = lr
        if grad_norm is not None:
            values["grad_norm"] = grad_norm
        values["samples_per_s"] = rate
        values["memory_mb"] = memory_mb(self.info.device)
        if self.skipped_steps:
            values["skipped_steps"] = self.skipped_steps
        self.log.scalars(self.step, self.epoch, values)

    def _visualize(self, batch: Any, outputs: dict) -> None:
        visualize = getattr(self.model, "visualize", None)
        if visualize is None or not self.info.is_main:
            return
        with torch.no_grad():
            self.log.images(self.step, visualize(batch, outputs))

    def _save_final_weights(self) -> None:
        if self.info.is_main:
            atomic_torch_save({"format": "pointmae-weights", "format_version": 1,
                               "model": self.model.state_dict(), "config": self.config_dict,
                               "step": self.step}, self.work_dir / "final_model.pt")
        D.barrier(self.info)
