"""Throughput of the LiDAR masked autoencoders (Voxel-MAE, R-MAE, T-MAE):

    python tools/bench_lidar_mae.py [--device cpu|cuda] [--threads N] [--only CONFIG,...] [--out F]

For each (method, config) it builds the model and data of the config, pre-loads a few batches (data
loading is not timed: a data loader worker does it in parallel with training), and times training
steps (forward, backward, AdamW step), and separately, on the same batches, the two stages before the
network: voxelization + voxel features (`voxelize_points` + `vfe`, both sweeps for T-MAE) and masking
(+ empty-voxel sampling for Voxel-MAE's fake voxels and R-MAE's occupancy negatives); the network's
share is the step time minus those two. Writes a markdown table (frames/s and the shares) into --out,
replacing the block this tool wrote there before for the same device (the rest of the file is kept).
"""
import argparse
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from pointmae.config import load_config  # noqa: E402
from pointmae.engine.builders import build_dataset, build_model, build_optimizer  # noqa: E402
from pointmae.engine.trainer import move_to_device  # noqa: E402
from pointmae.models.lidar_voxels import sample_empty_voxels, voxelize_points  # noqa: E402

SHARED = os.environ.get("POINTMAE_SHARED_DATA", os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "..", "..", "shared", "data"))
AV2_LOG = "sequences/av2_7fab2350-7eaf-3b7e-a39d-6937a4c1bede"

CASES = [
    ("Voxel-MAE", "configs/voxel_mae/synthetic.yaml", []),
    ("R-MAE", "configs/r_mae/synthetic.yaml", []),
    ("T-MAE", "configs/t_mae/synthetic.yaml", []),
    ("Voxel-MAE", "configs/voxel_mae/kitti.yaml", ["data.root={shared}/kitti"]),
    ("R-MAE", "configs/r_mae/kitti.yaml", ["data.root={shared}/kitti"]),
    ("T-MAE", "configs/t_mae/av2.yaml", ["data.root={shared}/" + AV2_LOG]),
]


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def stage_times(model, batch, generator, device):
    """Seconds of (voxelization + voxel features, masking + empty-voxel sampling) for one batch, the
    calls the models' forward makes (every LiDAR MAE has `grid`, `vfe` and `masker`)."""
    sweeps = [("points", "offsets")] + ([("prev_points", "prev_offsets")] if hasattr(model, "cross_attention") else [])
    caps = (getattr(model, "max_points_per_voxel", None), getattr(model, "max_voxels", None))
    _sync(device)
    t0 = time.perf_counter()
    for points_key, offsets_key in sweeps:
        vox = voxelize_points(batch[points_key], batch[offsets_key], model.grid, *caps)
        model.vfe(batch[points_key], vox.point_to_voxel, vox.coords)
        if points_key == "points":
            coords = vox.coords
    _sync(device)
    t1 = time.perf_counter()
    model.masker(coords, model.grid.centres(coords), batch["origins"], generator)
    b = batch["offsets"].numel() - 1
    if hasattr(model, "fake_voxel_ratio"):                       # Voxel-MAE: fake (empty) voxels
        counts = torch.bincount(coords[:, 0].long(), minlength=b)
        sample_empty_voxels(coords, b, model.grid.grid_size,
                            torch.floor(counts.double() * model.fake_voxel_ratio + 0.5).long(), generator, clamp=True)
    elif hasattr(model, "occupancy_cells"):                      # R-MAE: empty occupancy cells
        occupied = model.occupancy_cells(coords)
        n = torch.bincount(occupied[:, 0], minlength=b)
        sample_empty_voxels(occupied, b, model.occupancy_grid, n, generator, clamp=True)
    _sync(device)
    return t1 - t0, time.perf_counter() - t1


def bench(name, path, overrides, device, batch_size, steps, warmup):
    cfg = load_config(path, [o.format(shared=SHARED) for o in overrides] + [f"train.batch_size={batch_size}"])
    torch.manual_seed(0)
    model = build_model(cfg.model).to(device)
    dataset = build_dataset(cfg.data)
    optimizer = build_optimizer(model, cfg.optim)
    batches = [move_to_device(dataset.collate_fn([dataset[(i * batch_size + j) % len(dataset)]
                                                  for j in range(batch_size)]), device)
               for i in range(steps + warmup)]
    generator = torch.Generator().manual_seed(0)
    step_times, vox_times, mask_times = [], [], []
    for i, batch in enumerate(batches):
        _sync(device)
        t0 = time.perf_counter()
        out = model(batch, generator)
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        optimizer.step()
        _sync(device)
        if i >= warmup:
            step_times.append(time.perf_counter() - t0)
            v, m = stage_times(model, batch, generator, device)
            vox_times.append(v)
            mask_times.append(m)
    step = sum(step_times) / len(step_times)
    vox = sum(vox_times) / len(vox_times)
    mask = sum(mask_times) / len(mask_times)
    points = sum(int(b["points"].shape[0]) for b in batches) / len(batches) / batch_size
    return {"method": name, "config": path, "frames_per_s": batch_size / step, "step_s": step,
            "vox_share": vox / step, "mask_share": mask / step, "net_share": max(step - vox - mask, 0.0) / step,
            "points": points, "params": sum(p.numel() for p in model.parameters())}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--out", default="benchmarks/lidar_mae.md")
    p.add_argument("--only", default="", help="comma-separated config paths to run (default: all)")
    p.add_argument("--note", default="", help="a line written above the table (e.g. what the machine was)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = []
    for name, path, overrides in CASES:
        if args.only and path not in args.only.split(","):
            continue
        r = bench(name, path, overrides, device, args.batch_size, args.steps, args.warmup)
        rows.append(r)
        print(f"{r['method']:10s} {r['config']:36s} {r['frames_per_s']:.2f} frames/s  vox {r['vox_share']:.1%}  "
              f"mask {r['mask_share']:.1%}  net {r['net_share']:.1%}", flush=True)
    lines = [f"| method | config | points/frame | parameters | frames/s (train step) | s/step | "
             f"voxelization + features | masking + empty-voxel sampling | network (fwd + bwd + AdamW) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | `{r['config']}` | {r['points']:.0f} | {r['params'] / 1e6:.2f} M | "
                     f"{r['frames_per_s']:.2f} | {r['step_s']:.2f} | {r['vox_share']:.1%} | {r['mask_share']:.1%} | "
                     f"{r['net_share']:.1%} |")
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    header = (f"Device: {args.device} ({device_name}), {args.threads} thread(s), torch {torch.__version__}, "
              f"batch {args.batch_size}, mean of {args.steps} steps after {args.warmup} warm-up.\n"
              f"Command: `python tools/bench_lidar_mae.py --device {args.device} --threads {args.threads} "
              f"--batch-size {args.batch_size} --steps {args.steps}`\n")
    table = header + (args.note + "\n" if args.note else "") + "\n" + "\n".join(lines) + "\n"
    print(table)
    if args.out:
        write_block(Path(args.out), args.device, table)


def write_block(path: Path, device: str, table: str) -> None:
    """Put `table` between this tool's markers for `device` in `path`, replacing an earlier block."""
    start, end = f"<!-- bench_lidar_mae.py {device}: start -->", f"<!-- bench_lidar_mae.py {device}: end -->"
    block = f"{start}\n{table}{end}\n"
    text = path.read_text() if path.exists() else ""
    if start in text and end in text:
        text = text[:text.index(start)] + block + text[text.index(end) + len(end) + 1:]
    else:
        text = text + ("\n" if text else "") + block
    path.write_text(text)


if __name__ == "__main__":
    main()
