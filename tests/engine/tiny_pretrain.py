"""tools/pretrain.py with the tiny test model registered; used by the subprocess / torchrun tests.

After training, every rank also writes its own parameters (params_rank<R>.pt) so that a test can
check that the ranks agree.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
sys.path.insert(0, HERE)

import torch  # noqa: E402

import engine_tiny  # noqa: E402
from pointmae.engine import distributed as D  # noqa: E402
from pointmae.engine.run import build_parser, resolve_config, train  # noqa: E402


def main() -> int:
    engine_tiny.register()
    args = build_parser("tiny_pretrain.py", __doc__).parse_intermixed_args()
    cfg = resolve_config(args)
    try:
        trainer = train(cfg, args.resume_from or ("auto" if args.resume else None))
        state = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        torch.save(state, os.path.join(cfg.work_dir, f"params_rank{trainer.info.rank}.pt"))
    finally:
        D.shutdown_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
