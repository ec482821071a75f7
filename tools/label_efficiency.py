"""Label-efficiency study of the detector: scratch vs. R-MAE / Voxel-MAE pre-training at 10%, 40% and
100% of the labels on the synthetic world, KITTI-protocol moderate AP_R40 -> benchmarks/detection.md.

    python tools/label_efficiency.py --quick --work-root /tmp/le      # smoke test of the whole study (~1 min)
    python tools/label_efficiency.py --full                           # the study (hours on a CPU, docs/detection.md)
    python tools/label_efficiency.py --full --dry-run                 # only print the commands

See pointmae/engine/label_efficiency.py.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pointmae.engine.label_efficiency import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
