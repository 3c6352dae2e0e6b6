"""Detection accuracy: AP50, AP50-95 (COCO 101-point), and P/R/F1 at the operating threshold."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from detector.bundle import threshold_for
from detector.calibration import expected_calibration_error
from detector.evaluate.matching import IGNORED, SceneMatches

RECALL_GRID = np.linspace(0.0, 1.0, 101)
IOU_THRESHOLDS = tuple(np.round(np.arange(0.5, 0.951, 0.05), 2))


def interpolated_precision(scores: np.ndarray, tp: np.ndarray, n_truth: int) -> np.ndarray:
    """Precision on :data:`RECALL_GRID` (COCO: the best precision at recall >= r, else 0)."""
    if n_truth == 0 or len(scores) == 0:
        return np.zeros_like(RECALL_GRID)
    order = np.argsort(-np.asarray(scores, dtype=float), kind="stable")
    hits = np.asarray(tp, dtype=float)[order]
    tps = np.cumsum(hits)
    fps = np.cumsum(1.0 - hits)
    recall = tps / n_truth
    precision = tps / np.maximum(tps + fps, 1e-12)
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    idx = np.searchsorted(recall, RECALL_GRID, side="left")
    return np.where(idx < len(recall), envelope[np.minimum(idx, len(recall) - 1)], 0.0)


def average_precision(scores: np.ndarray, tp: np.ndarray, n_truth: int) -> float | None:
    """COCO 101-point average precision; None when the class has no truth."""
    if n_truth == 0:
        return None
    return float(interpolated_precision(scores, tp, n_truth).mean())


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if den > 0 else None


def _pooled(scenes: Sequence[SceneMatches], matches: Sequence[np.ndarray], cls: str,
            keep: Sequence[np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """Scores and TP flags of class ``cls`` detections over all scenes, and its truth count."""
    scores, tps, n_truth = [np.zeros(0)], [np.zeros(0, bool)], 0
    for i, (scene, matched) in enumerate(zip(scenes, matches, strict=True)):
        mine = (scene.det_cls == cls) & (matched != IGNORED)
        if keep is not None:
            mine &= keep[i]
        scores.append(scene.scores[mine])
        tps.append(matched[mine] >= 0)
        n_truth += int(((scene.truth_cls == cls) & ~scene.ignore).sum())
    return np.concatenate(scores), np.concatenate(tps), n_truth


def counted_mask(scene: SceneMatches, operating_threshold: float | Mapping[str, float]
                 ) -> np.ndarray:
    """Detections at or above their class's operating threshold (the counted ones)."""
    thresholds = np.array([threshold_for(operating_threshold, c) for c in scene.det_cls])
    return scene.scores >= thresholds if len(thresholds) else np.zeros(0, bool)


def detection_metrics(scenes: Sequence[SceneMatches], classes: Sequence[str],
                      operating_threshold: float | Mapping[str, float], iou: float = 0.5,
                      iou_thresholds: Sequence[float] = IOU_THRESHOLDS) -> dict[str, Any]:
    """Detection figures pooled over scenes, class-aware matching.

    Args:
        scenes: per-scene IoU/class data of all candidate detections.
        classes: class names to report.
        operating_threshold: score where counted detections start (float or per class).
        iou: IoU for P/R/F1 and the PR curves.
        iou_thresholds: IoUs averaged for mAP50-95.

    Returns:
        ``{"map50", "map50_95", "iou", "classes": {name: {ap50, ap50_95, precision, recall,
        f1, tp, fp, fn, n_truth, threshold}}, "pr_curves": {name: {recall, precision}}}``.
        AP is None for a class without truth and the means skip it; P/R/F1 are None
        where undefined (no detections / no truth / neither).
    """
    at = {float(t): [s.match(float(t)) for s in scenes] for t in {*iou_thresholds, iou}}
    keep = [counted_mask(s, operating_threshold) for s in scenes]
    op_matches = [s.match(iou, keep=k) for s, k in zip(scenes, keep, strict=True)]
    per_class: dict[str, dict[str, Any]] = {}
    curves: dict[str, dict[str, list[float]]] = {}
    for cls in classes:
        aps = [average_precision(*_pooled(scenes, at[float(t)], cls)) for t in iou_thresholds]
        s50, tp50, n_truth = _pooled(scenes, at[float(iou)], cls)
        _, tp_op, _ = _pooled(scenes, op_matches, cls, keep)
        tp, fp = int(tp_op.sum()), int((~tp_op).sum())
        fn = n_truth - tp
        valid_aps = [a for a in aps if a is not None]
        per_class[cls] = {
            "ap50": average_precision(s50, tp50, n_truth),
            "ap50_95": float(np.mean(valid_aps)) if valid_aps else None,
            "precision": _ratio(tp, tp + fp), "recall": _ratio(tp, n_truth),
            "f1": _ratio(2 * tp, 2 * tp + fp + fn),
            "tp": tp, "fp": fp, "fn": fn, "n_truth": n_truth,
            "threshold": threshold_for(operating_threshold, cls),
        }
        curves[cls] = {"recall": RECALL_GRID.round(2).tolist(),
                       "precision": interpolated_precision(s50, tp50, n_truth).round(4).tolist()}

    def mean_of(key: str) -> float | None:
        values = [v[key] for v in per_class.values() if v[key] is not None]
        return float(np.mean(values)) if values else None

    return {"map50": mean_of("ap50"), "map50_95": mean_of("ap50_95"), "iou": iou,
            "classes": per_class, "pr_curves": curves}


def reliability(probabilities: np.ndarray, correct: np.ndarray, n_bins: int = 10
                ) -> dict[str, Any]:
    """Reliability-diagram data: per equal-width bin of calibrated p, its mean p, the
    share of detections that were right, and the count; plus the ECE."""
    p = np.asarray(probabilities, dtype=float)
    ok = np.asarray(correct, dtype=float)
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    rows = []
    for b in range(n_bins):
        sel = bins == b
        rows.append({"low": b / n_bins, "high": (b + 1) / n_bins, "n": int(sel.sum()),
                     "mean_p": float(p[sel].mean()) if sel.any() else None,
                     "accuracy": float(ok[sel].mean()) if sel.any() else None})
    return {"ece": expected_calibration_error(p, ok, n_bins), "n": int(p.size), "bins": rows}
