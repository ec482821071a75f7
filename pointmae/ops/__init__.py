"""Public point-cloud ops. Each family lives in its own file; kernels are in csrc/."""
from pointmae.ops._batch import offsets_from_sizes, to_packed  # noqa: F401
from pointmae.ops.fps import fps  # noqa: F401
from pointmae.ops.neighbors import ball_query, knn  # noqa: F401
from pointmae.ops.grouping import gather_points, group_points  # noqa: F401
from pointmae.ops.chamfer import chamfer_distance, chamfer_loss_l1, chamfer_loss_l2, safe_sqrt  # noqa: F401
from pointmae.ops.voxelize import DynamicVoxels, Voxels, scatter_to_voxels, voxelize, voxelize_dynamic  # noqa: F401
from pointmae.ops.boxes import box_iou_3d, box_iou_bev, nms_bev  # noqa: F401
