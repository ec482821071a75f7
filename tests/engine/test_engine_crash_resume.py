"""A CPU run killed with SIGKILL in the middle of an epoch resumes to bit-identical final weights.

The killed run goes through the real command line in a subprocess and dies without any chance to
clean up. Before resuming, its newest checkpoint is also truncated (as if the machine had died
while copying it elsewhere), so auto-resume has to fall back to the previous one, still mid-epoch.
The tiny model uses dropout and the dataset draws noise from the global RNG, so every RNG state and
the data-loader position must be restored for the weights to match bit for bit.
"""
import os
import signal
import subprocess
import sys
from pathlib import Path

import torch

import engine_tiny
from pointmae.config import load_config
from pointmae.engine.run import train

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "tiny_pretrain.py"

# 64 samples / batch 4 = 16 steps per epoch, 2 epochs. Checkpoints every 3 steps (kept: the last 3).
TRAIN = {"epochs": 2, "ckpt_every_steps": 3, "keep_last": 3, "log_every": 4}
KILL_AT_FORWARD = 24  # in step 24 (epoch 1, batch 7): newest checkpoint step 21, previous step 18


def start_cli(config: str, work_dir: Path, *overrides: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(HERE.parents[1]), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(SCRIPT), config, "--work-dir", str(work_dir), *overrides],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> subprocess.CompletedProcess:
    out, err = proc.communicate(timeout=240)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_sigkill_mid_epoch_then_auto_resume_is_bit_exact(tmp_path):
    config = engine_tiny.write_config(tmp_path / "cfg.yaml", model={"dropout": 0.2},
                                      data={"noise": 0.05}, train=TRAIN)
    crashed_dir = tmp_path / "crashed"
    killed = start_cli(config, crashed_dir, f"model.kill_at_forward={KILL_AT_FORWARD}")

    # Meanwhile the uninterrupted reference, in this process (same code, same single thread).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        reference = train(load_config(config, [f"work_dir={tmp_path / 'reference'}"]))
    finally:
        torch.set_num_threads(threads)

    killed = finish(killed)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    ckpts = crashed_dir / "checkpoints"
    names = sorted(p.name for p in ckpts.glob("ckpt_step*.pt"))
    assert names == ["ckpt_step00000016.pt", "ckpt_step00000018.pt", "ckpt_step00000021.pt"], names
    assert not (crashed_dir / "final_model.pt").exists()
    newest = ckpts / "ckpt_step00000021.pt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 3])

    resumed = finish(start_cli(config, crashed_dir))  # no --resume: auto-resume from the work dir
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "ckpt_step00000021.pt is truncated or corrupted" in resumed.stderr
    assert "resumed from" in resumed.stdout and "step 18, 2 batches into the epoch" in resumed.stdout

    final = torch.load(crashed_dir / "final_model.pt", weights_only=True)["model"]
    expected = reference.model.state_dict()
    assert final.keys() == expected.keys()
    for name, value in expected.items():
        assert torch.equal(final[name], value), f"{name} differs after the resume"
