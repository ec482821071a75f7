import torch
from torch import nn


class DropPath(nn.Module):
    """Stochastic depth (Huang et al., "Deep Networks with Stochastic Depth", ECCV 2016): during
    training, the residual branch of each sample is dropped with probability `drop_prob` and the kept
    ones are scaled by 1 / (1 - drop_prob), so the expectation is unchanged."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"DropPath: drop_prob must be in [0, 1), got {drop_prob}")
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self):
        return f"drop_prob={self.drop_prob}"
