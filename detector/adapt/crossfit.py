"""Cross-fitted recalibration and held-out evidence (pure given the inference results).

Each fold's scenes are scored by a model fine-tuned without them (a :class:`FoldRun`). The
final calibration is fitted on all those held-out scores. For the before/after table each
fold is recounted with a calibration fitted on the OTHER folds only, so no scene's
probabilities come from a model or a calibration that saw it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from omegaconf import DictConfig

from detector import calibration
from detector.adapt.inputs import AdaptScene
from detector.evaluate.count_metrics import counting_metrics
from detector.evaluate.scenes import load_scene
from detector.evaluate.scoring import SceneEval, build_report
from detector.infer.counting import summarize_counts
from detector.train.calibrate import MatchedCandidates, calibrate, dispersion, scene_candidates
from detector.train.card import calibration_fields


@dataclass
class FoldRun:
    """A fold's held-out scenes, scored by a model fine-tuned on ``trained_on`` only."""

    fold: int
    scenes: list[AdaptScene]
    results: list[Any]  # detector.infer.SceneResult per scene (all candidates)
    trained_on: list[str]  # scenes whose chips the fold model was fine-tuned on


def pooled_candidates(runs: Sequence[FoldRun], names: Sequence[str], cal_cfg: DictConfig,
                      exclude: int | None = None) -> tuple[MatchedCandidates, list[str]]:
    """Matched candidates of every fold's held-out scenes (but fold ``exclude``).

    Returns:
        The candidates and the names of the scenes they come from.
    """
    cands, used = MatchedCandidates(len(names)), []
    for run in runs:
        if run.fold == exclude:
            continue
        pairs = [(s.image, s.labels) for s in run.scenes]
        scene_candidates(run.results, pairs, names, cal_cfg, cands, len(used))
        used += [s.name for s in run.scenes]
    return cands, used


def calibration_card(cands: MatchedCandidates, names: Sequence[str], cal_cfg: DictConfig,
                     not_wagons: Sequence[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Card fields inference reads (maps, thresholds, recall, dispersion), and the fit."""
    cal = calibrate(cands, names, int(cal_cfg.min_samples), str(cal_cfg.operating))
    fields = calibration_fields(cal, list(names), float(cal_cfg.candidate_conf),
                                dict(cal_cfg.nms))
    fields["dispersion"] = dispersion(cands, names, cal["calibration"], cal["recall_counts"],
                                      list(not_wagons))
    return fields, cal


def recount(detections: Sequence[Any], fields: Mapping[str, Any], classes: Sequence[str],
            not_wagons: Sequence[str]) -> tuple[list[Any], dict[str, Any]]:
    """Detections with probabilities from ``fields``' calibration, and their counts dict."""
    maps = fields.get("calibration") or {}
    scores = np.array([d.score for d in detections], float)
    cls = np.array([d.cls for d in detections], dtype=object)
    p = scores.copy()
    for name in set(cls.tolist()):
        p[cls == name] = calibration.apply(maps.get(name), scores[cls == name])
    dets = [replace(d, p=float(q)) for d, q in zip(detections, p, strict=True)]
    per_class, wagons = summarize_counts(
        list(classes), cls, scores, p, fields["operating_threshold"],
        fields.get("recall_at_candidate_conf"), tuple(not_wagons),
        recall_evidence=fields.get("recall_counts"), dispersion=fields.get("dispersion"))
    return dets, {"classes": per_class, "wagons": wagons}


def report(scenes: Sequence[AdaptScene], results: Sequence[Any], classes: Sequence[str],
           operating_threshold: Any, not_wagons: Sequence[str]) -> dict[str, Any]:
    """The evaluation report (``detector.evaluate``'s) of scenes with their results."""
    evals = []
    for scene, result in zip(scenes, results, strict=True):
        labelled = load_scene(scene.image, scene.labels, list(classes))
        evals.append(SceneEval(scene.name, result.detections, result.counts, labelled.truth,
                               labelled.width, labelled.height))
    return build_report(evals, list(classes), operating_threshold, not_wagons=list(not_wagons))


@dataclass
class Recounted:
    """Detections and counts of one scene under another calibration (a result stand-in)."""

    detections: list[Any]
    counts: dict[str, Any]


def held_out_after(runs: Sequence[FoldRun], classes: Sequence[str], cal_cfg: DictConfig,
                   not_wagons: Sequence[str]) -> tuple[list[dict[str, Any]], list[dict]]:
    """Per-fold reports of the adapted models, each fold recalibrated on the others only.

    Returns:
        (reports, provenance): one report per fold; per scene, which scenes trained the model
        that scored it and which scenes' candidates fitted its calibration.
    """
    reports, provenance = [], []
    for run in runs:
        cands, used = pooled_candidates(runs, classes, cal_cfg, exclude=run.fold)
        fields, _ = calibration_card(cands, classes, cal_cfg, not_wagons)
        recounted = [Recounted(*recount(r.detections, fields, classes, not_wagons))
                     for r in run.results]
        reports.append(report(run.scenes, recounted, classes, fields["operating_threshold"],
                              not_wagons))
        provenance += [{"scene": s.name, "fold": run.fold, "model_trained_on": run.trained_on,
                        "calibrated_on": used} for s in run.scenes]
    return reports, provenance


def headline(reports: Sequence[Mapping[str, Any]], classes: Sequence[str]) -> dict[str, Any]:
    """Wagon MAPE, bias, coverage, interval width and covered_car F1 pooled over reports."""
    rows = [row for rep in reports for row in rep["scenes"]]
    counting = counting_metrics(rows, list(classes))["wagons"]

    def f1(names: Sequence[str]) -> float | None:
        tp = fp = fn = 0
        for rep in reports:
            for name in names:
                stats = rep["detection"]["classes"].get(name) or {}
                tp += stats.get("tp", 0)
                fp += stats.get("fp", 0)
                fn += stats.get("fn", 0)
        return round(2 * tp / (2 * tp + fp + fn), 4) if tp + fp + fn else None

    n = sum(rep["calibration"]["n"] for rep in reports)
    ece = (sum(rep["calibration"]["ece"] * rep["calibration"]["n"] for rep in reports) / n
           if n else None)
    return {"scenes": len(rows), "wagons": counting.get("truth_total"),
            "wagon_mae": _r(counting["mae"]), "wagon_mape": _r(counting["mape"]),
            "wagon_bias": _r(counting["bias"]), "coverage": _r(counting["coverage"]),
            "width": _r(counting["mean_width"]), "covered_f1": f1(["covered_car"]),
            "f1": f1(classes), "ece": _r(ece)}


def _r(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)
