"""3D backbones for LiDAR: sparse convolution (spconv) and sparse window transformers.

Nothing is imported here, so that importing one backbone does not require the others' dependencies.
"""
