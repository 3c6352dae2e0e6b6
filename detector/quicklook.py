"""Draw oriented polygons over imagery: the shared core of every quicklook PNG."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from detector.atomic import atomic_path

# RGB colours per class; unknown classes get white.
CLASS_COLORS: dict[str, tuple[int, int, int]] = {
    "freight_car": (255, 215, 0),
    "covered_car": (255, 64, 255),
    "tank_car": (0, 220, 255),
    "locomotive": (255, 64, 64),
}


def class_color(cls: str) -> tuple[int, int, int]:
    """RGB colour of a class for drawing."""
    return CLASS_COLORS.get(cls, (255, 255, 255))


def draw_polygons(image: np.ndarray, polygons: Sequence[np.ndarray], classes: Sequence[str],
                  scale: float = 1.0, offset: tuple[float, float] = (0.0, 0.0),
                  thickness: int = 1) -> np.ndarray:
    """Return a copy of an RGB (H, W, 3) uint8 image with polygon outlines drawn on it.

    Args:
        image: the picture to draw on.
        polygons: pixel coordinates (N, 2) of each polygon in the source raster.
        classes: class name per polygon (sets its colour).
        scale: source pixels → picture pixels (e.g. 0.25 for a 4× downsampled view).
        offset: source pixel (col, row) that maps to the picture's (0, 0).
        thickness: line width in picture pixels.
    """
    canvas = np.ascontiguousarray(image.copy())
    shift = 4  # sub-pixel precision for cv2
    for corners, cls in zip(polygons, classes, strict=True):
        pts = (np.asarray(corners, dtype=float) - np.asarray(offset)) * scale
        pts = np.round(pts * (1 << shift)).astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(canvas, [pts], True, class_color(cls), thickness, cv2.LINE_AA, shift)
    return canvas


def to_rgb(bands: np.ndarray) -> np.ndarray:
    """(C, H, W) uint8 → (H, W, 3) RGB for display (first three bands; grey if one)."""
    if bands.shape[0] == 1:
        bands = np.repeat(bands, 3, axis=0)
    return np.ascontiguousarray(np.transpose(bands[:3], (1, 2, 0)))


def save_png(path: str | Path, image: np.ndarray) -> None:
    """Write an RGB image as PNG, atomically."""
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
            raise OSError(f"could not write {path}")
