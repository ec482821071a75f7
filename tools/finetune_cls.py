"""Classification fine-tuning of Point-MAE: python tools/finetune_cls.py CONFIG [--pretrained CKPT]
[--work-dir DIR] [key=value ...]

CKPT: a pointmae pre-training checkpoint or final_model.pt, or the official Point-MAE release file
(pretrain.pth). Loading prints matched / missing / unexpected keys and stops when nothing matches.
Each epoch is tested; WORK_DIR gets checkpoints/best.pt, checkpoints/last.pt, results.json, train.log.

    python tools/finetune_cls.py configs/point_mae/finetune_synthetic.yaml \\
        --pretrained work_dirs/point_mae_synthetic/final_model.pt
    python tools/finetune_cls.py configs/point_mae/finetune_modelnet40.yaml --pretrained pretrain.pth \\
        finetune.votes=10                                         # test-time voting
    python tools/finetune_cls.py configs/point_mae/finetune_synthetic.yaml --pretrained CKPT \\
        finetune.few_shot_way=5 finetune.few_shot_shot=10         # few-shot folds
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pointmae.config import ConfigError, FinetuneClsConfig, dump_config, load_config  # noqa: E402
from pointmae.engine.finetune_cls import few_shot_finetune, finetune  # noqa: E402
from pointmae.models.pretrained import PretrainedLoadError  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="finetune_cls.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="YAML config (configs/point_mae/finetune_*.yaml)")
    p.add_argument("--pretrained", metavar="CKPT", help="pre-trained weights (sets finetune.pretrained)")
    p.add_argument("--work-dir", help="run directory (default: work_dir from the config)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
    args = p.parse_intermixed_args(argv)
    overrides = list(args.overrides)
    if args.pretrained:
        overrides.append(f"finetune.pretrained={args.pretrained}")
    if args.work_dir:
        overrides.append(f"work_dir={args.work_dir}")
    try:
        cfg = load_config(args.config, overrides, schema=FinetuneClsConfig)
    except ConfigError as e:
        print(f"finetune_cls.py: config error: {e}", file=sys.stderr)
        return 2
    os.makedirs(cfg.work_dir, exist_ok=True)
    dump_config(cfg, os.path.join(cfg.work_dir, "config.yaml"))
    try:
        if cfg.finetune.few_shot_way > 0:
            print(few_shot_finetune(cfg))
        else:
            result = finetune(cfg)
            print(f"best test accuracy {result.best_acc:.2f} % (epoch {result.best_epoch}); "
                  f"best weights with {result.final['votes']} vote(s): {result.final['acc']:.2f} %")
    except (PretrainedLoadError, ValueError) as e:
        print(f"finetune_cls.py: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
