"""Public point-cloud ops. Each family lives in its own file; kernels are in csrc/."""
from pointmae.ops._batch import offsets_from_sizes, to_packed  # noqa: F401
from pointmae.ops.boxes import box_iou_3d, box_iou_bev, nms_bev  # noqa: F401
