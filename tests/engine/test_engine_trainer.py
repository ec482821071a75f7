"""The training loop in-process: outputs of a run, non-finite losses, gradient accumulation, resume."""
import json

import pytest
import torch

import engine_tiny
from pointmae.config import load_config
from pointmae.engine.checkpoint import CheckpointError
from pointmae.engine.run import main, train
from pointmae.engine.trainer import NonFiniteLossError


def tiny_cfg(tmp_path, **sections):
    return load_config(engine_tiny.write_config(tmp_path / "cfg.yaml", **sections))


def read_metrics(work_dir):
    return [json.loads(line) for line in (work_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_run_writes_its_config_logs_events_pictures_checkpoints_and_weights(tmp_path):
    cfg = tiny_cfg(tmp_path, model={"dropout": 0.1}, data={"size": 32, "noise": 0.05},
                   train={"epochs": 2, "ckpt_every_steps": 3, "keep_last": 2, "vis_every": 4,
                          "tensorboard": True, "progress_bar": True, "clip_grad": 0.5})
    trainer = train(cfg)
    run = tmp_path / "run"
    assert load_config(run / "config.yaml") == cfg
    metrics = read_metrics(run)
    assert [m["step"] for m in metrics] == list(range(1, 17))
    assert {"loss", "recon", "reg", "lr", "grad_norm", "samples_per_s", "memory_mb"} <= set(metrics[0])
    assert metrics[-1]["lr"] == pytest.approx(cfg.sched.min_lr, rel=0.2)  # cosine ends near min_lr
    assert "epoch 1 done" in (run / "train.log").read_text()
    assert list((run / "tb").glob("events.out.tfevents.*"))
    assert len(list((run / "vis").glob("*.png"))) == 4
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["best.pt", "ckpt_step00000015.pt", "ckpt_step00000016.pt"]
    final = torch.load(run / "final_model.pt", weights_only=True)
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(final["model"][k], v)


def test_nonfinite_loss_stops_and_names_the_step(tmp_path):
    cfg = tiny_cfg(tmp_path, model={"nan_at_forwards": [6]}, train={"grad_accum": 2, "epochs": 1})
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss .* at optimizer step 3 \(epoch 0, batch 5"):
        train(cfg)


def test_nonfinite_loss_skip_mode_skips_that_step_only(tmp_path):
    cfg = tiny_cfg(tmp_path, model={"nan_at_forwards": [3]}, train={"nonfinite": "skip", "epochs": 1})
    trainer = train(cfg)
    assert trainer.skipped_steps == 1 and trainer.step == 16
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    metrics = read_metrics(tmp_path / "run")
    assert "loss" not in metrics[2] and "grad_norm" not in metrics[2]  # the skipped step
    assert metrics[-1]["skipped_steps"] == 1
    assert all(m["loss"] == m["loss"] for m in metrics if "loss" in m)  # no NaN reached the logs
    assert "skipping this optimizer step" in (tmp_path / "run" / "train.log").read_text()


def test_gradient_accumulation_matches_the_large_batch(tmp_path):
    common = {"epochs": 1, "max_steps": 5, "clip_grad": 1.0}
    big = train(tiny_cfg(tmp_path / "a", train={**common, "batch_size": 8}))
    accumulated = train(tiny_cfg(tmp_path / "b", train={**common, "batch_size": 2, "grad_accum": 4}))
    assert big.step == accumulated.step == 5
    for (name, a), b in zip(big.model.state_dict().items(), accumulated.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    losses_big = [m["loss"] for m in read_metrics(tmp_path / "a" / "run")]
    losses_acc = [m["loss"] for m in read_metrics(tmp_path / "b" / "run")]
    assert losses_big == pytest.approx(losses_acc, rel=1e-5)


def test_auto_resume_continues_after_the_last_good_checkpoint(tmp_path):
    first = train(tiny_cfg(tmp_path, train={"epochs": 1, "ckpt_every_steps": 4}))
    ckpts = first.checkpoints
    newest = ckpts.step_path(16)
    newest.write_bytes(newest.read_bytes()[:-50])  # truncated: the previous one (step 12) is used
    cfg = tiny_cfg(tmp_path, train={"epochs": 2, "ckpt_every_steps": 4})
    with pytest.warns(UserWarning, match="falling back"):
        second = train(cfg)
    assert second.step == 32
    assert read_metrics(tmp_path / "run")[16]["step"] == 13  # restarted after step 12


def test_resume_refuses_a_different_batch_layout(tmp_path):
    train(tiny_cfg(tmp_path, train={"epochs": 1, "max_steps": 2}))
    with pytest.raises(CheckpointError, match="batch_size=4, grad_accum=1"):
        train(tiny_cfg(tmp_path, train={"epochs": 1, "batch_size": 2}))


def test_cli_reports_config_errors_and_missing_checkpoints(tmp_path, capsys):
    path = engine_tiny.write_config(tmp_path / "cfg.yaml")
    assert main([path, "train.epoch=3"]) == 2
    assert "train.epoch" in capsys.readouterr().err
    assert main([path, "--work-dir", str(tmp_path / "fresh"), "--resume"]) == 1
    assert "no checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0 and "--work-dir" in capsys.readouterr().out


def test_resume_from_a_broken_file_names_it(tmp_path, capsys):
    path = engine_tiny.write_config(tmp_path / "cfg.yaml", train={"epochs": 1, "max_steps": 2})
    assert main([path]) == 0
    ckpt = tmp_path / "run" / "checkpoints" / "ckpt_step00000002.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    assert main([path, "--resume-from", str(ckpt)]) == 1
    assert f"checkpoint {ckpt} is truncated or corrupted" in capsys.readouterr().err


def test_sigterm_checkpoints_the_current_step_and_the_rerun_continues_exactly(tmp_path, capsys):
    sections = dict(model={"dropout": 0.2}, data={"noise": 0.05}, train={"epochs": 2, "ckpt_every_steps": 8})
    path = engine_tiny.write_config(tmp_path / "cfg.yaml", **sections)
    assert main([path, "model.term_at_forward=11"]) == 128 + 15  # 128 + SIGTERM, like a shell
    assert "stopped by SIGTERM at step 11" in capsys.readouterr().err
    run = tmp_path / "run"
    assert (run / "checkpoints" / "ckpt_step00000011.pt").exists() and not (run / "final_model.pt").exists()
    assert main([path]) == 0  # auto-resume
    reference = train(load_config(path, [f"work_dir={tmp_path / 'reference'}"])).model.state_dict()
    final = torch.load(run / "final_model.pt", weights_only=True)["model"]
    assert all(torch.equal(final[k], v) for k, v in reference.items())
