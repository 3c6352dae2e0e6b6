"""Match detections to ground truth by polygon IoU: greedy by score, class-aware or not.

Everything here works on scene pixel coordinates. Rotated IoU (obb) compares the polygons
themselves; for axis-aligned models (``detect``) both sides are first reduced to their
axis-aligned bounding boxes, which is what such a model can express. The IoU matrix and the
greedy matcher live in :mod:`detector.matching` (shared with calibration) and are
re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detector.matching import IGNORED, UNMATCHED, greedy_match, iou_matrix

__all__ = ["IGNORED", "UNMATCHED", "SceneMatches", "as_axis_aligned", "duplicate_count",
           "greedy_match", "iou_matrix"]


def as_axis_aligned(corners: np.ndarray) -> np.ndarray:
    """The axis-aligned bounding rectangle (4, 2) of a polygon."""
    corners = np.asarray(corners, dtype=float)
    (x0, y0), (x1, y1) = corners.min(axis=0), corners.max(axis=0)
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])


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
