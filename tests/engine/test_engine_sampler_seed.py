"""The resumable distributed sampler, and `seed` / `deterministic` of a run."""
import torch

import engine_tiny
from pointmae.config import load_config
from pointmae.engine.distributed import DistInfo, ResumableDistributedSampler
from pointmae.engine.run import train


def sampler(rank: int, world: int, n: int = 20, seed: int = 0) -> ResumableDistributedSampler:
    info = DistInfo(rank=rank, local_rank=rank, world_size=world, device=torch.device("cpu"))
    return ResumableDistributedSampler(range(n), info, seed=seed)


def test_ranks_get_disjoint_shards_of_one_permutation_reshuffled_per_epoch():
    shards = [sampler(r, 2) for r in range(2)]
    for s in shards:
        s.set_epoch(0)
    epoch0 = [list(s) for s in shards]
    assert sorted(epoch0[0] + epoch0[1]) == list(range(20))
    for s in shards:
        s.set_epoch(1)
    assert [list(s) for s in shards] != epoch0
    single = sampler(0, 1)
    single.set_epoch(0)
    order = list(single)
    assert order[0::2] == epoch0[0] and order[1::2] == epoch0[1]  # same global batches as 1 process


def test_skip_resumes_inside_an_epoch_and_only_that_epoch():
    s = sampler(1, 2)
    s.set_epoch(3)
    full = list(s)
    s.skip(4)
    assert list(s) == full[4:] and len(s) == len(full) - 4
    s.set_epoch(4)
    assert len(list(s)) == len(full)


def run(tmp_path, name, *overrides):
    config = engine_tiny.write_config(tmp_path / "cfg.yaml", model={"dropout": 0.2}, data={"noise": 0.1},
                                      train={"epochs": 1, "max_steps": 3, "log_every": 3})
    return train(load_config(config, [f"work_dir={tmp_path / name}", *overrides])).model.state_dict()


def test_seed_reproduces_a_run_and_deterministic_mode_runs(tmp_path):
    was = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
           torch.backends.cudnn.benchmark)
    try:
        a = run(tmp_path, "a", "train.seed=5", "train.deterministic=true")
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(was[0])  # global switches: leave other tests unaffected
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = was[1:]
    b = run(tmp_path, "b", "train.seed=5")
    c = run(tmp_path, "c", "train.seed=6")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
