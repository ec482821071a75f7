"""CenterPoint-style 3D detection, one concept per file:
voxelization.py (points -> voxels; the VFE is the LiDAR MAEs' pointmae.models.voxel_features.MeanVFE), bev.py (height compression,
pillar scatter, SECOND-style 2D backbone), targets.py (Gaussian heatmaps, box encoding), losses.py
(focal + L1), center_head.py, postprocess.py (top-k decoding, NMS), centerpoint.py (the model).
Pre-trained 3D encoders load through pointmae.models.pretrained.load_pretrained_encoder."""
from pointmae.models.detection.centerpoint import CenterPoint  # noqa: F401
