"""Oriented boxes and polygons: conversions, coordinate transforms, rotated IoU."""

from __future__ import annotations

import numpy as np
from affine import Affine
from shapely.geometry import Polygon


def obb_corners(cx: float, cy: float, length: float, width: float, angle: float) -> np.ndarray:
    """Corners (4, 2) of a rectangle centred at (cx, cy), ``length`` along ``angle`` (radians).

    Corner order goes round the rectangle (no self-intersection).
    """
    along = np.array([np.cos(angle), np.sin(angle)]) * length / 2
    across = np.array([-np.sin(angle), np.cos(angle)]) * width / 2
    centre = np.array([cx, cy])
    return np.stack([centre - along - across, centre + along - across,
                     centre + along + across, centre - along + across])


def corners_to_obb(corners: np.ndarray) -> tuple[float, float, float, float, float]:
    """(cx, cy, length, width, angle) of the minimum rotated rectangle around ``corners``.

    ``length >= width``; ``angle`` is the direction of the long side in [0, pi).
    """
    rect = Polygon(np.asarray(corners, dtype=float)).minimum_rotated_rectangle
    pts = np.asarray(rect.exterior.coords)[:4]
    edge_a, edge_b = pts[1] - pts[0], pts[2] - pts[1]
    la, lb = float(np.hypot(*edge_a)), float(np.hypot(*edge_b))
    long_edge = edge_a if la >= lb else edge_b
    angle = float(np.arctan2(long_edge[1], long_edge[0]) % np.pi)
    cx, cy = pts.mean(axis=0)
    return float(cx), float(cy), max(la, lb), min(la, lb), angle


def apply_affine(coords: np.ndarray, transform: Affine) -> np.ndarray:
    """Apply an affine transform to (N, 2) coordinates (e.g. pixel → map with the raster's)."""
    coords = np.asarray(coords, dtype=float)
    a, b, c, d, e, f = transform.a, transform.b, transform.c, transform.d, transform.e, transform.f
    x, y = coords[..., 0], coords[..., 1]
    return np.stack([a * x + b * y + c, d * x + e * y + f], axis=-1)


def pixel_to_map(coords: np.ndarray, transform: Affine) -> np.ndarray:
    """Pixel (col, row) coordinates to map coordinates with the raster transform."""
    return apply_affine(coords, transform)


def map_to_pixel(coords: np.ndarray, transform: Affine) -> np.ndarray:
    """Map coordinates to pixel (col, row) coordinates with the raster transform."""
    return apply_affine(coords, ~transform)


def polygon_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two simple polygons given as (N, 2) coordinates."""
    pa, pb = Polygon(a), Polygon(b)
    if not (pa.is_valid and pb.is_valid):
        pa, pb = pa.buffer(0), pb.buffer(0)
    inter = pa.intersection(pb).area
    union = pa.area + pb.area - inter
    return float(inter / union) if union > 0 else 0.0


def visible_fraction(corners: np.ndarray, box: tuple[float, float, float, float]) -> float:
    """Share of a polygon's area inside the axis-aligned ``box`` (xmin, ymin, xmax, ymax)."""
    poly = Polygon(corners)
    if poly.area <= 0:
        return 0.0
    xmin, ymin, xmax, ymax = box
    clip = Polygon([(xmin, ymin), (xmax, ymin), (xmax, ymax), (xmin, ymax)])
    return float(poly.intersection(clip).area / poly.area)


def window_starts(start: int, stop: int, side: int, stride: int) -> list[int]:
    """Starts of windows of ``side`` covering [start, stop), ``stride`` apart.

    The last window is pulled back to end at ``stop`` so no window leaves the range; a
    range no longer than one window gets a single window at ``start`` (reaching past
    ``stop``). Dataset chips and inference tiles are both laid out with this.
    """
    if stop - start <= side:
        return [start]
    starts = list(range(start, stop - side, max(1, stride)))
    starts.append(stop - side)
    return starts
