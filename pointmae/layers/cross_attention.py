import torch
from torch import nn
import torch.nn.functional as F

from pointmae.layers.drop_path import DropPath
from pointmae.layers.mlp import Mlp


class CrossAttention(nn.Module):
    """Multi-head cross-attention: queries from ``x`` (B, Lq, C), keys and values from ``context``
    (B, Lk, C), computed with PyTorch's fused scaled_dot_product_attention.

    key_mask: optional (B, Lk) bool, True for context tokens that may be attended to (padding is
    False). Every row must have at least one True key; a row without any key has no defined output
    (callers leave such rows out, see pointmae.models.temporal_mae.WindowCrossAttention).
    """

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = False, attn_drop: float = 0.0,
                 proj_drop: float = 0.0):
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"CrossAttention: dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, context: torch.Tensor, key_mask: torch.Tensor = None) -> torch.Tensor:
        B, Lq, C = x.shape
        Lk = context.shape[1]
        q = self.q(x).reshape(B, Lq, self.num_heads, self.head_dim).transpose(1, 2)       # (B, h, Lq, d)
        kv = self.kv(context).reshape(B, Lk, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        k, v = kv.unbind(0)                                                                 # (B, h, Lk, d)
        mask = None if key_mask is None else key_mask[:, None, None, :]
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                           dropout_p=self.attn_drop if self.training else 0.0)
        x = x.transpose(1, 2).reshape(B, Lq, C)
        return self.proj_drop(self.proj(x))


class CrossBlock(nn.Module):
    """Pre-norm cross-attention block: x + DropPath(CrossAttn(LN(x), LN(context))), then
    x + DropPath(MLP(LN(x))) -- the decoder layer of Vaswani et al. 2017 without its self-attention,
    in the pre-norm arrangement of pointmae.layers.Block."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = False,
                 drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0):
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.attn = CrossAttention(dim, num_heads=num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop,
                                   proj_drop=drop)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)

    def forward(self, x, context, key_mask=None):
        x = x + self.drop_path(self.attn(self.norm_q(x), self.norm_kv(context), key_mask))
        return x + self.drop_path(self.mlp(self.norm2(x)))
