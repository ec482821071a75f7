import numpy as np

from pointmae.data.kitti import KittiObjectDataset
from pointmae.viz.bev import GROUND_TRUTH_COLOUR, PREDICTION_COLOUR, render_bev, save_frame_bev


def test_bev_of_real_frame_with_predictions(shared_data, tmp_path):
    frame = KittiObjectDataset(shared_data / "kitti", split=None)[1]
    predictions = frame.boxes.copy()
    predictions[:, 0] += 1.0
    path = save_frame_bev(frame, tmp_path / "bev.png", predictions=predictions,
                          prediction_labels=frame.names, prediction_scores=np.linspace(0.9, 0.5, len(predictions)))
    from PIL import Image
    image = np.asarray(Image.open(path))
    assert image.shape == (1100, 800, 3)
    assert (image.sum(axis=2) > 0).mean() > 0.05                     # points drawn
    assert (image == GROUND_TRUTH_COLOUR).all(axis=2).sum() > 50     # boxes drawn
    assert (image == PREDICTION_COLOUR).all(axis=2).sum() > 50


def test_bev_geometry():
    # One point 10 m ahead and 5 m to the left lands at the expected pixel.
    image = np.asarray(render_bev(np.array([[10.0, 5.0, 0.0]]), x_range=(0, 20), y_range=(-10, 10), resolution=1.0))
    assert image.shape == (20, 20, 3)
    row, col = np.argwhere(image.sum(axis=2) > 0)[0]
    assert (row, col) == (10, 5)
