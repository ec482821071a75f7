"""Point-MAE on the embedded procedural shapes, in one run with fixed seeds:

1. pre-trains the model of CONFIG (default configs/point_mae/synthetic_scan.yaml) with the engine;
2. linear-SVM accuracy (ModelNet40 protocol: frozen encoder, max + mean pooled tokens) of the
   pre-trained encoder and of the same encoder with random weights (same seed, no training);
3. CPU pre-training throughput of the paper's default model at batch 32, and the share of a step
   spent in FPS + kNN + Chamfer;
and writes benchmarks/point_mae.md.

    python tools/bench_point_mae.py [--config CONFIG] [--only all|svm|throughput] [--out FILE] [key=value ...]
"""
import argparse
import os
import platform
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pointmae import ops  # noqa: E402
from pointmae.config import load_config  # noqa: E402
from pointmae.data.objects import SyntheticShapes  # noqa: E402
from pointmae.engine.builders import build_all  # noqa: E402
from pointmae.engine.trainer import Trainer  # noqa: E402
from pointmae.eval.classification import extract_features, few_shot_svm, linear_svm_accuracy  # noqa: E402
from pointmae.models.point_mae import point_mae_small  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def svm_datasets(cfg, samples_per_class):
    """Labelled train/test shapes of the pre-training data's kind (class set, partial views, density),
    from seeds the pre-training never saw; generated once and held in memory (both encoders see the
    very same clouds)."""
    def make(split):
        ds = SyntheticShapes(split, cfg.data.num_points, samples_per_class, seed=cfg.data.seed + 1000,
                             noise_std=cfg.data.noise_std, class_set=cfg.data.class_set,
                             partial_view=cfg.data.partial_view, density_jitter=cfg.data.density_jitter)
        return [ds[i] for i in range(len(ds))]
    return make("train"), make("test")


def svm_accuracy(model, train, test):
    model.eval()
    trx, tr_y = extract_features(model.extract_features, train)
    tex, te_y = extract_features(model.extract_features, test)
    acc = linear_svm_accuracy(trx, tr_y, tex, te_y)
    few = few_shot_svm(tex, te_y, n_way=5, k_shot=10, n_query=20, folds=10, seed=0)
    return acc, few


@torch.no_grad()
def _features_by_depth(model, points):
    """Max + mean pooled tokens after the patch embedding, after each encoder block and after the
    final norm (the last is extract_features): where along the encoder the accuracy comes from."""
    neighborhoods, centers = model.patchify(points[..., :3].contiguous())
    x, pos = model.encoder.patch_embed(neighborhoods), model.encoder.pos_embed(centers)
    stages = [x]
    for blk in model.encoder.blocks:
        x = blk(x + pos)
        stages.append(x)
    stages.append(model.encoder.norm(x))
    return torch.cat([torch.cat([f.max(dim=1).values, f.mean(dim=1)], dim=-1) for f in stages], dim=-1)


def svm_accuracy_by_depth(model, train, test):
    model.eval()
    trx, tr_y = extract_features(lambda p: _features_by_depth(model, p), train)
    tex, te_y = extract_features(lambda p: _features_by_depth(model, p), test)
    width = 2 * model.encoder.norm.normalized_shape[0]
    return [linear_svm_accuracy(trx[:, i:i + width], tr_y, tex[:, i:i + width], te_y)
            for i in range(0, trx.shape[1], width)]


def _median_time(fn, repeat=5):
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def throughput(batch=32, steps=3):
    """Samples/s of a pre-training step (forward + backward + AdamW) of the paper's model, and the
    share of a step that FPS, kNN and Chamfer (forward + backward) take, each timed on its own on the
    step's exact shapes (64 centres of 1024 points, 32 neighbours, 38 masked patches per cloud)."""
    torch.manual_seed(0)
    model = point_mae_small()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    shapes = SyntheticShapes("train", 1024, 4)
    points = torch.stack([shapes[i % len(shapes)][0] for i in range(batch)])

    def step():
        opt.zero_grad()
        model(points)["loss"].backward()
        opt.step()

    step_s = _median_time(step, repeat=steps)
    centers = points[:, :64].contiguous()
    num_mask = int(0.6 * 64)
    pred = torch.randn(batch * num_mask, 32, 3, requires_grad=True)
    target = torch.randn(batch * num_mask, 32, 3)

    def chamfer():
        ops.chamfer_loss_l2(pred, None, target, None).backward()

    spent = {"fps": _median_time(lambda: ops.fps(points, num_samples=64)),
             "knn": _median_time(lambda: ops.knn(centers, None, points, None, 32)),
             "chamfer": _median_time(chamfer)}
    return batch / step_s, {k: v / step_s for k, v in spent.items()}


def _replace_section(text: str, name: str, body: str) -> str:
    """Replaces the block between <!-- name --> and <!-- /name --> (appends it when absent), so
    that `--only svm` and `--only throughput` each rewrite their own part of the file."""
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    block = f"{start}\n{body.strip()}\n{end}"
    if start in text and end in text:
        return text[:text.index(start)] + block + text[text.index(end) + len(end):]
    return text.rstrip() + "\n\n" + block + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=os.path.join(ROOT, "configs/point_mae/synthetic_scan.yaml"))
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks/point_mae.md"))
    p.add_argument("--svm-samples-per-class", type=int, default=40)
    p.add_argument("--work-dir", default=os.path.join(ROOT, "work_dirs/bench_point_mae"))
    p.add_argument("--only", choices=["all", "svm", "throughput"], default="all",
                   help="run one part; it rewrites only its own section of --out")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args(argv)
    cmd = "python tools/bench_point_mae.py " + " ".join(argv if argv is not None else sys.argv[1:])
    machine = (f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
               f"{torch.get_num_threads()} threads, torch {torch.__version__}.")
    sections = {}
    if args.only in ("all", "svm"):
        sections["svm"] = svm_section(args, cmd.strip(), machine)
    if args.only in ("all", "throughput"):
        sps, shares = throughput()
        sections["throughput"] = f"""## CPU pre-training throughput of the paper's model (29.0 M parameters, batch 32, 1024 points)

Command: `{cmd.strip()}`. {machine}

| samples/s | share in FPS | share in kNN | share in Chamfer |
|---|---|---|---|
| {sps:.1f} | {shares['fps']:.1%} | {shares['knn']:.1%} | {shares['chamfer']:.1%} |

Each kernel's share is its own median time (Chamfer: forward + backward) on the step's exact shapes
divided by the median step time; the rest of a step is the network (mini-PointNet over every patch
point, transformer blocks) and the optimizer."""
    text = open(args.out).read() if os.path.exists(args.out) else "# Point-MAE on the embedded procedural shapes\n"
    for name, body in sections.items():
        text = _replace_section(text, name, body)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text)
    print(text)


def svm_section(args, cmd: str, machine: str) -> str:
    cfg = load_config(args.config, ["train.auto_resume=false", "train.progress_bar=false"] + args.overrides)
    torch.manual_seed(cfg.train.seed)
    model, dataset = build_all(cfg)
    random_model, _ = build_all(cfg)                 # same seed: the same random initial weights
    random_model.load_state_dict(model.state_dict())
    t0 = time.perf_counter()
    trainer = Trainer(model, dataset, cfg.train, cfg.optim, cfg.sched, args.work_dir)
    trainer.fit()
    train_s = time.perf_counter() - t0
    svm_train, svm_test = svm_datasets(cfg, args.svm_samples_per_class)
    acc_pre, few_pre = svm_accuracy(trainer.model, svm_train, svm_test)
    acc_rand, few_rand = svm_accuracy(random_model, svm_train, svm_test)
    print(f"linear SVM: pre-trained {acc_pre:.1f} %, random weights {acc_rand:.1f} %", flush=True)
    depth_pre = svm_accuracy_by_depth(trainer.model, svm_train, svm_test)
    depth_rand = svm_accuracy_by_depth(random_model, svm_train, svm_test)
    stages = ["patch embedding"] + [f"block {i + 1}" for i in range(cfg.model.depth)] + ["final norm (= above)"]
    depth_rows = "\n".join(f"| {name} | {a:.1f} % | {b:.1f} % |" for name, a, b in zip(stages, depth_pre, depth_rand))
    return f"""## Linear SVM on frozen features: pre-trained vs. random weights

Command: `{cmd}` (one run, fixed seeds). {machine}

Pre-training: `{os.path.relpath(args.config, ROOT)}` ({cfg.train.epochs} epochs, {len(dataset)} shapes,
{trainer.step} optimizer steps, {train_s:.0f} s on CPU). Model: width {cfg.model.embed_dim}, {cfg.model.depth} blocks,
{cfg.model.num_groups} patches of {cfg.model.group_size} points, mini-PointNet width {cfg.model.patch_embed_width}.

SVM data: {len(svm_train) // args.svm_samples_per_class} classes (class set `{cfg.data.class_set}`), partial views
{cfg.data.partial_view}, density jitter {cfg.data.density_jitter}, noise {cfg.data.noise_std}, {cfg.data.num_points} points;
{args.svm_samples_per_class} train + {args.svm_samples_per_class} test shapes per class from seeds the pre-training never saw.
Features: encoder on all patches, max + mean pooled; linear SVM (C = 0.01) on standardised features.

| encoder | linear-SVM accuracy | {few_pre.n_way}-way {few_pre.k_shot}-shot (frozen + SVM, 10 folds) |
|---|---|---|
| pre-trained (Point-MAE) | {acc_pre:.1f} % | {few_pre.mean:.1f} +- {few_pre.std:.1f} % |
| same encoder, random weights | {acc_rand:.1f} % | {few_rand.mean:.1f} +- {few_rand.std:.1f} % |

The same linear SVM on the tokens pooled at each depth of the encoder (same data, same protocol):

| features after | pre-trained | random weights |
|---|---|---|
{depth_rows}"""


if __name__ == "__main__":
    main()
