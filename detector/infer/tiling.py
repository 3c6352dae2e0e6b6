"""Pure tile grid over a scene: overlapping windows, each with a core region it owns.

Cores partition the plane: the boundary between two neighbouring tiles lies in the middle
of their overlap, and edge tiles own everything beyond the scene edge. A detection belongs
to the tile whose core contains its centre. With an overlap of at least one car length,
every car owned by a tile lies wholly inside that tile, so seams neither cut nor double
count cars.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from rasterio.windows import Window

from detector.geometry import window_starts


@dataclass(frozen=True)
class Tile:
    """One tile in source-raster pixels (col, row), with the core it owns.

    ``size`` columns by ``rows`` rows (None: square). A tile covers the same ground along
    both axes, so it is square in source pixels unless the scene's pixels are not square on
    the ground (see :func:`detector.raster.ground_resolution`).
    """

    row: int
    col: int
    x0: int
    y0: int
    size: int
    core: tuple[float, float, float, float]  # xmin, ymin, xmax, ymax (half-open, may be inf)
    rows: int | None = None

    @property
    def height(self) -> int:
        """Rows of source pixels the tile spans."""
        return self.size if self.rows is None else self.rows

    @property
    def shape(self) -> tuple[int, int]:
        """(columns, rows) of source pixels the tile spans."""
        return self.size, self.height

    @property
    def name(self) -> str:
        """Tile id used in outputs, e.g. ``"r3c7"``."""
        return f"r{self.row}c{self.col}"

    @property
    def window(self) -> Window:
        """The rasterio window of the whole tile (may reach past the scene edge)."""
        return Window(self.x0, self.y0, self.size, self.height)

    def owns(self, centres: np.ndarray, margin: float | tuple[float, float] = 0.0
             ) -> np.ndarray:
        """Boolean mask of the (N, 2) centres in this tile's core grown by ``margin`` px
        (one number, or (columns, rows)).

        Neighbouring tiles place the same car's centre slightly differently; a small margin
        keeps a car whose centre each tile puts just outside its own core (the duplicates
        this creates are left to rotated-box suppression).
        """
        centres = np.asarray(centres, dtype=float).reshape(-1, 2)
        mx, my = (margin, margin) if isinstance(margin, int | float) else margin
        xmin, ymin, xmax, ymax = self.core
        x, y = centres[:, 0], centres[:, 1]
        return ((x >= xmin - mx) & (x < xmax + mx) & (y >= ymin - my) & (y < ymax + my))


def core_bounds(starts: list[int], size: int) -> list[tuple[float, float]]:
    """Half-open core interval per tile along one axis: mid-overlap boundaries, open ends."""
    cuts = [(nxt + cur + size) / 2 for cur, nxt in zip(starts, starts[1:], strict=False)]
    edges = [-math.inf, *cuts, math.inf]
    return list(zip(edges[:-1], edges[1:], strict=True))


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def tile_grid(width: int, height: int, size: int | tuple[int, int],
              overlap: int | tuple[int, int]) -> list[Tile]:
    """Row-major grid of tiles covering a ``width`` × ``height`` scene.

    Args:
        width, height: scene size in source pixels.
        size: tile side in source pixels, or (columns, rows) for non-square pixels.
        overlap: minimum overlap between neighbouring tiles in source pixels (or per axis).
    """
    (sx, sy), (ox, oy) = _pair(size), _pair(overlap)
    for side, over in ((sx, ox), (sy, oy)):
        if side <= 0 or not 0 <= over < side:
            raise ValueError(f"need 0 <= overlap ({over}) < tile size ({side})")
    xs = window_starts(0, width, sx, sx - ox)
    ys = window_starts(0, height, sy, sy - oy)
    x_cores, y_cores = core_bounds(xs, sx), core_bounds(ys, sy)
    rows = None if sy == sx else sy
    return [Tile(r, c, x0, y0, sx, (xc[0], yc[0], xc[1], yc[1]), rows)
            for r, (y0, yc) in enumerate(zip(ys, y_cores, strict=True))
            for c, (x0, xc) in enumerate(zip(xs, x_cores, strict=True))]
