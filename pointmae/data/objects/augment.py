"""Point-MAE's training augmentation (Pang et al. 2022, following Point-BERT): a random anisotropic
scale in [2/3, 3/2] per axis and a random translation in [-0.2, 0.2] per axis, per cloud."""
import torch
from torch.utils.data import Dataset


def scale_and_translate(points: torch.Tensor, generator=None, scale=(2 / 3, 3 / 2), shift=0.2) -> torch.Tensor:
    """points (N, 3+) -> augmented copy; extra channels (normals) are left alone."""
    s = torch.empty(3).uniform_(scale[0], scale[1], generator=generator)
    t = torch.empty(3).uniform_(-shift, shift, generator=generator)
    out = points.clone()
    out[:, :3] = points[:, :3] * s + t
    return out


class Augmented(Dataset):
    """Wraps a (points, label) dataset with scale_and_translate. Uses the global torch RNG, which the
    engine seeds per rank and restores on resume."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        points, label = self.dataset[i]
        return scale_and_translate(points), label
