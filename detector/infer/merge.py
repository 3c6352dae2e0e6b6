"""Seam-safe merging of per-tile detections: tile ownership + rotated-box suppression.

Methods are pluggable through :data:`MERGERS`; each takes the candidate arrays of a whole
scene (after per-tile ownership) and returns the indices to keep.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import shapely

from detector.infer.tiling import Tile


def centres(corners: np.ndarray) -> np.ndarray:
    """Centres (N, 2) of (N, 4, 2) boxes."""
    return np.asarray(corners, dtype=float).reshape(-1, 4, 2).mean(axis=1)


def owned(corners: np.ndarray, tile: Tile, margin: float | tuple[float, float] = 0.0
          ) -> np.ndarray:
    """Mask of the boxes (N, 4, 2, source pixels) whose centre lies in ``tile``'s core
    (grown by ``margin`` px)."""
    return tile.owns(centres(corners), margin)


def overlap_pairs(corners: np.ndarray, metric: str = "ios"
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All intersecting pairs (i < j) of (N, 4, 2) boxes and their overlap.

    Args:
        metric: ``"iou"`` (intersection over union) or ``"ios"`` (intersection over the
            smaller box: a car's half seen at a tile edge still matches the whole car).

    Returns:
        (i, j, overlap) arrays.
    """
    polys = shapely.polygons(np.asarray(corners, dtype=float).reshape(-1, 4, 2))
    polys = shapely.make_valid(polys)
    if len(polys) < 2:
        empty = np.zeros(0, dtype=int)
        return empty, empty, np.zeros(0)
    tree = shapely.STRtree(polys)
    i, j = tree.query(polys, predicate="intersects")
    keep = i < j
    i, j = i[keep], j[keep]
    inter = shapely.area(shapely.intersection(polys[i], polys[j]))
    area = shapely.area(polys)
    if metric == "iou":
        denom = area[i] + area[j] - inter
    elif metric == "ios":
        denom = np.minimum(area[i], area[j])
    else:
        raise ValueError(f"unknown overlap metric {metric!r}; use iou or ios")
    overlap = np.divide(inter, denom, out=np.zeros_like(inter), where=denom > 0)
    return i, j, overlap


def suppress_rotated(corners: np.ndarray, scores: np.ndarray, tile_ids: np.ndarray,
                     threshold: float = 0.3, metric: str = "ios",
                     cross_tile_only: bool = True) -> np.ndarray:
    """Greedy class-agnostic suppression of rotated boxes; returns kept indices (sorted).

    Only pairs from different tiles compete when ``cross_tile_only``: within a tile the
    model's own NMS already ran, and neighbouring coupled cars must both survive.
    """
    n = len(scores)
    if n == 0:
        return np.zeros(0, dtype=int)
    i, j, overlap = overlap_pairs(corners, metric)
    hit = overlap > threshold
    if cross_tile_only:
        hit &= np.asarray(tile_ids)[i] != np.asarray(tile_ids)[j]
    i, j = i[hit], j[hit]
    neighbours: dict[int, list[int]] = {}
    for a, b in zip(i.tolist(), j.tolist(), strict=True):
        neighbours.setdefault(a, []).append(b)
        neighbours.setdefault(b, []).append(a)
    suppressed = np.zeros(n, dtype=bool)
    for k in np.argsort(-np.asarray(scores), kind="stable"):
        if suppressed[k]:
            continue
        for other in neighbours.get(int(k), ()):
            suppressed[other] = True
        suppressed[k] = False
    return np.flatnonzero(~suppressed)


def merge_none(corners: np.ndarray, scores: np.ndarray, tile_ids: np.ndarray,
               **_: object) -> np.ndarray:
    """Keep everything ownership kept."""
    return np.arange(len(scores))


def merge_suppress(corners: np.ndarray, scores: np.ndarray, tile_ids: np.ndarray,
                   threshold: float = 0.3, metric: str = "ios", cross_tile_only: bool = True,
                   **_: object) -> np.ndarray:
    """Rotated-box suppression of what ownership left (duplicates straddling a core edge)."""
    return suppress_rotated(corners, scores, tile_ids, threshold, metric, cross_tile_only)


MergeFn = Callable[..., np.ndarray]
MERGERS: dict[str, MergeFn] = {"ownership": merge_none, "ownership_nms": merge_suppress}


def merge(corners: np.ndarray, scores: np.ndarray, tile_ids: np.ndarray, method: str,
          **options: object) -> np.ndarray:
    """Indices of the candidates to keep with merge ``method`` (see :data:`MERGERS`)."""
    if method not in MERGERS:
        raise ValueError(f"unknown merge method {method!r}; use one of {sorted(MERGERS)}")
    return MERGERS[method](corners, scores, tile_ids, **options)
