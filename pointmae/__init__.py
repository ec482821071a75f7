"""pointmae: self-supervised pre-training on point clouds and LiDAR, with C++/CUDA kernels."""
from pointmae._extension import WITH_CUDA  # noqa: F401  (fails with a clear message if _C is missing)
from pointmae import ops  # noqa: F401

__version__ = "0.1.0"
