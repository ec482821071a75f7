"""Classification fine-tuning of a (pre-trained) Point-MAE encoder, and few-shot fine-tuning.

The loop is the Point-MAE paper's fine-tuning recipe (Pang et al., ECCV 2022, Sec. 4.2, after
Point-BERT): AdamW, linear warm-up then cosine decay per step, cross-entropy, gradient clipping,
scale-and-translate augmentation, the test split evaluated after every epoch, the best epoch's weights
kept. It reuses the engine's pieces (optimizer, schedule, logger, atomic saving, seeding) rather than
the pre-training Trainer, whose contract is a loss-only model without evaluation.

Test-time voting (PointNet++ / Point-BERT / Point-MAE protocol): the logits of `votes` copies of
each test cloud are averaged, the first copy as it is and the others randomly scaled and translated
like the training augmentation. Point-MAE's own script additionally repeats the voted test many
times and keeps the best result; that selects on the test set, so it is not done here.

Few-shot (Sharma & Kaul, NeurIPS 2020 protocol as used by Point-BERT / Point-MAE): per fold, n random
classes, k training shapes each (from the training split) and `few_shot_queries` test shapes each
(from the test split); a fresh model (pre-trained weights, new n-way head) is fine-tuned on the
n*k shapes and tested on the queries; mean and std of the folds are reported. Each fold reports its
last epoch's accuracy (not the best epoch, which would again select on the test queries).
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from pointmae.config import FinetuneClsConfig, config_to_dict
from pointmae.data.objects.augment import scale_and_translate
from pointmae.engine.builders import build_dataset, build_model, build_optimizer, build_scheduler
from pointmae.engine.checkpoint import atomic_torch_save
from pointmae.engine.distributed import pick_device
from pointmae.engine.logging import RunLogger
from pointmae.engine.trainer import seed_everything
from pointmae.models.pretrained import LoadReport, load_pretrained


# ----------------------------------------------------------------------------------------------------
# Data helpers


def dataset_labels(dataset: Dataset) -> np.ndarray:
    """Integer labels of a (points, label) dataset, from its `labels` attribute when it has one
    (readers, SyntheticShapes; wrappers are looked through via `.dataset`), else by reading it."""
    inner = dataset
    while not hasattr(inner, "labels") and hasattr(inner, "dataset"):
        inner = inner.dataset
    if hasattr(inner, "labels"):
        return np.asarray(inner.labels, dtype=np.int64)
    return np.asarray([int(dataset[i][1]) for i in range(len(dataset))], dtype=np.int64)


class RelabelledSubset(Dataset):
    """Items `indices` of a dataset, labels mapped through `label_map` (few-shot folds: n classes -> 0..n-1)."""

    def __init__(self, dataset: Dataset, indices: Sequence[int], label_map: dict):
        self.dataset, self.indices, self.label_map = dataset, list(indices), dict(label_map)
        self.labels = [self.label_map[int(lab)] for lab in dataset_labels(dataset)[self.indices]]

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        points, label = self.dataset[self.indices[i]]
        return points, self.label_map[int(label)]


def test_split_config(data_cfg):
    """The data section of the test split: same dataset, split=test, no augmentation."""
    for key in ("split", "augment"):
        if not hasattr(data_cfg, key):
            raise ValueError(f"data.{key}: fine-tuning needs a dataset with train/test splits and an augment "
                             f"switch; data.name={data_cfg.name!r} has no '{key}'")
    return dataclasses.replace(data_cfg, split="test", augment=False)


# ----------------------------------------------------------------------------------------------------
# Evaluation


@torch.no_grad()
def predict_logits(model: nn.Module, points: torch.Tensor, votes: int = 1,
                   generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """points (B, N, 3) -> logits (B, num_classes), averaged over `votes` copies: the first as is,
    the others scaled and translated at random (the training augmentation)."""
    if votes < 1:
        raise ValueError(f"votes must be >= 1, got {votes}")
    total = model(points)
    for _ in range(votes - 1):
        copies = torch.stack([scale_and_translate(p, generator) for p in points.cpu()]).to(points.device)
        total = total + model(copies)
    return total / votes


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, batch_size: int = 64, votes: int = 1, device="cpu",
             seed: int = 0) -> dict:
    """Overall accuracy and mean per-class accuracy (%) on a (points, label) dataset. Voting copies
    come from a generator seeded with `seed`, so an evaluation is repeatable."""
    was_training = model.training
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    preds, labels = [], []
    for points, label in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        logits = predict_logits(model, points[..., :3].contiguous().to(device), votes, generator)
        preds.append(logits.argmax(-1).cpu())
        labels.append(torch.as_tensor(label))
    model.train(was_training)
    pred, label = torch.cat(preds).numpy(), torch.cat(labels).numpy()
    per_class = [float((pred[label == c] == c).mean()) for c in np.unique(label)]
    return {"acc": float((pred == label).mean() * 100), "mean_class_acc": float(np.mean(per_class) * 100)}


# ----------------------------------------------------------------------------------------------------
# One fine-tuning run


@dataclasses.dataclass
class FinetuneResult:
    best_acc: float
    best_epoch: int
    last_acc: float
    final: dict                  # the best weights on the test split, with voting if asked
    load_report: Optional[LoadReport]
    history: list


def build_classifier(cfg: FinetuneClsConfig, num_classes: Optional[int] = None,
                     log=print) -> tuple[nn.Module, Optional[LoadReport]]:
    """The classifier of the config (num_classes overridden for few-shot), with the pre-trained
    weights of `finetune.pretrained` loaded (the head is never taken from a checkpoint)."""
    if cfg.model.name != "point_mae_cls":
        raise ValueError(f"model.name: fine-tuning builds 'point_mae_cls', got {cfg.model.name!r}")
    model_cfg = cfg.model if num_classes is None else dataclasses.replace(cfg.model, num_classes=num_classes)
    model = build_model(model_cfg)
    report = None
    if cfg.finetune.pretrained:
        report = load_pretrained(model, cfg.finetune.pretrained)
        log(report.summary())
    else:
        log("no finetune.pretrained checkpoint: training from random weights")
    return model, report


def finetune(cfg: FinetuneClsConfig, train_set: Optional[Dataset] = None, test_set: Optional[Dataset] = None,
             model: Optional[nn.Module] = None, work_dir: Optional[Path] = None,
             logger: Optional[RunLogger] = None) -> FinetuneResult:
    """Fine-tunes and tests after every epoch; writes checkpoints/last.pt, checkpoints/best.pt and
    results.json into the work dir. Datasets and model default to the config's."""
    c, fc = cfg.train, cfg.finetune
    if fc.votes < 1:
        raise ValueError(f"finetune.votes must be >= 1, got {fc.votes}")
    work_dir = Path(work_dir or cfg.work_dir)
    own_logger = logger is None
    log = logger or RunLogger(work_dir, True, c.tensorboard, progress_bar=False)
    device = pick_device(c.device, 0)
    try:
        seed_everything(c.seed)
        report = None
        if model is None:
            model, report = build_classifier(cfg, log=log.info)
        train_set = train_set if train_set is not None else build_dataset(cfg.data)
        test_set = test_set if test_set is not None else build_dataset(test_split_config(cfg.data))
        model = model.to(device)

        batch_size = min(c.batch_size, len(train_set))
        # BatchNorm cannot train on a last batch of one sample: drop incomplete batches.
        loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, drop_last=True,
                            num_workers=c.num_workers, generator=torch.Generator().manual_seed(c.seed))
        steps_per_epoch = len(loader)
        total_steps = steps_per_epoch * c.epochs
        if c.max_steps is not None:
            total_steps = min(total_steps, c.max_steps)
        optimizer = build_optimizer(model, cfg.optim)
        scheduler = build_scheduler(optimizer, cfg.sched, cfg.optim.lr, steps_per_epoch, total_steps)
        amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(c.amp)
        ckpt_dir = work_dir / "checkpoints"
        log.info(f"fine-tuning on {device}: {len(train_set)} training / {len(test_set)} test shapes, "
                 f"{steps_per_epoch} steps/epoch, {total_steps} steps")

        step, best_acc, best_epoch, history, last_acc = 0, -1.0, -1, [], float("nan")
        for epoch in range(c.epochs):
            if step >= total_steps:
                break
            model.train()
            t0, loss_sum, correct, seen = time.perf_counter(), 0.0, 0, 0
            for points, labels in loader:
                if step >= total_steps:
                    break
                points, labels = points[..., :3].contiguous().to(device), labels.to(device)
                with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                    logits = model(points)
                loss = F.cross_entropy(logits.float(), labels, label_smoothing=fc.label_smoothing)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"non-finite loss at step {step + 1} (epoch {epoch}); "
                                             "lower optim.lr or use train.clip_grad")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if c.clip_grad is not None:
                    nn.utils.clip_grad_norm_(model.parameters(), c.clip_grad)
                optimizer.step()
                scheduler.step()
                step += 1
                loss_sum += loss.item() * len(labels)
                correct += int((logits.argmax(-1) == labels).sum())
                seen += len(labels)
            test = evaluate(model, test_set, fc.test_batch_size, fc.votes if fc.vote_every_epoch else 1, device,
                            seed=c.seed)
            last_acc = test["acc"]
            entry = {"epoch": epoch, "step": step, "train_loss": loss_sum / max(seen, 1),
                     "train_acc": 100 * correct / max(seen, 1), "test_acc": test["acc"],
                     "test_mean_class_acc": test["mean_class_acc"], "lr": optimizer.param_groups[0]["lr"],
                     "epoch_s": time.perf_counter() - t0}
            history.append(entry)
            log.scalars(step, epoch, {k: v for k, v in entry.items() if k not in ("epoch", "step")})
            state = {"format": "pointmae-weights", "format_version": 1, "model": model.state_dict(),
                     "config": config_to_dict(cfg), "epoch": epoch, "test_acc": test["acc"]}
            atomic_torch_save(state, ckpt_dir / "last.pt")
            if test["acc"] > best_acc:
                best_acc, best_epoch = test["acc"], epoch
                atomic_torch_save(state, ckpt_dir / "best.pt")

        # The best epoch's weights, tested once more (with voting when asked).
        if best_epoch >= 0:
            model.load_state_dict(torch.load(ckpt_dir / "best.pt", map_location=device, weights_only=True)["model"])
        final = evaluate(model, test_set, fc.test_batch_size, fc.votes, device, seed=c.seed)
        final["votes"] = fc.votes
        log.info(f"best epoch {best_epoch}: test accuracy {best_acc:.2f} %; with {fc.votes} vote(s): "
                 f"{final['acc']:.2f} % (mean class {final['mean_class_acc']:.2f} %)")
        result = FinetuneResult(best_acc, best_epoch, last_acc, final, report, history)
        (work_dir / "results.json").write_text(json.dumps(
            {"best_acc": best_acc, "best_epoch": best_epoch, "last_acc": last_acc, "final": final,
             "pretrained": cfg.finetune.pretrained,
             "matched_keys": len(report.matched) if report else 0, "history": history}, indent=1))
        return result
    finally:
        if own_logger:
            log.close()


# ----------------------------------------------------------------------------------------------------
# Few-shot


@dataclasses.dataclass
class FewShotFinetuneResult:
    n_way: int
    k_shot: int
    accuracies: list

    @property
    def mean(self) -> float:
        return float(np.mean(self.accuracies))

    @property
    def std(self) -> float:
        return float(np.std(self.accuracies))

    def __str__(self):
        return (f"{self.n_way}-way {self.k_shot}-shot (fine-tuned, {len(self.accuracies)} folds, last epoch): "
                f"{self.mean:.1f} +- {self.std:.1f} %")


def sample_fold(train_labels: np.ndarray, test_labels: np.ndarray, n_way: int, k_shot: int, n_query: int,
                rng: np.random.Generator) -> tuple[list, list, dict]:
    """One n-way k-shot fold: (train indices, test indices, {original label: 0..n-1})."""
    usable = [c for c in np.unique(train_labels)
              if (train_labels == c).sum() >= k_shot and (test_labels == c).sum() >= n_query]
    if len(usable) < n_way:
        raise ValueError(f"finetune.few_shot_way={n_way}: only {len(usable)} classes have >= {k_shot} training "
                         f"and >= {n_query} test shapes")
    chosen = rng.choice(usable, size=n_way, replace=False)
    train_idx, test_idx = [], []
    for c in chosen:
        train_idx += rng.choice(np.flatnonzero(train_labels == c), size=k_shot, replace=False).tolist()
        test_idx += rng.choice(np.flatnonzero(test_labels == c), size=n_query, replace=False).tolist()
    return train_idx, test_idx, {int(c): i for i, c in enumerate(chosen)}


def few_shot_finetune(cfg: FinetuneClsConfig, work_dir: Optional[Path] = None) -> FewShotFinetuneResult:
    """finetune.few_shot_folds folds of n-way k-shot fine-tuning; each fold's run goes to fold_<i>/."""
    fc = cfg.finetune
    if fc.few_shot_way < 2 or fc.few_shot_shot < 1 or fc.few_shot_folds < 1 or fc.few_shot_queries < 1:
        raise ValueError(f"few-shot needs finetune.few_shot_way >= 2 and shot, folds, queries >= 1; got way="
                         f"{fc.few_shot_way} shot={fc.few_shot_shot} folds={fc.few_shot_folds} "
                         f"queries={fc.few_shot_queries}")
    work_dir = Path(work_dir or cfg.work_dir)
    train_full = build_dataset(cfg.data)
    test_full = build_dataset(test_split_config(cfg.data))
    train_labels, test_labels = dataset_labels(train_full), dataset_labels(test_full)
    accs = []
    log = RunLogger(work_dir, True, False, progress_bar=False)
    try:
        for fold in range(fc.few_shot_folds):
            rng = np.random.default_rng([cfg.train.seed, fold])
            tr, te, label_map = sample_fold(train_labels, test_labels, fc.few_shot_way, fc.few_shot_shot,
                                            fc.few_shot_queries, rng)
            seed_everything(cfg.train.seed + fold)
            model, _ = build_classifier(cfg, num_classes=fc.few_shot_way, log=log.info)
            fold_cfg = dataclasses.replace(cfg, finetune=dataclasses.replace(fc, vote_every_epoch=False))
            result = finetune(fold_cfg, RelabelledSubset(train_full, tr, label_map),
                              RelabelledSubset(test_full, te, label_map), model, work_dir / f"fold_{fold}")
            accs.append(result.last_acc)
            log.info(f"fold {fold}: classes {sorted(label_map)} -> last-epoch accuracy {result.last_acc:.1f} %")
        out = FewShotFinetuneResult(fc.few_shot_way, fc.few_shot_shot, accs)
        log.info(str(out))
        (work_dir / "few_shot.json").write_text(json.dumps(
            {"n_way": out.n_way, "k_shot": out.k_shot, "accuracies": accs, "mean": out.mean, "std": out.std,
             "pretrained": fc.pretrained}, indent=1))
        return out
    finally:
        log.close()
