"""Optional cross-check against a compiled KITTI object devkit (skipped where none is given).

Build one (not part of pointmae; it needs Boost.Geometry, e.g. Debian's libboost-dev):
    g++ -O2 -o evaluate_object_3d_offline evaluate_object_3d_offline.cpp
from the KITTI object devkit's offline 3D evaluation (cpp/evaluate_object.cpp of the devkit, or its
widely copied `evaluate_object_3d_offline.cpp`, whose `main` takes `GT_DIR RESULT_DIR` and writes
RESULT_DIR/stats_<class>_{detection,orientation,detection_ground,detection_3d}.txt: three lines,
easy / moderate / hard, of 41 precision values). Then
    POINTMAE_KITTI_DEVKIT=/path/evaluate_object_3d_offline \\
    POINTMAE_KITTI_DEVKIT_OVERLAP=loose  pytest tests/eval/test_kitti_devkit_parity.py
OVERLAP names the devkit's MIN_OVERLAP table: "loose" for the offline version as published
(BEV / 3D at 0.5 / 0.25 / 0.25), "strict" for the benchmark's 0.7 / 0.5 / 0.5.
Checked on 2026-12-01 with Boost 1.74 (both tables, 2 x 300 frames each, plus 4 x 200 frames of the
scenes in test_kitti_eval.py): every curve equal to 5e-13 with a build that prints 12 decimals
instead of the stock "%f"; the 2e-6 tolerance here covers the stock 6 decimals.
"""
import importlib.util
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from pointmae.data.kitti import write_labels
from pointmae.eval.kitti import DIFFICULTIES, evaluate_kitti_folders

DEVKIT = os.environ.get("POINTMAE_KITTI_DEVKIT")
OVERLAP = os.environ.get("POINTMAE_KITTI_DEVKIT_OVERLAP", "loose")
SUFFIXES = {"bbox": "detection", "aos": "orientation", "bev": "detection_ground", "3d": "detection_3d"}


@pytest.mark.skipif(not DEVKIT, reason="set POINTMAE_KITTI_DEVKIT to a compiled KITTI devkit evaluator")
@pytest.mark.parametrize("seed", [0, 1])
def test_precision_curves_equal_the_devkits(tmp_path, seed):
    spec = importlib.util.spec_from_file_location(
        "bench_kitti_eval", Path(__file__).resolve().parents[2] / "tools" / "bench_kitti_eval.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rng = np.random.default_rng(seed)
    for i in range(300):
        gt, det = bench.random_frame(rng, 9, 20)
        write_labels(tmp_path / "gt" / f"{i:06d}.txt", gt, decimals=4)
        write_labels(tmp_path / "res" / f"{i:06d}.txt", det, with_score=True, decimals=4)
    ours = evaluate_kitti_folders(tmp_path / "res", tmp_path / "gt", overlap_sets=(OVERLAP,))
    subprocess.run([DEVKIT, str(tmp_path / "gt"), str(tmp_path / "res")], check=True, stdout=subprocess.DEVNULL)
    compared = 0
    for cls in ("Car", "Pedestrian", "Cyclist"):
        for metric, suffix in SUFFIXES.items():
            path = tmp_path / "res" / f"stats_{cls.lower()}_{suffix}.txt"
            if not path.exists():
                continue
            for difficulty, line in zip(DIFFICULTIES, path.read_text().splitlines()):
                mine = ours.precision[(OVERLAP, cls, metric, difficulty)]
                if np.isnan(mine).all():          # no valid ground truth: the devkit prints zeros
                    continue
                np.testing.assert_allclose(mine, np.array(line.split(), float), atol=2e-6,
                                           err_msg=f"{cls} {metric} {difficulty}")
                compared += 1
    assert compared >= 24
