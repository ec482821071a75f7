"""Point patches for Point-MAE (Pang et al., "Masked Autoencoders for Point Cloud Self-supervised
Learning", ECCV 2022, Sec. 3.1): farthest point sampling picks G patch centres, each centre's k
nearest neighbours form its patch, and patch coordinates are taken relative to the centre.
"""
from typing import Tuple

import torch
from torch import nn

from pointmae import ops


def group_points(xyz: torch.Tensor, num_groups: int, group_size: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """xyz (B, N, 3) -> (neighborhoods (B, G, K, 3) relative to their centre, centers (B, G, 3)).

    Deterministic: FPS starts at each cloud's first point (Point-MAE's choice), and kNN ties go to
    the lowest index.
    """
    if xyz.dim() != 3 or xyz.shape[-1] != 3:
        raise ValueError(f"group_points: `xyz` must be (B, N, 3), got {tuple(xyz.shape)}")
    N = xyz.shape[1]
    if num_groups > N or group_size > N:
        raise ValueError(f"group_points: a cloud of {N} points cannot make {num_groups} groups of "
                         f"{group_size} points; both must be <= {N}")
    center_idx = ops.fps(xyz, num_samples=num_groups)                       # (B, G) local
    centers = torch.gather(xyz, 1, center_idx.unsqueeze(-1).expand(-1, -1, 3))  # (B, G, 3)
    _, idx = ops.knn(centers, None, xyz, None, group_size)                  # (B, G, K) local
    return ops.group_points(xyz, centers, idx), centers                     # (B, G, K, 3) relative


class MiniPointNet(nn.Module):
    """Embeds each patch (K points, relative coordinates) into one token: a shared per-point MLP,
    a max-pooled global feature concatenated back to every point, a second shared MLP and a final
    max pool (PointNet, Qi et al., CVPR 2017, as used by Point-BERT / Point-MAE).

    (B, G, K, 3) -> (B, G, embed_dim). 1x1 convolutions keep the published checkpoints' weight shapes.
    `width` is the first MLP's output (the paper's 256: layers 3-128-256, then 512-512-embed_dim);
    on a CPU the second MLP over every patch point dominates a training step, so small models
    may halve it (width 128: 4x fewer multiply-adds there).
    """

    def __init__(self, embed_dim: int = 384, width: int = 256):
        super().__init__()
        if width < 2 or width % 2:
            raise ValueError(f"MiniPointNet: width must be an even number >= 2, got {width}")
        self.first_conv = nn.Sequential(
            nn.Conv1d(3, width // 2, 1), nn.BatchNorm1d(width // 2), nn.ReLU(inplace=True),
            nn.Conv1d(width // 2, width, 1))
        self.second_conv = nn.Sequential(
            nn.Conv1d(2 * width, 2 * width, 1), nn.BatchNorm1d(2 * width), nn.ReLU(inplace=True),
            nn.Conv1d(2 * width, embed_dim, 1))
        self.embed_dim = embed_dim

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        B, G, K, _ = patches.shape
        x = patches.reshape(B * G, K, 3).transpose(1, 2)                  # (BG, 3, K)
        feat = self.first_conv(x)                                           # (BG, 256, K)
        glob = feat.max(dim=2, keepdim=True).values                         # (BG, 256, 1)
        feat = torch.cat([glob.expand(-1, -1, K), feat], dim=1)             # (BG, 512, K)
        feat = self.second_conv(feat)                                       # (BG, C, K)
        return feat.max(dim=2).values.reshape(B, G, self.embed_dim)
