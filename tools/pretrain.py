"""Self-supervised pre-training: python tools/pretrain.py CONFIG [--work-dir DIR] [--resume] [key=value ...]

Runs single-process as is, and on many GPUs / nodes under torchrun (docs/training.md), e.g.
    torchrun --nproc_per_node=8 tools/pretrain.py configs/point_mae/shapenet.yaml train.amp=bf16
"""
import os
import sys

# Lets `python tools/pretrain.py` find the package of this checkout without installing it.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pointmae.engine.run import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(prog="pretrain.py", description=__doc__))
