"""Point-MAE (Pang et al., "Masked Autoencoders for Point Cloud Self-supervised Learning", ECCV 2022).

A point cloud is cut into patches (FPS centres + kNN, see point_tokenizer.py); a random 60% of the
patches is masked; a standard Transformer encodes the visible patches only; a lighter decoder gets the
encoded visible tokens plus one shared mask token per masked patch (each with its centre's positional
embedding) and predicts the points of the masked patches; the loss is the Chamfer distance between
predicted and true masked patches. Laid out like the image MAE's models_mae.py (He et al., CVPR 2022).

Default sizes are the paper's: 64 patches of 32 points for 1024-point clouds, width 384, 12 encoder
blocks with 6 heads, drop path 0.1, 4 decoder blocks. With them the pre-training model has 29,006,432
parameters and the ModelNet40 classifier 22,099,752, as the published models.
"""
from typing import Dict, Optional

import torch
from torch import nn

from pointmae.layers import Block
from pointmae.layers.weight_init import init_linear_and_layernorm
from pointmae.models.point_tokenizer import MiniPointNet, group_points
from pointmae.ops import chamfer_loss_l2


def _pos_mlp(dim: int) -> nn.Sequential:
    # Positional embedding of a patch centre: a small MLP on xyz (learned, as in the paper).
    return nn.Sequential(nn.Linear(3, 128), nn.GELU(), nn.Linear(128, dim))


class PointTransformerEncoder(nn.Module):
    """Patch embedding + learned centre positions + Transformer blocks, shared by pre-training and
    fine-tuning so that pre-trained weights load by name. As in Point-MAE, the positional embedding is
    added to the tokens before every block."""

    def __init__(self, embed_dim=384, depth=12, num_heads=6, mlp_ratio=4.0, drop_path_rate=0.1,
                 patch_embed_width=256):
        super().__init__()
        self.patch_embed = MiniPointNet(embed_dim, patch_embed_width)
        self.pos_embed = _pos_mlp(embed_dim)
        rates = torch.linspace(0, drop_path_rate, depth).tolist()      # stochastic depth decay rule
        self.blocks = nn.ModuleList([Block(embed_dim, num_heads, mlp_ratio, drop_path=r) for r in rates])
        self.norm = nn.LayerNorm(embed_dim)

    def forward_tokens(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x + pos)
        return self.norm(x)


def random_masking(batch: int, num_groups: int, mask_ratio: float, device,
                   generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Per-sample random masking with an exact count: (B, G) bool, True = masked.

    Every sample masks exactly int(mask_ratio * G) patches: argsort of uniform noise gives a random
    permutation per sample, and its first entries are the masked ones.
    """
    num_mask = int(mask_ratio * num_groups)
    noise = torch.rand(batch, num_groups, device=device, generator=generator)
    ranks = noise.argsort(dim=1).argsort(dim=1)            # rank of each patch in its sample's permutation
    return ranks < num_mask


def block_masking(centers: torch.Tensor, mask_ratio: float,
                  generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Per-sample block masking: a random patch and its nearest int(mask_ratio * G) - 1 neighbours
    (by centre distance) are masked, so the masked region is one contiguous part. (B, G) bool."""
    B, G, _ = centers.shape
    num_mask = int(mask_ratio * G)
    seed_idx = torch.randint(G, (B,), device=centers.device, generator=generator)
    seed = centers[torch.arange(B, device=centers.device), seed_idx]          # (B, 3)
    dist = ((centers - seed[:, None]) ** 2).sum(-1)                           # (B, G)
    ranks = dist.argsort(dim=1, stable=True).argsort(dim=1)
    return ranks < num_mask


class PointMAE(nn.Module):
    """Point-MAE pre-training model. forward(points (B, N, 3)) -> {"loss", ...}."""

    def __init__(self, num_groups=64, group_size=32, embed_dim=384, depth=12, num_heads=6,
                 decoder_depth=4, decoder_num_heads=6, mlp_ratio=4.0, mask_ratio=0.6, mask_type="random",
                 drop_path_rate=0.1, patch_embed_width=256, pred_init_std: Optional[float] = 1e-3):
        """pred_init_std: std of the normal initialisation of the point-prediction layer's weights
        (bias zero); None keeps PyTorch's default Conv1d initialisation, as the official code does.
        With the default initialisation the first predicted patches are ~10x the size of real ones
        (spread ~0.6 against ~0.05), so the first steps are spent shrinking them, and those large,
        coherent gradients wash out the encoder: on the embedded shapes the linear-SVM accuracy of the
        pooled features fell from 82.5 % (random weights) to 68.5 % within 25 steps and climbed back
        only slowly. Started small, the prediction is a near-zero patch at its centre (loss ~0.01, the
        patches' own spread) and the encoder learns from the start (80 % after 200 steps, rising;
        benchmarks/point_mae.md). After the paper's 300 epochs the choice should not matter."""
        super().__init__()
        if mask_type not in ("random", "block"):
            raise ValueError(f"PointMAE: mask_type must be 'random' or 'block', got {mask_type!r}")
        if not 0.0 <= mask_ratio < 1.0:
            raise ValueError(f"PointMAE: mask_ratio must be in [0, 1), got {mask_ratio}")
        self.num_groups, self.group_size = num_groups, group_size
        self.mask_ratio, self.mask_type = mask_ratio, mask_type

        # encoder: visible patches only
        self.encoder = PointTransformerEncoder(embed_dim, depth, num_heads, mlp_ratio, drop_path_rate,
                                               patch_embed_width)

        # decoder: visible tokens + one shared mask token per masked patch
        self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.decoder_pos_embed = _pos_mlp(embed_dim)
        rates = torch.linspace(0, drop_path_rate, decoder_depth).tolist()
        self.decoder_blocks = nn.ModuleList(
            [Block(embed_dim, decoder_num_heads, mlp_ratio, drop_path=r) for r in rates])
        self.decoder_norm = nn.LayerNorm(embed_dim)
        self.decoder_pred = nn.Conv1d(embed_dim, 3 * group_size, 1)   # token -> K points (xyz)
        self.initialize_weights(pred_init_std)

    def initialize_weights(self, pred_init_std: Optional[float]):
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        init_linear_and_layernorm(self)
        if pred_init_std is not None:
            nn.init.normal_(self.decoder_pred.weight, std=pred_init_std)
            nn.init.zeros_(self.decoder_pred.bias)

    def patchify(self, points):
        """points (B, N, 3) -> (neighborhoods (B, G, K, 3), centers (B, G, 3))."""
        return group_points(points, self.num_groups, self.group_size)

    def make_mask(self, centers, generator=None):
        if self.mask_type == "block":
            return block_masking(centers, self.mask_ratio, generator)
        return random_masking(centers.shape[0], centers.shape[1], self.mask_ratio, centers.device, generator)

    def forward_encoder(self, neighborhoods, centers, mask):
        """-> visible tokens (B, G_vis, C). Every sample has the same number of visible patches."""
        B, G = mask.shape
        tokens = self.encoder.patch_embed(neighborhoods)                # (B, G, C)
        visible = ~mask
        x = tokens[visible].reshape(B, -1, tokens.shape[-1])            # (B, G_vis, C)
        pos = self.encoder.pos_embed(centers[visible].reshape(B, -1, 3))
        return self.encoder.forward_tokens(x, pos)

    def forward_decoder(self, x_vis, centers, mask):
        """-> predicted points of the masked patches, (B * G_mask, K, 3), relative to their centres."""
        B, G = mask.shape
        C = x_vis.shape[-1]
        num_mask = int(mask[0].sum())
        pos_vis = self.decoder_pos_embed(centers[~mask].reshape(B, -1, 3))
        pos_mask = self.decoder_pos_embed(centers[mask].reshape(B, -1, 3))
        x = torch.cat([x_vis, self.mask_token.expand(B, num_mask, C)], dim=1)
        pos = torch.cat([pos_vis, pos_mask], dim=1)
        for blk in self.decoder_blocks:
            x = blk(x + pos)
        x = self.decoder_norm(x[:, -num_mask:])                          # (B, G_mask, C)
        pred = self.decoder_pred(x.transpose(1, 2)).transpose(1, 2)      # (B, G_mask, 3K)
        return pred.reshape(B * num_mask, self.group_size, 3)

    def forward_loss(self, pred, neighborhoods, mask):
        """Chamfer-L2 between predicted and true points of every masked patch (the paper's loss)."""
        target = neighborhoods[mask]                                     # (B * G_mask, K, 3)
        return chamfer_loss_l2(pred, None, target, None)

    def forward(self, batch, generator: Optional[torch.Generator] = None) -> Dict[str, torch.Tensor]:
        """batch: points (B, N, 3), or a (points, labels) pair as the data loader yields it."""
        points = batch[0] if isinstance(batch, (list, tuple)) else batch
        points = points[..., :3].contiguous()
        neighborhoods, centers = self.patchify(points)
        mask = self.make_mask(centers, generator)
        x_vis = self.forward_encoder(neighborhoods, centers, mask)
        pred = self.forward_decoder(x_vis, centers, mask)
        loss = self.forward_loss(pred, neighborhoods, mask)
        return {"loss": loss, "pred": pred, "mask": mask, "centers": centers, "neighborhoods": neighborhoods}


    @torch.no_grad()
    def extract_features(self, points: torch.Tensor) -> torch.Tensor:
        """Frozen-feature protocol (linear SVM): the encoder on ALL patches, max- and mean-pooled
        tokens concatenated. points (B, N, 3) -> (B, 2C)."""
        neighborhoods, centers = self.patchify(points[..., :3].contiguous())
        x = self.encoder.forward_tokens(self.encoder.patch_embed(neighborhoods), self.encoder.pos_embed(centers))
        return torch.cat([x.max(dim=1).values, x.mean(dim=1)], dim=-1)

    @torch.no_grad()
    def visualize(self, batch, outputs) -> Dict[str, "np.ndarray"]:
        """Reconstruction picture of the first cloud of a batch: input, visible patches, and visible
        patches plus the predicted masked ones (the paper's Fig. 3 layout)."""
        from pointmae.viz.points3d import render_points, side_by_side
        mask, centers, nbh, pred = (outputs["mask"][:1], outputs["centers"][:1], outputs["neighborhoods"][:1],
                                    outputs["pred"])
        num_mask = int(mask[0].sum())
        visible = (nbh[0][~mask[0]] + centers[0][~mask[0]][:, None]).reshape(-1, 3)
        predicted = (pred[:num_mask] + centers[0][mask[0]][:, None]).reshape(-1, 3)
        points = batch[0] if isinstance(batch, (list, tuple)) else batch
        blue, red = (40, 90, 200), (220, 60, 40)
        recon = torch.cat([visible, predicted]).float().cpu().numpy()
        colors = [blue] * len(visible) + [red] * len(predicted)
        images = [render_points(points[0, :, :3].float().cpu().numpy(), size=224),
                  render_points(visible.float().cpu().numpy(), size=224),
                  render_points(recon, colors=colors, size=224)]
        return {"reconstruction": side_by_side(images, ["input", f"visible ({1 - self.mask_ratio:.0%})",
                                                        "reconstruction (red: predicted)"])}


class PointMAEClassifier(nn.Module):
    """Fine-tuning model: the encoder on all patches, a cls token, and an MLP head on the
    concatenation of the cls token and the max-pooled patch tokens (the paper's classification head)."""

    def __init__(self, num_classes=40, num_groups=64, group_size=32, embed_dim=384, depth=12, num_heads=6,
                 mlp_ratio=4.0, drop_path_rate=0.1, head_dropout=0.5, patch_embed_width=256):
        super().__init__()
        self.num_groups, self.group_size = num_groups, group_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.cls_pos = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.encoder = PointTransformerEncoder(embed_dim, depth, num_heads, mlp_ratio, drop_path_rate,
                                               patch_embed_width)
        self.head = nn.Sequential(
            nn.Linear(2 * embed_dim, 256), nn.BatchNorm1d(256), nn.ReLU(inplace=True), nn.Dropout(head_dropout),
            nn.Linear(256, 256), nn.BatchNorm1d(256), nn.ReLU(inplace=True), nn.Dropout(head_dropout),
            nn.Linear(256, num_classes))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.cls_pos, std=0.02)

    def forward_features(self, points: torch.Tensor) -> torch.Tensor:
        """points (B, N, 3) -> (B, 2C): cls token and max over patch tokens."""
        neighborhoods, centers = group_points(points, self.num_groups, self.group_size)
        tokens = self.encoder.patch_embed(neighborhoods)
        pos = self.encoder.pos_embed(centers)
        B = points.shape[0]
        x = torch.cat([self.cls_token.expand(B, -1, -1), tokens], dim=1)
        pos = torch.cat([self.cls_pos.expand(B, -1, -1), pos], dim=1)
        x = self.encoder.forward_tokens(x, pos)
        return torch.cat([x[:, 0], x[:, 1:].max(dim=1).values], dim=-1)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(points))


# Size variants --------------------------------------------------------------------------------------
def point_mae_small(**kwargs) -> PointMAE:
    """The paper's model (29.0 M parameters)."""
    return PointMAE(embed_dim=384, depth=12, num_heads=6, decoder_depth=4, decoder_num_heads=6, **kwargs)


def point_mae_tiny(**kwargs) -> PointMAE:
    """A small model for CPU experiments and tests."""
    return PointMAE(embed_dim=192, depth=4, num_heads=3, decoder_depth=2, decoder_num_heads=3, **kwargs)
