"""The label-efficiency study of issue 7: does LiDAR MAE pre-training help when labels are scarce?

`tools/label_efficiency.py --quick|--full [--work-root DIR] [--out FILE] [--fractions 0.1 0.4 1.0] [--dry-run]`

On the synthetic world: pre-train R-MAE and Voxel-MAE (both with the detector's VoxelBackBone8x
encoder, so every `vfe.` / `backbone_3d.` key loads), then fine-tune the CenterPoint detector from
scratch and from each pre-training on 10%, 40% and 100% of the labelled training frames (nested
seeded subsets, pointmae.data.detection.label_subset), and report the KITTI protocol's moderate AP_R40
(BEV and 3D, strict overlaps, pointmae.eval.kitti) on the validation frames of another world seed.
The table goes to a Markdown file (default benchmarks/detection.md) together with the exact
commands; every run is also a plain tools/pretrain.py / tools/finetune_det.py command, and a run
whose metrics.json exists is not repeated (the study can be stopped and continued).

Schedule: by default each fine-tuning run gets the same number of optimizer steps (epochs scaled by
1 / fraction, as in the label-efficiency protocols of e.g. "ALSO" (Boulch et al., CVPR 2023) and
R-MAE (Hess et al.), where the low-label runs are not starved of updates); --schedule epochs keeps
the config's epochs instead.

Scales: "quick" is a smoke test of the whole study (toy grid, a few frames, one or two steps per run;
its numbers mean nothing); "full" is the study (the synthetic configs' grids, 160 labelled frames,
40 validation frames).
"""
from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

ROOT = Path(__file__).resolve().parents[2]
INITS = ("scratch", "r_mae", "voxel_mae")
FRACTIONS = (0.1, 0.4, 1.0)
METRIC_KEYS = ("mean/bev_R40/moderate", "mean/3d_R40/moderate", "Car/3d_R40/moderate", "Pedestrian/3d_R40/moderate")


@dataclass(frozen=True)
class Scale:
    """Overrides (key=value strings of pointmae.config) for the pre-training and fine-tuning runs."""
    pretrain_common: tuple[str, ...]
    pretrain: dict                       # method -> extra overrides
    detector: tuple[str, ...]
    detector_epochs: int
    precise_bn: int
    notes: str = ""
    extra: dict = field(default_factory=dict)


# Both MAEs on R-MAE's synthetic grid (0.25 x 0.25 x 0.15 m, 27 z layers: the 8x sparse encoder needs >= 24).
_MAE_GRID = ("model.point_range=[-32.0,-32.0,-3.0,32.0,32.0,1.05]", "model.voxel_size=[0.25,0.25,0.15]",
             "data.point_range=[-32.0,-32.0,-3.0,32.0,32.0,1.05]")
_TOY_RANGE = "[-9.6,-9.6,-3.0,9.6,9.6,2.0]"
_TOY_DET_RANGE = "[0.0,-9.6,-3.0,19.2,9.6,2.0]"

SCALES = {
    "quick": Scale(
        pretrain_common=("data.num_frames=2", "data.frames_per_sequence=2", "data.azimuth_resolution_deg=2.0",
                         f"data.point_range={_TOY_RANGE}", f"model.point_range={_TOY_RANGE}",
                         "model.voxel_size=[0.2,0.2,0.2]", "train.batch_size=2", "train.epochs=1",
                         "train.tensorboard=false", "train.vis_every=0"),
        pretrain={"r_mae": (), "voxel_mae": ("model.backbone=VoxelBackBone8x",)},
        detector=(f"model.point_range={_TOY_DET_RANGE}", f"data.crop_range={_TOY_DET_RANGE}",
                  "model.voxel_size=[0.2,0.2,0.2]", "model.bev_layer_nums=[1,1]", "model.bev_num_filters=[16,32]",
                  "model.bev_num_upsample_filters=[16,16]", "model.head_channels=16",
                  "data.train_args={num_frames: 4, seed: 0}", "data.val_args={num_frames: 2, seed: 1000}",
                  "data.gt_database_frames=2", "train.batch_size=1", "train.tensorboard=false", "train.vis_every=0"),
        detector_epochs=1, precise_bn=1,
        notes="smoke scale: toy grid, 4 labelled frames, 2 validation frames, one epoch; the numbers mean nothing"),
    "full": Scale(
        pretrain_common=_MAE_GRID + ("data.num_frames=512", "train.epochs=10"),
        pretrain={"r_mae": (), "voxel_mae": ("model.backbone=VoxelBackBone8x", "model.max_points_per_voxel=5",
                                             "model.max_voxels=40000")},
        detector=("data.val_args={num_frames: 40, seed: 1000}",),
        detector_epochs=10, precise_bn=8,
        notes="configs/detection/synthetic.yaml (160 labelled frames, 0.2 m voxels), 40 validation frames"),
}


@dataclass
class Run:
    init: str
    fraction: float
    work_dir: Path
    argv: list[str]
    metrics: Optional[dict] = None
    seconds: Optional[float] = None


def command_line(tool: str, argv: Sequence[str]) -> str:
    return "python " + " ".join(shlex.quote(a) for a in [f"tools/{tool}.py", *argv])


def pretrain_argv(scale: Scale, method: str, work_dir: Path, device: str) -> list[str]:
    return [f"configs/{method}/synthetic.yaml", "--work-dir", str(work_dir / method), *scale.pretrain_common,
            *scale.pretrain[method], f"train.device={device}"]


def finetune_argv(scale: Scale, init: str, fraction: float, work_dir: Path, schedule: str, device: str) -> list[str]:
    epochs = scale.detector_epochs
    if schedule == "steps":            # same number of optimizer steps for every fraction
        epochs = max(1, int(math.ceil(epochs / fraction - 1e-9)))
    argv = ["configs/detection/synthetic.yaml", "--label-fraction", f"{fraction:g}", "--precise-bn",
            str(scale.precise_bn), "--work-dir", str(work_dir / f"det_{init}_{fraction:g}")]
    if init != "scratch":
        argv += ["--pretrained", str(work_dir / init / "final_model.pt")]
    return argv + [*scale.detector, f"train.epochs={epochs}", f"train.device={device}"]


def plan(scale_name: str, work_dir: Path, fractions: Sequence[float] = FRACTIONS, inits: Sequence[str] = INITS,
         schedule: str = "steps", device: str = "cpu") -> tuple[dict[str, list[str]], list[Run]]:
    """(pre-training argv per method, the fine-tuning runs) of the study; nothing is run."""
    if scale_name not in SCALES:
        raise ValueError(f"scale must be one of {sorted(SCALES)}, got {scale_name!r}")
    if schedule not in ("steps", "epochs"):
        raise ValueError(f"schedule must be 'steps' or 'epochs', got {schedule!r}")
    bad = [f for f in fractions if not 0.0 < f <= 1.0]
    if bad:
        raise ValueError(f"fractions must be in (0, 1], got {bad}")
    unknown = [i for i in inits if i not in INITS]
    if unknown:
        raise ValueError(f"inits must be among {INITS}, got {unknown}")
    scale = SCALES[scale_name]
    pretrains = {m: pretrain_argv(scale, m, work_dir, device) for m in inits if m != "scratch"}
    runs = [Run(init, float(f), work_dir / f"det_{init}_{float(f):g}",
                finetune_argv(scale, init, float(f), work_dir, schedule, device))
            for f in fractions for init in inits]
    return pretrains, runs


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def markdown(scale_name: str, pretrains: dict, runs: Sequence[Run], schedule: str, tool_argv: Sequence[str]) -> str:
    """The benchmarks/detection.md text: the table (n/a where a class has no valid ground truth) and
    every command."""
    scale = SCALES[scale_name]
    lines = [f"# Detection label efficiency (synthetic world, scale `{scale_name}`)", "",
             f"Produced by `{command_line('label_efficiency', tool_argv)}` "
             f"({time.strftime('%Y-%m-%d', time.gmtime())}). {scale.notes}. KITTI protocol "
             "(`pointmae/eval/kitti.py`), moderate difficulty, AP_R40, strict overlaps (Car 0.7, Pedestrian / "
             "Cyclist 0.5); mean over the KITTI classes with valid ground truth. Schedule: "
             + ("the same number of optimizer steps for every label fraction." if schedule == "steps"
                else "the config's epochs for every label fraction."), "",
             "| labels | init | mean BEV | mean 3D | Car 3D | Pedestrian 3D | minutes |", "|---|---|---|---|---|---|---|"]
    for run in runs:
        m = run.metrics or {}
        minutes = "" if run.seconds is None else f"{run.seconds / 60:.1f}"
        lines.append(f"| {run.fraction:.0%} | {run.init} | " + " | ".join(_fmt(m.get(k)) for k in METRIC_KEYS)
                     + f" | {minutes} |")
    lines += ["", "Commands (from the repository root, `OMP_NUM_THREADS=1` on a CPU):", "", "```bash"]
    lines += [command_line("pretrain", argv) for argv in pretrains.values()]
    lines += [command_line("finetune_det", run.argv) for run in runs]
    lines += ["```", ""]
    return "\n".join(lines)


def _absolute_config(argv: list[str]) -> list[str]:
    """The commands name configs relative to the repository root; run them from any directory."""
    return [str(ROOT / argv[0]), *argv[1:]]


def run_study(scale_name: str, work_dir: Path, out: Path, fractions=FRACTIONS, inits=INITS, schedule: str = "steps",
              device: str = "cpu", tool_argv: Sequence[str] = (), log=print) -> list[Run]:
    from pointmae.engine.finetune_det import main as finetune_main
    from pointmae.engine.run import main as pretrain_main
    work_dir = Path(work_dir)
    pretrains, runs = plan(scale_name, work_dir, fractions, inits, schedule, device)
    for method, argv in pretrains.items():
        if (work_dir / method / "final_model.pt").is_file():
            log(f"[label_efficiency] {method}: pre-training found, not repeated")
            continue
        log(f"[label_efficiency] {command_line('pretrain', argv)}")
        if pretrain_main(_absolute_config(argv)) != 0:
            raise RuntimeError(f"pre-training {method} failed: {command_line('pretrain', argv)}")
    for run in runs:
        metrics_file = run.work_dir / "metrics.json"
        timing_file = run.work_dir / "study_seconds.txt"
        if not metrics_file.is_file():
            log(f"[label_efficiency] {command_line('finetune_det', run.argv)}")
            start = time.perf_counter()
            if finetune_main(_absolute_config(run.argv)) != 0:
                raise RuntimeError(f"fine-tuning failed: {command_line('finetune_det', run.argv)}")
            timing_file.write_text(f"{time.perf_counter() - start:.1f}\n")
        run.metrics = json.loads(metrics_file.read_text())
        run.seconds = float(timing_file.read_text()) if timing_file.is_file() else None
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown(scale_name, pretrains, runs, schedule, tool_argv))
    (work_dir / "label_efficiency.json").write_text(json.dumps(
        [{"init": r.init, "fraction": r.fraction, "metrics": r.metrics, "seconds": r.seconds} for r in runs], indent=2)
        + "\n")
    log(f"[label_efficiency] wrote {out}")
    return runs


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="label_efficiency.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    scale = p.add_mutually_exclusive_group(required=True)
    scale.add_argument("--scale", choices=sorted(SCALES), help="quick: smoke test; full: the study")
    scale.add_argument("--quick", dest="scale", action="store_const", const="quick", help="same as --scale quick")
    scale.add_argument("--full", dest="scale", action="store_const", const="full", help="same as --scale full")
    p.add_argument("--work-root", help="run directories (default work_dirs/label_efficiency_<scale>)")
    p.add_argument("--out", help="Markdown table (default benchmarks/detection.md for --scale full, "
                   "<work-root>/detection.md for quick)")
    p.add_argument("--fractions", type=float, nargs="+", default=list(FRACTIONS))
    p.add_argument("--inits", nargs="+", default=list(INITS), choices=INITS)
    p.add_argument("--schedule", choices=["steps", "epochs"], default="steps",
                   help="steps: the same number of optimizer steps per fraction (default); epochs: the config's")
    p.add_argument("--device", default="cpu", help="train.device of every run (cpu, cuda, auto)")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    work_dir = Path(args.work_root or f"work_dirs/label_efficiency_{args.scale}")
    out = Path(args.out or ("benchmarks/detection.md" if args.scale == "full" else work_dir / "detection.md"))
    try:
        if args.dry_run:
            pretrains, runs = plan(args.scale, work_dir, args.fractions, args.inits, args.schedule, args.device)
            for a in pretrains.values():
                print(command_line("pretrain", a))
            for run in runs:
                print(command_line("finetune_det", run.argv))
            return 0
        run_study(args.scale, work_dir, out, args.fractions, args.inits, args.schedule, args.device, argv)
    except (ValueError, RuntimeError) as exc:
        print(f"label_efficiency.py: {exc}", file=sys.stderr)
        return 1
    return 0
