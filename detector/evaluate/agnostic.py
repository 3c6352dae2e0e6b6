"""Class-agnostic scoring: every rail vehicle is one class (pure: no I/O).

Real labelled scenes often carry a single class (``railcar``: every rail vehicle, wagons
and locomotives alike) that is not in the model's taxonomy. Scored class-agnostically, a
detection of any class matches a truth of any class; what is reported is detection AP50,
precision and recall at the card's operating thresholds, and the count of all vehicles with
its 95% interval (the per-class Poisson-binomial pmfs convolved, as for the wagons total).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from detector.bundle import ModelCard
from detector.evaluate.count_metrics import count_errors, summarize
from detector.evaluate.detection_metrics import _ratio, average_precision, counted_mask
from detector.evaluate.matching import IGNORED
from detector.evaluate.scoring import SceneEval, scene_matches
from detector.infer.counting import VEHICLES, WAGONS, summarize_counts

VEHICLE = "vehicle"  # the one class of class-agnostic scoring


def label_classes_known(label_classes: Sequence[str], model_classes: Sequence[str]) -> bool:
    """True when every label class is one of the model's (class-aware scoring is possible)."""
    return set(label_classes) <= set(model_classes)


def vehicle_counts(scene: SceneEval, card: ModelCard, p: np.ndarray,
                   keep_dets: np.ndarray) -> dict[str, Any]:
    """All-vehicle count, expected value and 95% interval of one scene's detections.

    ``keep_dets`` selects the detections inside the AOI (the ones scored). The dispersion
    is the card's ``vehicles`` entry, else its ``wagons`` entry (both fitted at calibration).
    """
    dets = [d for d, k in zip(scene.detections, keep_dets, strict=True) if k]
    dispersion = card.dispersion.get(VEHICLES, card.dispersion.get(WAGONS, 1.0))
    _, total = summarize_counts(
        card.classes, [d.cls for d in dets], np.array([d.score for d in dets]), p,
        card.operating_threshold, card.recall_at_candidate_conf, not_wagons=(),
        recall_evidence=card.recall_counts,
        dispersion={**{c: card.dispersion.get(c, 1.0) for c in card.classes},
                    WAGONS: dispersion})
    return total


def agnostic_report(scenes: Sequence[SceneEval], card: ModelCard, iou: float = 0.5,
                    min_inside: float = 0.5, axis_aligned: bool = False) -> dict[str, Any]:
    """Class-agnostic detection and counting figures over ``scenes``.

    Args:
        scenes: scenes with their candidate detections and truth (any label classes).
        card: the model's card (classes, operating thresholds, recall, dispersion).
        iou: IoU of a match (oriented polygons unless ``axis_aligned``).
        min_inside: share of a body inside the scene/AOI for a car to count as truth.
        axis_aligned: compare axis-aligned boxes (``detect`` models).

    Returns:
        ``{"iou", "truth", "AP50", "precision", "recall", "f1", "tp", "fp", "fn",
        "counting": summary over scenes (MAE, MAPE %, coverage, ...),
        "scenes": [{scene, truth, count, error, expected, ci95, covered, tp, fp}]}``.
    """
    all_scores, all_tp, rows = [np.zeros(0)], [np.zeros(0, bool)], []
    n_truth = tp_op = fp_op = 0
    for scene in scenes:
        m, p = scene_matches(scene, min_inside, axis_aligned)
        keep = counted_mask(m, card.operating_threshold)  # per original class
        m.det_cls = np.full(len(m.scores), VEHICLE, dtype=object)
        m.truth_cls = np.full(len(m.truth_cls), VEHICLE, dtype=object)
        matched = m.match(iou, class_aware=False)
        use = matched != IGNORED
        all_scores.append(m.scores[use])
        all_tp.append(matched[use] >= 0)
        op = m.match(iou, class_aware=False, keep=keep)
        tp = int((op[keep] >= 0).sum())
        fp = int(keep.sum()) - tp
        truth = int((~m.ignore).sum())
        n_truth, tp_op, fp_op = n_truth + truth, tp_op + tp, fp_op + fp
        inside = _inside_mask(scene)
        total = vehicle_counts(scene, card, p, inside)
        row = count_errors({"wagons": total}, {VEHICLE: truth}, [VEHICLE], not_wagons=())
        rows.append({"scene": scene.name, **row["wagons"], "tp": tp, "fp": fp})
    fn = n_truth - tp_op
    return {
        "iou": iou,
        "truth": n_truth,
        "AP50": average_precision(np.concatenate(all_scores), np.concatenate(all_tp), n_truth),
        "precision": _ratio(tp_op, tp_op + fp_op), "recall": _ratio(tp_op, n_truth),
        "f1": _ratio(2 * tp_op, 2 * tp_op + fp_op + fn),
        "tp": tp_op, "fp": fp_op, "fn": fn,
        "counting": summarize(rows),
        "scenes": rows,
    }


def _inside_mask(scene: SceneEval) -> np.ndarray:
    """Detections centred inside the scene's AOI (all when there is none)."""
    from detector.evaluate.scoring import _centres_inside

    if scene.aoi is None:
        return np.ones(len(scene.detections), bool)
    return _centres_inside([d.corners_px for d in scene.detections], scene.aoi)


def summary_lines(report: Mapping[str, Any]) -> list[str]:
    """Headline lines of a class-agnostic report."""
    def f(v: Any, d: int = 3) -> str:
        return "–" if v is None else f"{v:.{d}f}"

    lines = [f"class-agnostic (IoU ≥ {report['iou']}): AP50 {f(report['AP50'])}  "
             f"precision {f(report['precision'])}  recall {f(report['recall'])}  "
             f"({report['tp']} TP, {report['fp']} FP, {report['fn']} FN of {report['truth']})"]
    for row in report["scenes"]:
        lo, hi = row["ci95"]
        lines.append(f"  {row['scene']}: {row['count']} vehicles counted, expected "
                     f"{row['expected']:.1f}, 95% [{lo}, {hi}], truth {row['truth']}"
                     f"{'' if row['covered'] else '  (interval misses)'}")
    return lines
