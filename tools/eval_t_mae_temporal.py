"""Does a pre-trained T-MAE use the previous sweep? Reconstruction loss of the masked current voxels on
held-out pairs, with the same masks, when the previous sweep is (a) given and ego-motion aligned,
(b) given but NOT aligned (left in its own sensor frame), (c) left out (every window attends to its null
key only). If the model learned temporal dependency, (a) < (c); (b) shows what alignment is worth.

    python tools/eval_t_mae_temporal.py RUN_DIR/final_model.pt [--pairs 12] [key=value ...]

The overrides apply to the data section of the checkpoint's config (e.g. data.seed=1 for another world).
"""
import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pointmae.config import config_from_dict  # noqa: E402
from pointmae.data.lidar_pretrain import select_channels  # noqa: E402
from pointmae.engine.builders import build_dataset, build_model  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("weights", help="final_model.pt or a training checkpoint of a t_mae run")
    p.add_argument("--pairs", type=int, default=12, help="held-out pairs to average over")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("overrides", nargs="*", help="data.* overrides, e.g. data.seed=1")
    args = p.parse_intermixed_args(argv)
    torch.set_num_threads(args.threads)
    state = torch.load(args.weights, map_location="cpu", weights_only=True)
    cfg = config_from_dict(state["config"], source=args.weights, overrides=args.overrides)
    model = build_model(cfg.model)
    model.load_state_dict(state["model"])
    model.eval()
    dataset = build_dataset(cfg.data)
    picks = np.linspace(0, len(dataset) - 1, min(args.pairs, len(dataset))).round().astype(int)
    losses = {"aligned previous": [], "unaligned previous": [], "no previous": []}
    with torch.no_grad():
        for n, i in enumerate(picks):
            batch = dataset.collate_fn([dataset[int(i)]])
            # The same previous sweep left in its own sensor frame (channels as the data config's).
            raw = dataset.reader.previous(dataset.frame_indices[int(i) % len(dataset.frame_indices)],
                                          dataset.frame_gap)
            if raw is None:
                continue
            raw = select_channels(raw, dataset.channels, dataset.channel_scales, dataset.channel_tanh)
            unaligned = dict(batch, prev_points=torch.as_tensor(raw.to_numpy().points),
                             prev_offsets=torch.tensor([0, raw.num_points]), has_prev=torch.tensor([True]))
            empty = dict(batch, prev_points=batch["prev_points"][:0], prev_offsets=torch.zeros(2, dtype=torch.int64))
            for name, b in (("aligned previous", batch), ("unaligned previous", unaligned), ("no previous", empty)):
                losses[name].append(model(b, torch.Generator().manual_seed(1000 + n))["loss"].item())
    print(f"{len(picks)} held-out pairs ({' '.join(args.overrides) or 'training data config'}), same masks:")
    print("| previous sweep | masked-voxel Chamfer-L2 (voxel units) |\n|---|---|")
    for name, values in losses.items():
        print(f"| {name} | {np.mean(values):.4f} +- {np.std(values) / np.sqrt(len(values)):.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
