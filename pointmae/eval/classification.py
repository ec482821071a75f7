"""Evaluation of frozen point-cloud features: the linear-SVM protocol on ModelNet40 (used by
Point-BERT / Point-MAE tables: encoder tokens max- and mean-pooled, a linear SVM on the training
split, accuracy on the test split) and few-shot n-way k-shot episodes (Sharma & Kaul, "Self-Supervised
Few-Shot Learning on Point Clouds", NeurIPS 2020 protocol: 10 folds, 20 queries per class).

The paper's few-shot numbers come from fine-tuning the whole network per episode; `few_shot_svm`
is the cheaper frozen-feature variant (a linear SVM per episode), said so in every report it makes.
"""
from dataclasses import dataclass
from typing import Callable, List

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


@torch.no_grad()
def extract_features(encode: Callable[[torch.Tensor], torch.Tensor], dataset: Dataset, batch_size: int = 32,
                     device="cpu"):
    """Runs `encode(points (B, N, 3)) -> (B, D)` over a dataset of (points, label) items.
    Returns (features (M, D) float64 numpy, labels (M,) int64 numpy)."""
    feats, labels = [], []
    for points, label in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        feats.append(encode(points.to(device)).double().cpu())
        labels.append(torch.as_tensor(label))
    return torch.cat(feats).numpy(), torch.cat(labels).numpy().astype(np.int64)


def _linear_svm(c: float):
    try:
        from sklearn.svm import LinearSVC
    except ImportError:
        raise ImportError("linear-SVM evaluation needs scikit-learn: pip install scikit-learn") from None
    return LinearSVC(C=c, max_iter=20000, dual="auto", random_state=0)


def linear_svm_accuracy(train_x, train_y, test_x, test_y, c: float = 0.01) -> float:
    """Accuracy (%) of a linear SVM trained on frozen features. Features are standardised with the
    training split's statistics (the SVM is scale-sensitive; random-weight features are tiny)."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-8
    svm = _linear_svm(c).fit((train_x - mean) / std, train_y)
    return float((svm.predict((test_x - mean) / std) == test_y).mean() * 100)


@dataclass
class FewShotResult:
    n_way: int
    k_shot: int
    accuracies: List[float]

    @property
    def mean(self):
        return float(np.mean(self.accuracies))

    @property
    def std(self):
        return float(np.std(self.accuracies))

    def __str__(self):
        return (f"{self.n_way}-way {self.k_shot}-shot (frozen features + linear SVM, {len(self.accuracies)} folds): "
                f"{self.mean:.1f} +- {self.std:.1f} %")


def few_shot_svm(features, labels, n_way: int, k_shot: int, n_query: int = 20, folds: int = 10, seed: int = 0,
                 c: float = 0.01) -> FewShotResult:
    """n-way k-shot episodes over a labelled feature set: each fold draws n classes, k support and
    n_query query samples per class (disjoint), trains a linear SVM on the support set and reports
    query accuracy. Seeded: the same seed gives the same folds."""
    classes = np.unique(labels)
    if n_way > len(classes):
        raise ValueError(f"few_shot_svm: n_way={n_way} but only {len(classes)} classes are present")
    per_class = {c_: np.flatnonzero(labels == c_) for c_ in classes}
    short = [int(c_) for c_, idx in per_class.items() if len(idx) < k_shot + n_query]
    rng = np.random.default_rng(seed)
    accs = []
    for _ in range(folds):
        usable = [c_ for c_ in classes if int(c_) not in short]
        if len(usable) < n_way:
            raise ValueError(f"few_shot_svm: classes {short} have fewer than k_shot + n_query = "
                             f"{k_shot + n_query} samples; {len(usable)} usable classes < n_way={n_way}")
        chosen = rng.choice(usable, size=n_way, replace=False)
        sx, sy, qx, qy = [], [], [], []
        for new_label, c_ in enumerate(chosen):
            idx = rng.permutation(per_class[c_])[: k_shot + n_query]
            sx.append(features[idx[:k_shot]]); sy += [new_label] * k_shot
            qx.append(features[idx[k_shot:]]); qy += [new_label] * n_query
        accs.append(linear_svm_accuracy(np.concatenate(sx), np.array(sy), np.concatenate(qx), np.array(qy), c))
    return FewShotResult(n_way, k_shot, accs)
