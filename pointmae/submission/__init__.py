"""Benchmark submission files (writers and validators): kitti.py, and one module per benchmark.

The prediction contract every evaluator and writer takes
--------------------------------------------------------
A list with one entry per frame, each a dict::

    {"frame_id": str,                  # the dataset's frame id (KITTI "000123", nuScenes sample token, ...)
     "boxes":  (M, 7) or (M, 9) float64 numpy, pointmae's sensor-frame boxes (pointmae/data/frame.py):
               x, y, z (geometric centre), dx, dy, dz (length, width, height), heading[, vx, vy],
     "scores": (M,) float,
     "names":  (M,) str class names, spelled as the dataset spells them}

On disk (what tools/finetune_det.py writes and tools/submit.py reads): a pickle file (``.pkl``) of
``{"format": "pointmae-predictions", "version": 1, "predictions": [...the list above...]}``, written
with :func:`save_predictions` and read back, checked, with :func:`load_predictions`.
"""
from pointmae.submission.predictions import (PREDICTIONS_FORMAT, PREDICTIONS_VERSION, check_predictions,
                                             load_predictions, save_predictions)

__all__ = ["PREDICTIONS_FORMAT", "PREDICTIONS_VERSION", "check_predictions", "load_predictions",
           "save_predictions"]
