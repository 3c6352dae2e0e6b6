"""Polygon IoU matrices and greedy score-ordered matching, shared by training and evaluation.

``detector.train.calibrate`` matches validation candidates to truth with these, and
``detector.evaluate.matching`` builds its per-scene matches on them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import shapely

UNMATCHED = -1
IGNORED = -2


def polygons(corners: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    """Shapely polygons of ``corners`` ((N, K, 2) or a sequence of (K_i, 2)), repaired if invalid.

    A self-intersecting corner order is repaired with ``make_valid`` rather than failing.
    """
    try:
        stacked = np.asarray(corners, dtype=float)
    except ValueError:  # polygons with different vertex counts
        stacked = None
    if stacked is not None and stacked.ndim == 3:
        polys = shapely.polygons(stacked)
    else:
        polys = np.array([shapely.Polygon(np.asarray(c, dtype=float)) for c in corners],
                         dtype=object)
    if polys.size:
        bad = ~shapely.is_valid(polys)
        if bad.any():
            polys[bad] = shapely.make_valid(polys[bad])
    return polys


def iou_matrix(a: Sequence[np.ndarray] | np.ndarray,
               b: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    """IoU of every polygon in ``a`` with every polygon in ``b``, shape (len(a), len(b)).

    Args:
        a: polygons as (N, K, 2) corners or a sequence of (K_i, 2) arrays.
        b: polygons as (M, K, 2) corners or a sequence of (K_j, 2) arrays.

    Returns:
        (N, M) float IoU; only pairs whose bounding boxes overlap are intersected, so a
        dense scene stays fast.
    """
    out = np.zeros((len(a), len(b)))
    if not len(a) or not len(b):
        return out
    pa, pb = polygons(a), polygons(b)
    box_a, box_b = shapely.bounds(pa), shapely.bounds(pb)  # (xmin, ymin, xmax, ymax)
    lo_a, hi_a, lo_b, hi_b = box_a[:, :2], box_a[:, 2:], box_b[:, :2], box_b[:, 2:]
    # Only pairs whose bounding boxes overlap can intersect.
    overlap = ((lo_a[:, None] < hi_b[None]) & (lo_b[None] < hi_a[:, None])).all(-1)
    ia, ib = np.nonzero(overlap)
    if ia.size:
        inter = shapely.area(shapely.intersection(pa[ia], pb[ib]))
        union = shapely.area(pa[ia]) + shapely.area(pb[ib]) - inter
        out[ia, ib] = np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)
    return out


def greedy_match(iou: np.ndarray, scores: np.ndarray, threshold: float,
                 allowed: np.ndarray | None = None,
                 ignore: np.ndarray | None = None) -> np.ndarray:
    """Match detections to truth greedily in order of falling score (COCO style).

    Each detection takes the unmatched, non-ignored truth it overlaps most with
    IoU >= ``threshold``. A detection left unmatched that overlaps an ignored truth
    (e.g. a car mostly outside the scene) by ``threshold`` is marked ignored: it is
    neither a true nor a false positive.

    Args:
        iou: (n_dets, n_truth) IoU matrix.
        scores: (n_dets,) detection scores.
        threshold: minimum IoU of a match.
        allowed: optional (n_dets, n_truth) bool, e.g. same class; False pairs never match.
        ignore: optional (n_truth,) bool of truth that is neither required nor penalised.

    Returns:
        (n_dets,) int: the matched truth index, ``UNMATCHED`` (-1) or ``IGNORED`` (-2).
    """
    n_dets, n_truth = iou.shape
    result = np.full(n_dets, UNMATCHED, dtype=int)
    if n_dets == 0:
        return result
    ok = iou >= threshold
    if allowed is not None:
        ok &= allowed
    ignore = np.zeros(n_truth, bool) if ignore is None else np.asarray(ignore, bool)
    taken = ignore.copy()
    for d in np.argsort(-np.asarray(scores, dtype=float), kind="stable"):
        candidates = ok[d] & ~taken
        if candidates.any():
            t = int(np.argmax(np.where(candidates, iou[d], -1.0)))
            result[d] = t
            taken[t] = True
        elif (ok[d] & ignore).any():
            result[d] = IGNORED
    return result
