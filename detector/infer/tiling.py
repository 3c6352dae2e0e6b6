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
    """One square tile in source-raster pixels (col, row), with the core it owns."""

    row: int
    col: int
    x0: int
    y0: int
    size: int
    core: tuple[float, float, float, float]  # xmin, ymin, xmax, ymax (half-open, may be inf)

    @property
    def name(self) -> str:
        """Tile id used in outputs, e.g. ``"r3c7"``."""
        return f"r{self.row}c{self.col}"

    @property
    def window(self) -> Window:
        """The rasterio window of the whole tile (may reach past the scene edge)."""
        return Window(self.x0, self.y0, self.size, self.size)

    def owns(self, centres: np.ndarray, margin: float = 0.0) -> np.ndarray:
        """Boolean mask of the (N, 2) centres in this tile's core grown by ``margin`` px.

        Neighbouring tiles place the same car's centre slightly differently; a small margin
        keeps a car whose centre each tile puts just outside its own core (the duplicates
        this creates are left to rotated-box suppression).
        """
        centres = np.asarray(centres, dtype=float).reshape(-1, 2)
        xmin, ymin, xmax, ymax = self.core
        x, y = centres[:, 0], centres[:, 1]
        return ((x >= xmin - margin) & (x < xmax + margin)
                & (y >= ymin - margin) & (y < ymax + margin))


def core_bounds(starts: list[int], size: int) -> list[tuple[float, float]]:
    """Half-open core interval per tile along one axis: mid-overlap boundaries, open ends."""
    cuts = [(nxt + cur + size) / 2 for cur, nxt in zip(starts, starts[1:], strict=False)]
    edges = [-math.inf, *cuts, math.inf]
    return list(zip(edges[:-1], edges[1:], strict=True))


def tile_grid(width: int, height: int, size: int, overlap: int) -> list[Tile]:
    """Row-major grid of square tiles covering a ``width`` × ``height`` scene.

    Args:
        width, height: scene size in source pixels.
        size: tile side in source pixels.
        overlap: minimum overlap between neighbouring tiles in source pixels.
    """
    if size <= 0 or not 0 <= overlap < size:
        raise ValueError(f"need 0 <= overlap ({overlap}) < tile size ({size})")
    xs = window_starts(0, width, size, size - overlap)
    ys = window_starts(0, height, size, size - overlap)
    x_cores, y_cores = core_bounds(xs, size), core_bounds(ys, size)
    return [Tile(r, c, x0, y0, size, (xc[0], yc[0], xc[1], yc[1]))
            for r, (y0, yc) in enumerate(zip(ys, y_cores, strict=True))
            for c, (x0, xc) in enumerate(zip(xs, x_cores, strict=True))]
