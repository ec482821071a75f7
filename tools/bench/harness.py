"""Timing and reporting shared by the op benchmarks (tools/bench_ops.py).

A benchmark family (tools/bench/<family>.py) exposes `cases(device, quick) -> list[Case]`. A Case is
one op at one size: our implementation and any number of competitors, each a zero-argument callable
that does the whole measured work (e.g. build + query), run with the same thread count. Competitors
that are not installed are left out of the case by the family, with a note.
"""
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import torch


@dataclass
class Case:
    op: str                      # e.g. "fps"
    size: str                    # e.g. "KITTI 000001 (120268 pts) -> 4096"
    threads: int                 # torch.set_num_threads for ours; competitors are given the same count
    ours: Callable[[], object]
    competitors: Dict[str, Callable[[], object]] = field(default_factory=dict)
    memory: bool = False         # also report peak memory (CPU: RSS high-water mark; CUDA: allocator peak)
    repeat: int = 5
    note: str = ""


@dataclass
class Result:
    case: Case
    seconds: Dict[str, float]              # name -> median seconds ("pointmae" for ours)
    peak_mb: Dict[str, Optional[float]]


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn, device, repeat=5, warmup=1):
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _rss_kb(field_name):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    return None


def peak_memory_mb(fn, device):
    """Peak memory that `fn` adds on top of what is in use when it starts.

    CUDA: the caching allocator's peak. CPU: the process's resident-set high-water mark (VmHWM), reset
    through /proc/self/clear_refs before the call. Large CPU tensors are mmap-backed and returned to
    the OS when freed, so the high-water mark sees them.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return None
    base = _rss_kb("VmRSS")
    fn()
    return (_rss_kb("VmHWM") - base) / 1024


def run_case(case: Case, device) -> Result:
    torch.set_num_threads(case.threads)
    fns = {"pointmae": case.ours, **case.competitors}
    seconds, peak = {}, {}
    for name, fn in fns.items():
        seconds[name] = median_seconds(fn, device, repeat=case.repeat)
        peak[name] = peak_memory_mb(fn, device) if case.memory else None
    return Result(case, seconds, peak)


def _fmt_s(s):
    return f"{s * 1e3:.2f} ms" if s < 1 else f"{s:.3f} s"


def table(results: List[Result]) -> str:
    """Markdown: one row per (case, competitor): times side by side and the ratio ours / theirs."""
    lines = ["| op | size | threads | pointmae | competitor | competitor time | pointmae / competitor | peak MB (ours / theirs) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        ours = r.seconds["pointmae"]
        others = [k for k in r.seconds if k != "pointmae"] or [None]
        for name in others:
            if name is None:
                lines.append(f"| {r.case.op} | {r.case.size} | {r.case.threads} | {_fmt_s(ours)} | - | - | - | - |")
                continue
            theirs = r.seconds[name]
            mem = "-"
            if r.case.memory and r.peak_mb.get("pointmae") is not None:
                mem = f"{r.peak_mb['pointmae']:.2f} / {r.peak_mb[name]:.1f}"
            lines.append(f"| {r.case.op} | {r.case.size} | {r.case.threads} | {_fmt_s(ours)} | {name} | "
                         f"{_fmt_s(theirs)} | {ours / theirs:.3g}x | {mem} |")
    return "\n".join(lines)


def machine_info(device) -> str:
    import importlib.metadata as md

    def ver(pkg):
        try:
            return md.version(pkg)
        except md.PackageNotFoundError:
            return "not installed"

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    lines = [f"- machine: {cpu}, {os.cpu_count()} logical cores, Python {platform.python_version()}",
             f"- torch {torch.__version__}, pointmae built with CUDA kernels: {__import__('pointmae').WITH_CUDA}"]
    if device.type == "cuda":
        lines.append(f"- GPU: {torch.cuda.get_device_name(device)}")
    libs = ["numpy", "scipy", "fpsample", "torch-cluster", "open3d", "spconv", "pointops"]
    lines.append("- competitors: " + ", ".join(f"{p} {ver(p)}" for p in libs))
    return "\n".join(lines)
