"""Public point-cloud ops. Each family lives in its own file; kernels are in csrc/."""
from pointmae.ops._batch import offsets_from_sizes, to_packed  # noqa: F401
from pointmae.ops.voxelize import DynamicVoxels, Voxels, scatter_to_voxels, voxelize, voxelize_dynamic  # noqa: F401
