"""`tools/pretrain.py CONFIG [--work-dir DIR] [--resume | --resume-from CKPT] [key=value ...]`: config -> trained model.

The same command runs single-process or under torchrun (one process per GPU, any number of nodes);
see docs/training.md.
"""
from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Optional

from pointmae.config import Config, ConfigError, config_to_dict, dump_config, load_config
from pointmae.engine import distributed as D
from pointmae.engine.builders import build_dataset, build_model
from pointmae.engine.checkpoint import CheckpointError
from pointmae.engine.trainer import NonFiniteLossError, Trainer, seed_everything, set_deterministic


def build_parser(prog: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Overrides use the config's key paths, typed like YAML scalars:\n"
                                       "  train.epochs=5 optim.lr=3e-4 train.amp=bf16 optim.betas=[0.9,0.95]")
    p.add_argument("config", help="YAML config file (configs/<method>/<dataset>.yaml)")
    p.add_argument("--work-dir", help="run directory (default: work_dir from the config)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run from the newest good checkpoint in the work dir (an error if "
                        "there is none; with train.auto_resume=true this also happens by itself)")
    p.add_argument("--resume-from", metavar="CKPT", help="continue from this checkpoint file")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
    return p


def resolve_config(args: argparse.Namespace) -> Config:
    overrides = list(args.overrides)
    if args.work_dir:
        overrides.append(f"work_dir={args.work_dir}")
    return load_config(args.config, overrides)


def start_run(cfg: Config) -> tuple[D.DistInfo, Path]:
    """What every training entry point does first: determinism flags, the process group, the run
    directory with the resolved config (written once, by the main process), the build seed."""
    set_deterministic(cfg.train.deterministic)  # before any CUDA work (cuBLAS reads its env once)
    info = D.init_distributed(cfg.train.device)
    work_dir = Path(cfg.work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)  # every rank: some write their own files there
    if info.is_main:
        dump_config(cfg, work_dir / "config.yaml")
    # Same seed on every rank while building, so every rank starts from the same weights.
    seed_everything(cfg.train.seed)
    return info, work_dir


def resume_trainer(trainer: Trainer, resume: Optional[str], auto_resume: bool) -> None:
    """resume: a checkpoint file, "auto" (the newest in the run directory; an error if there is none)
    or None (the newest if `auto_resume`). Closes the trainer's log when resuming fails."""
    try:
        if resume not in (None, "auto"):
            trainer.resume(Path(resume))
        elif resume == "auto" or auto_resume:
            found = trainer.resume()
            if resume == "auto" and not found:
                raise CheckpointError(f"--resume: no checkpoint in {trainer.checkpoints.directory}")
    except BaseException:
        trainer.log.close()  # fit() closes it otherwise
        raise


def train(cfg: Config, resume: Optional[str] = None) -> Trainer:
    """Builds everything from the config, resumes if asked (or found), trains; returns the trainer."""
    info, work_dir = start_run(cfg)
    model = build_model(cfg.model)
    dataset = build_dataset(cfg.data)
    trainer = Trainer(model, dataset, cfg.train, cfg.optim, cfg.sched, work_dir,
                      config_dict=config_to_dict(cfg), info=info)
    resume_trainer(trainer, resume, cfg.train.auto_resume)
    trainer.fit()
    return trainer


def main(argv: Optional[list[str]] = None, prog: str = "pretrain.py", description: str = __doc__) -> int:
    args = build_parser(prog, description).parse_intermixed_args(argv)
    try:
        cfg = resolve_config(args)
    except ConfigError as e:
        print(f"{prog}: config error: {e}", file=sys.stderr)
        return 2
    try:
        trainer = train(cfg, args.resume_from or ("auto" if args.resume else None))
        if trainer.interrupted:
            print(f"{prog}: stopped by SIGTERM at step {trainer.step}, checkpoint saved; run the same "
                  "command again to continue", file=sys.stderr)
            return 128 + signal.SIGTERM
    except (CheckpointError, NonFiniteLossError) as e:
        print(f"{prog}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    finally:
        D.shutdown_distributed()
    return 0
