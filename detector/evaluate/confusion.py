"""Class confusion of counted detections, with tarp-covered vs uncovered singled out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from detector.evaluate.matching import IGNORED, SceneMatches

COVERED = "covered_car"
MISSED = "missed"
BACKGROUND = "background"


def confusion_matrix(scenes: Sequence[SceneMatches], keep: Sequence[np.ndarray],
                     classes: Sequence[str], iou: float = 0.5) -> dict[str, Any]:
    """Truth class × predicted class over counted detections (class-agnostic matching).

    Rows are truth classes plus ``background`` (detections matching no car); columns are
    predicted classes plus ``missed`` (cars no counted detection matched).

    Returns:
        ``{"rows": [...], "columns": [...], "matrix": [[int]]}``.
    """
    rows, cols = [*classes, BACKGROUND], [*classes, MISSED]
    matrix = np.zeros((len(rows), len(cols)), dtype=int)
    r_index, c_index = {c: i for i, c in enumerate(rows)}, {c: i for i, c in enumerate(cols)}
    for scene, k in zip(scenes, keep, strict=True):
        matched = scene.match(iou, class_aware=False, keep=k)
        hit = np.zeros(len(scene.truth_cls), bool)
        for d in np.flatnonzero(k):
            if scene.det_cls[d] not in c_index or matched[d] == IGNORED:
                continue
            if matched[d] >= 0:
                hit[matched[d]] = True
                true_cls = scene.truth_cls[matched[d]]
                matrix[r_index.get(true_cls, r_index[BACKGROUND]), c_index[scene.det_cls[d]]] += 1
            else:
                matrix[r_index[BACKGROUND], c_index[scene.det_cls[d]]] += 1
        for t in np.flatnonzero(~hit & ~scene.ignore):
            if scene.truth_cls[t] in r_index:
                matrix[r_index[scene.truth_cls[t]], c_index[MISSED]] += 1
    return {"rows": rows, "columns": cols, "matrix": matrix.tolist()}


def covered_vs_others(confusion: dict[str, Any], covered: str = COVERED) -> dict[str, Any]:
    """Tarp-covered vs uncovered cars from a :func:`confusion_matrix`.

    Returns counts of covered cars predicted covered / as another class / missed, other
    cars predicted covered, false covered detections on background, and the covered class's
    precision, recall and F1 as a classifier among matched cars and overall.
    """
    rows, cols = confusion["rows"], confusion["columns"]
    if covered not in rows:
        return {}
    m = np.asarray(confusion["matrix"])
    r, c = rows.index(covered), cols.index(covered)
    miss, bg = cols.index(MISSED), rows.index(BACKGROUND)
    truth_rows = [i for i in range(len(rows)) if i not in (r, bg)]
    pred_cols = [j for j in range(len(cols)) if j not in (c, miss)]
    out = {
        "covered_as_covered": int(m[r, c]),
        "covered_as_other": int(m[r, pred_cols].sum()),
        "covered_missed": int(m[r, miss]),
        "other_as_covered": int(m[truth_rows, c].sum()),
        "background_as_covered": int(m[bg, c]),
    }
    tp = out["covered_as_covered"]
    fp = out["other_as_covered"] + out["background_as_covered"]
    fn = out["covered_as_other"] + out["covered_missed"]
    # Among cars found at all: does the tarp decision go right?
    found = tp + out["covered_as_other"] + out["other_as_covered"]
    out["precision"] = tp / (tp + fp) if tp + fp else None
    out["recall"] = tp / (tp + fn) if tp + fn else None
    out["f1"] = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None
    out["tarp_confusion_rate"] = ((out["covered_as_other"] + out["other_as_covered"]) / found
                                  if found else None)
    return out
