"""Placeholder until the op benchmarks land (issue 2)."""
import pointmae
print("pointmae", pointmae.__version__, "CUDA kernels:", pointmae.WITH_CUDA)
