"""T-MAE pre-training throughput on the CPU: frames/s of a full training step (forward + backward +
AdamW) on batches of synthetic sweep pairs, and the share of the step spent in each stage:

- data: generating the pair (ray casting) and aligning + collating it (reported apart: a data loader
  worker does it in parallel with training);
- prep: voxelization of both sweeps (pointmae.ops.voxelize_dynamic + mean VFE), temporal masking,
  gathering the masked voxels' target points;
- network: Siamese encoder + windowed cross-attention + decoder + Chamfer loss, backward, optimizer step.

    python tools/bench_t_mae.py [--config configs/t_mae/synthetic.yaml] [--steps 5] [--threads N] [key=value ...]

Prints a markdown table (for benchmarks/lidar_mae.md).
"""
import argparse
import os
import platform
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pointmae.config import load_config  # noqa: E402
from pointmae.data.temporal_pairs import collate_temporal_pairs  # noqa: E402
from pointmae.engine.builders import build_dataset, build_model  # noqa: E402
from pointmae.models.targets import voxel_centres, voxel_point_targets  # noqa: E402


def timed_step(model, optimizer, batch, generator, clock=time.perf_counter):
    """One training step, stage by stage (the same calls TemporalMAE.forward makes). Returns seconds
    (prep, network) of `clock` and the number of current / previous voxels."""
    t0 = clock()
    b = batch["offsets"].numel() - 1
    feats, coords, p2v = model.voxelize(batch["points"], batch["offsets"])
    prev_feats, prev_coords, _ = model.voxelize(batch["prev_points"], batch["prev_offsets"])
    keep = model.make_mask(coords, prev_coords, torch.zeros(b, 3), generator)
    visible, masked = torch.nonzero(keep).squeeze(1), torch.nonzero(~keep).squeeze(1)
    targets, offsets = voxel_point_targets(batch["points"][:, :3], p2v, masked,
                                           voxel_centres(coords, model.voxel_size, model.point_range), model.voxel_size)
    t1 = clock()
    latent, prev_latent = model.forward_encoder(feats[visible], coords[visible], prev_feats, prev_coords, b)
    fused = model.forward_cross_attention(latent, coords[visible], coords[masked], prev_latent, prev_coords)
    loss = model.forward_loss(model.forward_decoder(fused, coords[visible], coords[masked]), targets, offsets)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    t2 = clock()
    return t1 - t0, t2 - t1, len(coords), len(prev_coords)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/t_mae/synthetic.yaml")
    p.add_argument("--steps", type=int, default=5, help="timed steps (after one warm-up step)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="wall: elapsed time; cpu: this process's CPU time (robust to other load on a shared "
                        "machine; equals wall time on an idle machine with --threads 1)")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config, args.overrides)
    torch.manual_seed(0)
    model = build_model(cfg.model)
    dataset = build_dataset(cfg.data)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    bs = cfg.train.batch_size
    data_s, prep_s, net_s, voxels = [], [], [], []
    for step in range(args.steps + 1):
        t0 = clock()
        batch = collate_temporal_pairs([dataset[(step * bs + i) % len(dataset)] for i in range(bs)])
        t1 = clock()
        prep, net, v, pv = timed_step(model, optimizer, batch, generator, clock)
        if step:  # the first step warms up allocators and caches
            data_s.append(t1 - t0), prep_s.append(prep), net_s.append(net), voxels.append((v, pv))
    prep, net, data = np.mean(prep_s), np.mean(net_s), np.mean(data_s)
    v, pv = np.mean(voxels, axis=0)
    params = sum(p.numel() for p in model.parameters())
    print(f"| config | batch | params | voxels/sample (current, previous) | frames/s (step) | prep | network | "
          f"data (not in step) |\n|---|---|---|---|---|---|---|---|")
    print(f"| {args.config} {' '.join(args.overrides)} | {bs} | {params / 1e6:.2f} M | {v / bs:.0f}, {pv / bs:.0f} | "
          f"{bs / (prep + net):.2f} | {prep / (prep + net):.0%} ({prep * 1e3 / bs:.0f} ms/frame) | "
          f"{net / (prep + net):.0%} ({net * 1e3 / bs:.0f} ms/frame) | {data * 1e3 / bs:.0f} ms/frame |")
    print(f"\n{platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} thread(s), "
          f"{args.steps} timed steps after 1 warm-up, {args.clock} clock")
    return 0


if __name__ == "__main__":
    sys.exit(main())
