"""Public point-cloud ops. Each family lives in its own file; kernels are in csrc/."""
from pointmae.ops._batch import offsets_from_sizes, to_packed  # noqa: F401
from pointmae.ops.fps import fps  # noqa: F401
from pointmae.ops.neighbors import ball_query, knn  # noqa: F401
