"""Small software renderer for object point clouds: orthographic view from a chosen elevation and
azimuth, points drawn as depth-shaded squares with a z-buffer. No display, no OpenGL: numpy + pillow,
so it runs on headless CPU machines and in CI."""
import math
from typing import List, Optional, Sequence

import numpy as np


def _view_matrix(elev_deg: float, azim_deg: float) -> np.ndarray:
    a, e = math.radians(azim_deg), math.radians(elev_deg)
    rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, math.cos(e), -math.sin(e)], [0, math.sin(e), math.cos(e)]])
    # camera looks along +y after rotation; screen x = world x', screen up = world z'
    return rx @ rz


def render_points(points, colors=None, size: int = 256, elev: float = 20.0, azim: float = 45.0,
                  point_px: int = 2, extent: float = 1.1) -> np.ndarray:
    """points (N, 3) in roughly [-extent, extent]^3 -> (size, size, 3) uint8 image on white.
    colors: (N, 3) uint8 or one RGB triple; nearer points are drawn on top and shaded brighter."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    img = np.full((size, size, 3), 255, np.uint8)
    if len(pts) == 0:
        return img
    cam = pts @ _view_matrix(elev, azim).T
    u = ((cam[:, 0] / extent + 1) * 0.5 * (size - 1)).round().astype(int)
    v = ((1 - (cam[:, 2] / extent + 1) * 0.5) * (size - 1)).round().astype(int)
    depth = cam[:, 1]                                   # larger = farther from the viewer
    if colors is None:
        colors = np.array([40, 90, 200], np.uint8)
    colors = np.broadcast_to(np.asarray(colors, np.uint8), (len(pts), 3)).astype(np.float64)
    shade = 1.0 - 0.45 * (depth - depth.min()) / max(np.ptp(depth), 1e-9)
    rgb = (colors * shade[:, None] + 255 * (1 - shade[:, None]) * 0.3).clip(0, 255).astype(np.uint8)
    order = np.argsort(-depth, kind="stable")          # far to near: near points overwrite
    for i in order:
        if 0 <= u[i] < size and 0 <= v[i] < size:
            img[max(v[i] - point_px // 2, 0): v[i] + (point_px + 1) // 2,
                max(u[i] - point_px // 2, 0): u[i] + (point_px + 1) // 2] = rgb[i]
    return img


def side_by_side(images: Sequence[np.ndarray], titles: Optional[List[str]] = None, pad: int = 4) -> np.ndarray:
    """Concatenates equally sized RGB images horizontally, with optional titles drawn above each."""
    from PIL import Image, ImageDraw
    h, w = images[0].shape[:2]
    title_h = 16 if titles else 0
    canvas = Image.new("RGB", (len(images) * (w + pad) - pad, h + title_h), "white")
    draw = ImageDraw.Draw(canvas)
    for i, im in enumerate(images):
        canvas.paste(Image.fromarray(im), (i * (w + pad), title_h))
        if titles:
            draw.text((i * (w + pad) + 4, 2), titles[i], fill=(0, 0, 0))
    return np.asarray(canvas)


def save_png(image: np.ndarray, path: str):
    from PIL import Image
    Image.fromarray(image).save(path)
