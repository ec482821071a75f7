"""Bird's-eye-view PNG of a LiDAR frame with its boxes (and optionally predicted boxes).

Works for any pointmae Frame (real or synthetic): points are drawn from above (x up the image,
y to the left, like looking down on the car driving up the page) coloured by height, boxes as
oriented rectangles with a heading tick. Pillow only; no GUI.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pointmae.data.boxes import box_corners

GROUND_TRUTH_COLOUR = (60, 220, 60)
PREDICTION_COLOUR = (240, 60, 60)


def _require_pillow():
    try:
        from PIL import Image, ImageDraw
    except ImportError as exc:  # pragma: no cover
        raise ImportError("the bird's-eye-view renderer needs Pillow: pip install pillow") from exc
    return Image, ImageDraw


def _height_colours(z: np.ndarray, z_range=(-2.5, 2.5)) -> np.ndarray:
    """(N, 3) uint8: a blue -> cyan -> yellow -> red ramp over z."""
    v = np.clip((z - z_range[0]) / (z_range[1] - z_range[0]), 0, 1)
    stops = np.array([[40, 60, 200], [40, 200, 230], [240, 230, 60], [240, 70, 40]], dtype=np.float64)
    pos = v * (len(stops) - 1)
    i = np.minimum(pos.astype(int), len(stops) - 2)
    f = (pos - i)[:, None]
    return (stops[i] * (1 - f) + stops[i + 1] * f).astype(np.uint8)


def render_bev(points: np.ndarray, boxes: np.ndarray | None = None, predictions: np.ndarray | None = None,
               x_range=(-40.0, 70.0), y_range=(-40.0, 40.0), resolution: float = 0.1,
               labels=None, prediction_labels=None, z_range=(-2.5, 2.5), prediction_scores=None):
    """A PIL image. points (N, >=3); boxes / predictions (M, >=7) in the same frame; `resolution`
    metres per pixel. Image row 0 is x_range[1] (ahead), column 0 is y_range[1] (left).
    Predictions are labelled with their class and, when given, their score."""
    Image, ImageDraw = _require_pillow()
    height = int(round((x_range[1] - x_range[0]) / resolution))
    width = int(round((y_range[1] - y_range[0]) / resolution))
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    pts = np.asarray(points, dtype=np.float64)
    rows = ((x_range[1] - pts[:, 0]) / resolution).astype(np.int64)
    cols = ((y_range[1] - pts[:, 1]) / resolution).astype(np.int64)
    inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
    order = np.argsort(pts[inside, 2])            # higher points drawn last, on top
    r, c = rows[inside][order], cols[inside][order]
    canvas[r, c] = _height_colours(pts[inside, 2][order], z_range)
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)

    def to_pixel(xy):
        return [((y_range[1] - y) / resolution, (x_range[1] - x) / resolution) for x, y in xy]

    def draw_boxes(bxs, colour, names):
        if bxs is None or len(bxs) == 0:
            return
        bxs = np.asarray(bxs, dtype=np.float64)
        corners = box_corners(bxs[:, :7])[:, :4, :2]
        for m, quad in enumerate(corners):
            draw.polygon(to_pixel(quad), outline=colour)
            centre = bxs[m, :2]
            front = (quad[0] + quad[3]) / 2                 # middle of the +dx face
            draw.line(to_pixel([centre, front]), fill=colour, width=2)
            if names is not None:
                px = to_pixel([quad[0]])[0]
                text = str(names[m])
                draw.text((px[0] + 2, px[1] - 10), text if " " in text else text[:3], fill=colour)

    draw_boxes(boxes, GROUND_TRUTH_COLOUR, labels)
    if prediction_scores is not None:
        names = prediction_labels if prediction_labels is not None else [""] * len(prediction_scores)
        prediction_labels = [f"{str(n)[:3]} {float(v):.2f}".strip() for n, v in zip(names, prediction_scores)]
    draw_boxes(predictions, PREDICTION_COLOUR, prediction_labels)
    # The sensor.
    sx, sy = to_pixel([(0.0, 0.0)])[0]
    draw.ellipse([sx - 3, sy - 3, sx + 3, sy + 3], outline=(255, 255, 255))
    return image


def save_frame_bev(frame, path, predictions=None, **kwargs) -> Path:
    """Render a pointmae Frame (numpy or torch points) and its boxes to a PNG at `path`;
    `predictions` (M, >=7) with optional prediction_labels / prediction_scores in kwargs."""
    points = frame.to_numpy().points if hasattr(frame, "to_numpy") else frame.points
    image = render_bev(points, frame.boxes, predictions, labels=frame.names, **kwargs)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path
