"""Op benchmarks: our kernels against the competing libraries, measured in one run.

    python tools/bench_ops.py [--device cpu|cuda] [--quick] [--only fps,knn] [--out benchmarks/]

Prints one markdown table and writes it to benchmarks/ops_<device>.md with the machine, the thread
counts and the library versions. Each family lives in tools/bench/<family>.py.
"""
import argparse
import importlib
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import harness  # noqa: E402

FAMILIES = ["fps", "neighbors", "chamfer", "voxelize", "boxes"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--quick", action="store_true", help="small sizes, a smoke run in seconds")
    p.add_argument("--only", default="", help="comma-separated families: " + ",".join(FAMILIES))
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA GPU is available")
    wanted = [f for f in args.only.split(",") if f] or FAMILIES
    unknown = sorted(set(wanted) - set(FAMILIES))
    if unknown:
        p.error(f"--only: unknown families {unknown}; choose from {FAMILIES}")

    results, notes = [], []
    for family in wanted:
        try:
            mod = importlib.import_module(f"bench.{family}")
        except ModuleNotFoundError as e:
            if e.name == f"bench.{family}":
                notes.append(f"- {family}: no benchmark yet")
                continue
            raise
        cases = mod.cases(device, args.quick)
        notes += [f"- {family}: {n}" for n in getattr(mod, "NOTES", [])]
        for case in cases:
            t0 = time.perf_counter()
            r = harness.run_case(case, device)
            results.append(r)
            print(f"[{time.perf_counter() - t0:6.1f} s] {case.op} {case.size} threads={case.threads}: "
                  + ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in r.seconds.items()), flush=True)

    text = (f"# Op benchmarks on {device.type}{' (quick)' if args.quick else ''}\n\n"
            f"{harness.machine_info(device)}\n- median of several runs after a warm-up; the same thread count for every "
            f"library in a row\n\n{harness.table(results)}\n" + ("\n" + "\n".join(notes) + "\n" if notes else ""))
    print("\n" + text)
    if not args.quick:
        os.makedirs(args.out, exist_ok=True)
        path = os.path.join(args.out, f"ops_{device.type}.md")
        with open(path, "w") as f:
            f.write(text)
        print(f"written to {path}")


if __name__ == "__main__":
    main()
