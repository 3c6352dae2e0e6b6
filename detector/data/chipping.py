"""Pure chip geometry: the chip grid over a scene region and the min-visible clip rule.

A chip is a square window of ``side`` source pixels read (resampled) into ``size`` output
pixels, so one grid works for every scene resolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from shapely.geometry import Polygon, box

from detector.geometry import corners_to_obb, window_starts
from detector.labels import LabelledPolygon

# visible_fraction is an area ratio from shapely; keep a car that sits at exactly min_visible.
_VISIBLE_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Chip:
    """A source window at (col, row) of ``side`` columns by ``side_y`` rows (None: square),
    written as ``size`` x ``size`` px.

    The window covers the same ground along both axes, so it is square in source pixels
    unless the scene's pixels are not square on the ground.
    """

    col: int
    row: int
    side: int
    size: int
    side_y: int | None = None

    @property
    def rows(self) -> int:
        """Rows of source pixels the window spans."""
        return self.side if self.side_y is None else self.side_y

    @property
    def window(self) -> int | tuple[int, int]:
        """The window's side as :func:`detector.raster.read_image` takes it."""
        return self.side if self.side_y is None else (self.side, self.side_y)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) of the window in source pixel coordinates."""
        return (self.col, self.row, self.col + self.side, self.row + self.rows)

    @property
    def scale(self) -> np.ndarray:
        """Output pixels per source pixel, (x, y)."""
        return np.array([self.size / self.side, self.size / self.rows])

    def to_chip(self, xy: np.ndarray) -> np.ndarray:
        """Source pixel coordinates (N, 2) to chip pixel coordinates."""
        return (np.asarray(xy, dtype=float) - (self.col, self.row)) * self.scale

    def to_scene(self, xy: np.ndarray) -> np.ndarray:
        """Chip pixel coordinates (N, 2) back to source pixel coordinates."""
        return np.asarray(xy, dtype=float) / self.scale + (self.col, self.row)


def inside_share(chip: Chip, width: int, height: int) -> float:
    """Share of ``chip``'s area that lies inside a ``width`` x ``height`` px scene.

    A chip of a scene smaller than one chip reaches past the scene's edge; that part is
    padding (written with the fill value), not nodata, so nodata shares are taken of the
    inside part only.
    """
    xmin, ymin, xmax, ymax = chip.bounds
    w = max(0.0, min(xmax, width) - max(xmin, 0))
    h = max(0.0, min(ymax, height) - max(ymin, 0))
    return w * h / float(chip.side * chip.rows)


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def chip_grid(region: tuple[int, int, int, int], side: int | tuple[int, int],
              stride: int | tuple[int, int], size: int) -> list[Chip]:
    """Chips covering ``region`` (col0, row0, col1, row1) in source pixels, row by row.

    ``side`` and ``stride`` are source pixels, one number or (columns, rows). Chips stay
    inside the region, so with block splits none reaches into a neighbouring block.
    """
    col0, row0, col1, row1 = region
    (sx, sy), (tx, ty) = _pair(side), _pair(stride)
    side_y = None if sy == sx else sy
    return [Chip(col, row, sx, size, side_y)
            for row in window_starts(row0, row1, sy, ty)
            for col in window_starts(col0, col1, sx, tx)]


def visible_part(corners: np.ndarray, bounds: tuple[float, float, float, float],
                 min_visible: float) -> np.ndarray | None:
    """The visible part of a vehicle as a rectangle along its body, or None if too hidden.

    Args:
        corners: (N, 2) body polygon.
        bounds: (xmin, ymin, xmax, ymax) of the chip.
        min_visible: least share of the body area that must lie inside ``bounds``.

    Returns:
        (4, 2) corners of the smallest rectangle aligned with the body that holds the
        visible part, or None when less than ``min_visible`` of the body is inside.
    """
    body = Polygon(np.asarray(corners, dtype=float))
    if not body.is_valid:
        body = body.buffer(0)
    if body.area <= 0:
        return None
    visible = body.intersection(box(*bounds))
    if visible.is_empty or visible.area / body.area < min_visible - _VISIBLE_TOLERANCE:
        return None
    cx, cy, _, _, angle = corners_to_obb(corners)
    along = np.array([np.cos(angle), np.sin(angle)])
    across = np.array([-np.sin(angle), np.cos(angle)])
    # Project the visible hull on the body axes; that keeps the label's orientation.
    pts = np.asarray(visible.convex_hull.exterior.coords) - (cx, cy)
    a, b = pts @ along, pts @ across
    centre = np.array([cx, cy])
    return np.stack([centre + a.min() * along + b.min() * across,
                     centre + a.max() * along + b.min() * across,
                     centre + a.max() * along + b.max() * across,
                     centre + a.min() * along + b.max() * across])


def chip_labels(polygons: list[LabelledPolygon], chip: Chip,
                min_visible: float) -> list[LabelledPolygon]:
    """Vehicles visible enough in ``chip``, clipped to it, in chip pixel coordinates."""
    out = []
    xmin, ymin, xmax, ymax = chip.bounds
    for poly in polygons:
        corners = np.asarray(poly.corners, dtype=float)
        # Cheap bounding-box reject before any shapely work.
        if (corners[:, 0].max() <= xmin or corners[:, 0].min() >= xmax
                or corners[:, 1].max() <= ymin or corners[:, 1].min() >= ymax):
            continue
        # In chip pixels, which are square on the ground (source pixels may not be): there
        # a body is still a rectangle.
        part = visible_part(chip.to_chip(corners), (0, 0, chip.size, chip.size), min_visible)
        if part is None:
            continue
        xy = np.clip(part, 0, chip.size)
        out.append(LabelledPolygon(xy, poly.cls, poly.properties))
    return out
