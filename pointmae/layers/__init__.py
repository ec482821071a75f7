"""Transformer building blocks shared by the models (timm-style, written here)."""
from pointmae.layers.attention import Attention  # noqa: F401
from pointmae.layers.block import Block  # noqa: F401
from pointmae.layers.drop_path import DropPath  # noqa: F401
from pointmae.layers.mlp import Mlp  # noqa: F401
from pointmae.layers.cross_attention import CrossAttention, CrossBlock  # noqa: F401
