"""Fine-tune a detector from a pre-trained encoder, then predict on the validation split:

    python tools/finetune_det.py configs/detection/synthetic.yaml --pretrained work_dirs/rmae/final_model.pt \
        [--freeze-backbone] [--backbone-lr-mult 0.1] [--label-fraction 0.1] [key=value ...]

See pointmae/engine/finetune_det.py for what is written to the run directory.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pointmae.engine.finetune_det import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
