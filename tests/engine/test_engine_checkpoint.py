"""Atomic checkpoint writes, corruption detection with the file named, keep-last-N/best, fallback."""
import os
import random

import numpy as np
import pytest
import torch

from pointmae.engine import checkpoint as C
from pointmae.engine.checkpoint import CheckpointError, CheckpointManager, load_checkpoint


def some_state(seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"model": {"w": torch.randn(64, 32, generator=g), "b": torch.zeros(32)},
            "epoch": seed, "step": seed * 10, "config": {"train": {"epochs": 3}}}


def test_round_trip_is_a_plain_weights_only_torch_file(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=2)
    path = manager.save(some_state(1), step=10)
    loaded = load_checkpoint(path)
    assert loaded["format_version"] == C.FORMAT_VERSION and loaded["step"] == 10
    assert torch.equal(loaded["model"]["w"], some_state(1)["model"]["w"])
    raw = torch.load(path, weights_only=True)  # usable without pointmae, no pickled code
    assert "digest" in raw


def test_a_crash_while_writing_leaves_the_previous_file_intact(tmp_path, monkeypatch):
    manager = CheckpointManager(tmp_path, keep_last=3)
    good = manager.save(some_state(1), step=5)
    before = good.read_bytes()

    def dying_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt("simulated crash in the middle of the write")

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        C.atomic_torch_save(some_state(2), good)  # overwrite the same name
    assert good.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [good.name]  # no temporary left behind
    load_checkpoint(good)


def test_truncated_checkpoint_is_a_clear_error_naming_the_file(tmp_path):
    path = CheckpointManager(tmp_path, keep_last=1).save(some_state(1), step=1)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=rf"{path}.*truncated or corrupted"):
        load_checkpoint(path)


def test_flipped_bytes_inside_a_tensor_are_caught_by_the_digest(tmp_path):
    path = CheckpointManager(tmp_path, keep_last=1).save(some_state(1), step=1)
    data = bytearray(path.read_bytes())
    w = some_state(1)["model"]["w"].numpy().tobytes()
    offset = bytes(data).find(w[:64])  # the tensor's bytes are stored uncompressed in the zip
    assert offset > 0
    data[offset + 100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=rf"{path}.*does not match the digest"):
        load_checkpoint(path)


def test_not_a_checkpoint_and_wrong_version(tmp_path):
    other = tmp_path / "other.pt"
    torch.save({"w": torch.ones(2)}, other)
    with pytest.raises(CheckpointError, match="not a pointmae training checkpoint"):
        load_checkpoint(other)
    future = tmp_path / "future.pt"
    state = {"format": C.FORMAT, "format_version": 99}
    torch.save(state, future)
    with pytest.raises(CheckpointError, match="format version 99"):
        load_checkpoint(future)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_keeps_the_last_n_and_the_best(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=2)
    manager.save(some_state(1), step=1, is_best=True)
    for step in (2, 3, 4):
        manager.save(some_state(step), step=step)
    assert [p.name for p in manager.step_checkpoints()] == ["ckpt_step00000004.pt", "ckpt_step00000003.pt"]
    assert load_checkpoint(manager.best_path)["step"] == 10  # the step-1 file itself was pruned


def test_latest_falls_back_over_broken_checkpoints(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=3)
    for step in (1, 2, 3):
        manager.save(some_state(step), step=step)
    newest = manager.step_path(3)
    newest.write_bytes(newest.read_bytes()[:100])
    with pytest.warns(UserWarning, match=rf"{newest}.*falling back"):
        path, state = manager.load_latest()
    assert path == manager.step_path(2) and state["epoch"] == 2
    assert newest.exists()  # the broken file is reported, not deleted

    for step in (1, 2):
        manager.step_path(step).write_bytes(b"garbage")
    with pytest.warns(UserWarning), pytest.raises(CheckpointError, match="none of the checkpoints"):
        manager.load_latest()
    assert CheckpointManager(tmp_path / "empty", keep_last=1).load_latest() is None


def test_rng_states_round_trip_through_a_checkpoint(tmp_path):
    device = torch.device("cpu")
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    manager = CheckpointManager(tmp_path, keep_last=1)
    path = manager.save({"rng": [C.capture_rng_state(device)]}, step=1)
    expected = (random.random(), np.random.rand(), torch.rand(1).item(), np.random.randn())
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    C.restore_rng_state(load_checkpoint(path)["rng"][0], device)
    assert (random.random(), np.random.rand(), torch.rand(1).item(), np.random.randn()) == expected


def test_stale_temporaries_are_removed(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=1)
    (tmp_path / f".ckpt_step00000001.pt.tmp.{os.getpid()}").write_bytes(b"x")
    manager.remove_stale_temporaries()
    assert list(tmp_path.iterdir()) == []
