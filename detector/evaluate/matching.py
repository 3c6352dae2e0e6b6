"""Match detections to ground truth by polygon IoU: greedy by score, class-aware or not.

Everything here works on scene pixel coordinates. Rotated IoU (obb) compares the polygons
themselves; for axis-aligned models (``detect``) both sides are first reduced to their
axis-aligned bounding boxes, which is what such a model can express.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import shapely

UNMATCHED = -1
IGNORED = -2


def as_axis_aligned(corners: np.ndarray) -> np.ndarray:
    """The axis-aligned bounding rectangle (4, 2) of a polygon."""
    corners = np.asarray(corners, dtype=float)
    (x0, y0), (x1, y1) = corners.min(axis=0), corners.max(axis=0)
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])


def _polygons(corners: Sequence[np.ndarray]) -> np.ndarray:
    polys = np.array([shapely.Polygon(np.asarray(c, dtype=float)) for c in corners], dtype=object)
    if polys.size:
        bad = ~shapely.is_valid(polys)
        if bad.any():  # self-intersecting corner order: repair rather than fail
            polys[bad] = shapely.make_valid(polys[bad])
    return polys


def iou_matrix(dets: Sequence[np.ndarray], truth: Sequence[np.ndarray]) -> np.ndarray:
    """IoU of every detection polygon with every truth polygon, shape (n_dets, n_truth).

    Only pairs whose polygons intersect are computed (STR-tree), so a dense scene stays fast.
    """
    out = np.zeros((len(dets), len(truth)))
    if not len(dets) or not len(truth):
        return out
    pd, pt = _polygons(dets), _polygons(truth)
    tree = shapely.STRtree(pt)
    di, ti = tree.query(pd, predicate="intersects")
    if di.size:
        inter = shapely.area(shapely.intersection(pd[di], pt[ti]))
        union = shapely.area(pd[di]) + shapely.area(pt[ti]) - inter
        out[di, ti] = np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)
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


@dataclass
class SceneMatches:
    """IoU and class information of one scene, reused across IoU thresholds."""

    iou: np.ndarray            # (n_dets, n_truth)
    scores: np.ndarray         # (n_dets,)
    det_cls: np.ndarray        # (n_dets,) class names
    truth_cls: np.ndarray      # (n_truth,) class names
    ignore: np.ndarray         # (n_truth,) bool

    def match(self, threshold: float, class_aware: bool = True,
              keep: np.ndarray | None = None) -> np.ndarray:
        """Greedy matching at ``threshold``; ``keep`` restricts to some detections.

        Returns the truth index per detection (dropped detections get ``UNMATCHED``).
        """
        allowed = (self.det_cls[:, None] == self.truth_cls[None, :]) if class_aware else None
        if keep is None:
            return greedy_match(self.iou, self.scores, threshold, allowed, self.ignore)
        result = np.full(len(self.scores), UNMATCHED, dtype=int)
        idx = np.flatnonzero(keep)
        sub_allowed = allowed[idx] if allowed is not None else None
        result[idx] = greedy_match(self.iou[idx], self.scores[idx], threshold, sub_allowed,
                                   self.ignore)
        return result


def duplicate_count(iou: np.ndarray, ignore: np.ndarray | None = None,
                    threshold: float = 0.5) -> int:
    """Detections beyond the first that fall on the same truth car (seam duplicates).

    Class-agnostic: each detection is assigned to the truth it overlaps most, when that
    IoU is at least ``threshold``; a car with k such detections contributes k - 1.
    """
    if iou.size == 0:
        return 0
    iou = iou.copy()
    if ignore is not None:
        iou[:, np.asarray(ignore, bool)] = 0.0
    best = np.argmax(iou, axis=1)
    hit = iou[np.arange(len(iou)), best] >= threshold
    per_truth = np.bincount(best[hit], minlength=iou.shape[1])
    return int(np.maximum(per_truth - 1, 0).sum())
