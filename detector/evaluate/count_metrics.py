"""Counting accuracy per scene and over scenes: error, MAE, MAPE, bias, RMSE, 95% coverage."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from detector.bundle import DEFAULT_NOT_WAGONS
from detector.geometry import visible_fraction


def wagon_classes(classes: Sequence[str], not_wagons: Sequence[str] = DEFAULT_NOT_WAGONS
                  ) -> list[str]:
    """The classes that count as wagons: every class but ``not_wagons`` (the card's)."""
    return [c for c in classes if c not in not_wagons]


def truth_mask(polygons: Sequence[np.ndarray], width: int, height: int,
               aoi: BaseGeometry | None = None, min_inside: float = 0.5) -> np.ndarray:
    """Which truth vehicles count: at least ``min_inside`` of the body inside the scene and,
    when an AOI (pixel coordinates) is given, the centre inside it."""
    box = (0.0, 0.0, float(width), float(height))
    keep = np.array([visible_fraction(np.asarray(p, float), box) >= min_inside
                     for p in polygons], dtype=bool)
    if aoi is not None and len(polygons):
        centres = np.array([np.asarray(p, float).mean(axis=0) for p in polygons])
        keep &= shapely.covers(aoi, shapely.points(centres))
    return keep


def count_errors(counts: Mapping[str, Any], truth: Mapping[str, int],
                 classes: Sequence[str], not_wagons: Sequence[str] = DEFAULT_NOT_WAGONS
                 ) -> dict[str, Any]:
    """One scene's predicted vs true counts, per class and for wagons.

    Args:
        counts: the counts JSON dict written by inference (``classes``, ``wagons``).
        truth: true count per class.
        classes: class names to report.
        not_wagons: classes left out of the wagons total.

    Returns:
        ``{"classes": {name: row}, "wagons": row}`` with row = ``{truth, count, error,
        expected, ci95, covered}``.
    """
    def row(pred: Mapping[str, Any] | None, true: int) -> dict[str, Any]:
        pred = pred or {}
        count = int(pred.get("count", 0))
        lo, hi = (int(v) for v in pred.get("ci95", (count, count)))
        return {"truth": int(true), "count": count, "error": count - int(true),
                "expected": float(pred.get("expected", count)), "ci95": [lo, hi],
                "covered": bool(lo <= true <= hi)}

    pred_classes = counts.get("classes", {})
    rows = {cls: row(pred_classes.get(cls), truth.get(cls, 0)) for cls in classes}
    wagons_true = sum(truth.get(cls, 0) for cls in wagon_classes(classes, not_wagons))
    return {"classes": rows, "wagons": row(counts.get("wagons"), wagons_true)}


def summarize(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """MAE, MAPE (%), WAPE (%), bias, RMSE, 95% coverage and mean interval width over scenes.

    MAPE averages |error| / truth over scenes with truth > 0 (None when there are none);
    WAPE = sum |error| / sum truth, which tiny scenes cannot dominate.
    """
    if not rows:
        return {"n_scenes": 0, "mae": None, "mape": None, "wape": None, "bias": None,
                "rmse": None, "coverage": None, "mean_width": None}
    err = np.array([r["error"] for r in rows], dtype=float)
    true = np.array([r["truth"] for r in rows], dtype=float)
    width = np.array([r["ci95"][1] - r["ci95"][0] for r in rows], dtype=float)
    covered = np.array([r["covered"] for r in rows], dtype=float)
    positive = true > 0
    return {
        "n_scenes": len(rows),
        "truth_total": int(true.sum()),
        "mae": float(np.abs(err).mean()),
        "mape": float((np.abs(err[positive]) / true[positive]).mean() * 100)
        if positive.any() else None,
        "wape": float(np.abs(err).sum() / true.sum() * 100) if true.sum() > 0 else None,
        "bias": float(err.mean()),
        "rmse": float(np.sqrt((err ** 2).mean())),
        "coverage": float(covered.mean()),
        "mean_width": float(width.mean()),
    }


def counting_metrics(scene_rows: Sequence[Mapping[str, Any]], classes: Sequence[str]
                     ) -> dict[str, Any]:
    """Summaries over scenes of :func:`count_errors` rows, for wagons and each class."""
    return {
        "wagons": summarize([r["wagons"] for r in scene_rows]),
        "classes": {cls: summarize([r["classes"][cls] for r in scene_rows]) for cls in classes},
    }
