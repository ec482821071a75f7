"""Two CPU processes under torchrun (gloo) agree with each other and with one process.

The 2-process run uses batch_size=2 and grad_accum=2 per rank (DDP's no_sync on the first
micro-batch, the all-reduce on the second), the single process batch_size=8: the same 8 samples
make each optimizer step, because the sampler shards one shared permutation across ranks.
"""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import engine_tiny
from pointmae.config import load_config
from pointmae.engine.run import train

HERE = Path(__file__).resolve().parent
TRANSIENT_LAUNCH_ERROR = re.compile(r"EADDRINUSE|[Aa]ddress already in use|DistNetworkError|RendezvousConnectionError|"
                                    r"RendezvousTimeoutError|Connection (reset|refused)")
STEPS = 4


def losses(work_dir: Path) -> list[float]:
    lines = (work_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["loss"] for line in lines]


def test_two_gloo_ranks_match_each_other_and_a_single_process(tmp_path):
    config = engine_tiny.write_config(tmp_path / "cfg.yaml", train={"epochs": 1, "max_steps": STEPS})
    ddp_dir = tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": str(HERE.parents[1]), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(HERE / "tiny_pretrain.py"), config, "--work-dir", str(ddp_dir),
           "train.batch_size=2", "train.grad_accum=2"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    single = train(load_config(config, [f"work_dir={tmp_path / 'single'}", "train.batch_size=8"]))
    output, _ = proc.communicate(timeout=240)
    if proc.returncode != 0 and TRANSIENT_LAUNCH_ERROR.search(output):
        # torchrun's standalone rendezvous picks a free local port and can lose it to a race with
        # another process; that is the launcher's flake, not the engine's: launch once more, fresh.
        print("torchrun launch failed transiently, retrying once:\n" + output[-2000:])
        ddp_dir = tmp_path / "ddp_retry"
        cmd[cmd.index("--work-dir") + 1] = str(ddp_dir)
        proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=240)
        output = proc.stdout
    assert proc.returncode == 0, output[-4000:]

    rank0 = torch.load(ddp_dir / "params_rank0.pt", weights_only=True)
    rank1 = torch.load(ddp_dir / "params_rank1.pt", weights_only=True)
    for name, value in rank0.items():
        assert torch.equal(value, rank1[name]), f"{name} differs between the ranks"
    assert "training on cpu x 2 process(es)" in (ddp_dir / "train.log").read_text()

    assert single.step == STEPS
    ddp_losses = losses(ddp_dir)
    assert len(ddp_losses) == STEPS
    assert ddp_losses == pytest.approx(losses(tmp_path / "single"), rel=1e-5)
    for name, value in single.model.state_dict().items():
        torch.testing.assert_close(rank0[name], value, rtol=1e-5, atol=1e-6, msg=name)
