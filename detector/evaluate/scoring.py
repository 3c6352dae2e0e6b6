"""Turn per-scene predictions + truth into the evaluation report (pure: no I/O)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from detector.bundle import DEFAULT_NOT_WAGONS
from detector.evaluate.confusion import confusion_matrix, covered_vs_others
from detector.evaluate.count_metrics import count_errors, counting_metrics, truth_mask
from detector.evaluate.detection_metrics import (
    IOU_THRESHOLDS,
    counted_mask,
    detection_metrics,
    reliability,
)
from detector.evaluate.matching import (
    IGNORED,
    SceneMatches,
    as_axis_aligned,
    duplicate_count,
    iou_matrix,
)
from detector.labels import LabelledPolygon


class DetectionLike(Protocol):
    """What evaluation reads from a detection (``detector.infer.Detection`` has it)."""

    corners_px: np.ndarray
    cls: str
    score: float
    p: float


@dataclass
class SceneEval:
    """One scene to score: the inference output and the truth, in scene pixel coordinates.

    Attributes:
        name: scene name for the report.
        detections: ALL candidate detections of the scene.
        counts: the counts JSON dict inference wrote for it.
        truth: labelled vehicles (pixel coordinates), including ones partly outside.
        width: scene width in pixels.
        height: scene height in pixels.
        aoi: area of interest in pixel coordinates, or None for the whole scene.
    """

    name: str
    detections: Sequence[DetectionLike]
    counts: Mapping[str, Any]
    truth: Sequence[LabelledPolygon]
    width: int
    height: int
    aoi: BaseGeometry | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _centres_inside(corners: Sequence[np.ndarray], aoi: BaseGeometry) -> np.ndarray:
    if not len(corners):
        return np.zeros(0, bool)
    centres = np.array([np.asarray(c, float).mean(axis=0) for c in corners])
    return shapely.covers(aoi, shapely.points(centres))


def scene_matches(scene: SceneEval, min_inside: float = 0.5, axis_aligned: bool = False
                  ) -> tuple[SceneMatches, np.ndarray]:
    """IoU and class data of a scene, and the calibrated p of its detections.

    Truth outside the scene/AOI is ignored; detections centred outside the AOI are dropped.
    """
    dets = list(scene.detections)
    if scene.aoi is not None:
        inside = _centres_inside([d.corners_px for d in dets], scene.aoi)
        dets = [d for d, ok in zip(dets, inside, strict=True) if ok]
    truth_corners = [np.asarray(t.corners, float) for t in scene.truth]
    det_corners = [np.asarray(d.corners_px, float) for d in dets]
    keep_truth = truth_mask(truth_corners, scene.width, scene.height, scene.aoi, min_inside)
    if axis_aligned:
        truth_corners = [as_axis_aligned(c) for c in truth_corners]
        det_corners = [as_axis_aligned(c) for c in det_corners]
    return SceneMatches(
        iou=iou_matrix(det_corners, truth_corners),
        scores=np.array([float(d.score) for d in dets]),
        det_cls=np.array([str(d.cls) for d in dets], dtype=object),
        truth_cls=np.array([t.cls for t in scene.truth], dtype=object),
        ignore=~keep_truth,
    ), np.array([float(d.p) for d in dets])


def build_report(scenes: Sequence[SceneEval], classes: Sequence[str],
                 operating_threshold: float | Mapping[str, float], iou: float = 0.5,
                 iou_thresholds: Sequence[float] = IOU_THRESHOLDS, min_inside: float = 0.5,
                 axis_aligned: bool = False, not_wagons: Sequence[str] = DEFAULT_NOT_WAGONS
                 ) -> dict[str, Any]:
    """Score scenes: detection, counting, confusion, calibration and seam duplicates.

    Args:
        scenes: scenes with their predictions and truth.
        classes: the model's classes (report order).
        operating_threshold: the card's operating threshold (float or per class).
        iou: IoU of a match for P/R/F1, confusion, calibration and duplicates.
        iou_thresholds: IoUs averaged for mAP50-95.
        min_inside: share of a body inside the scene for the car to count as truth.
        axis_aligned: compare axis-aligned boxes (for ``detect`` models).
        not_wagons: classes left out of the wagons total (as inference counts them).

    Returns:
        The report dict (JSON-able); see :mod:`detector.evaluate.report` for its layout.
    """
    matches, probs, keeps, rows = [], [], [], []
    total_duplicates = 0
    for scene in scenes:
        m, p = scene_matches(scene, min_inside, axis_aligned)
        keep = counted_mask(m, operating_threshold)
        duplicates = duplicate_count(m.iou[keep], m.ignore, iou)
        total_duplicates += duplicates
        truth = {cls: int(((m.truth_cls == cls) & ~m.ignore).sum()) for cls in classes}
        per_scene = count_errors(scene.counts, truth, classes, list(not_wagons))
        rows.append({"scene": scene.name, **per_scene, "seam_duplicates": duplicates,
                     "candidates": int(len(m.scores)), "counted": int(keep.sum()),
                     **scene.extra})
        matches.append(m)
        probs.append(p)
        keeps.append(keep)

    correct, p_all = [], []
    for m, p in zip(matches, probs, strict=True):
        matched = m.match(iou, class_aware=True)
        use = matched != IGNORED
        correct.append(matched[use] >= 0)
        p_all.append(p[use])
    confusion = confusion_matrix(matches, keeps, classes, iou)
    return {
        "n_scenes": len(scenes),
        "classes": list(classes),
        "operating_threshold": (dict(operating_threshold)
                                if isinstance(operating_threshold, Mapping)
                                else float(operating_threshold)),
        "matching": {"iou": iou, "geometry": "axis-aligned" if axis_aligned else "rotated",
                     "min_inside": min_inside},
        "detection": detection_metrics(matches, classes, operating_threshold, iou,
                                       iou_thresholds),
        "counting": counting_metrics(rows, classes),
        "confusion": {**confusion, "covered_vs_others": covered_vs_others(confusion)},
        "calibration": reliability(np.concatenate([np.zeros(0), *p_all]),
                                   np.concatenate([np.zeros(0, bool), *correct])),
        "seam_duplicates": {"total": total_duplicates,
                            "per_scene_mean": total_duplicates / len(scenes) if scenes else 0.0},
        "scenes": rows,
    }
