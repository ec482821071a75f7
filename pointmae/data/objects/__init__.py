"""Object point-cloud datasets (Point-MAE): the embedded procedural shapes and the readers of
ModelNet40, ScanObjectNN and ShapeNet-55."""
from pointmae.data.objects.readers import (DataFileError, modelnet40_h5, modelnet40_pickle,  # noqa: F401
                                           modelnet40_txt, scanobjectnn, shapenet55)
from pointmae.data.objects.shapes import CLASS_NAMES, SyntheticShapes, make_shape  # noqa: F401
