"""Assemble the model card (``NAME.json``) that goes beside the trained weights."""

from __future__ import annotations

import math
from typing import Any

from detector.bundle import ModelCard, git_commit


def _num(value: Any) -> float | None:
    value = float(value)
    return None if math.isnan(value) else round(value, 4)


def yolo_metrics(metrics: Any, names: list[str]) -> dict[str, Any]:
    """mAP50 and mAP50-95, overall and per class, from an Ultralytics metrics object.

    Classes absent from the evaluated split get None.
    """
    if metrics is None or not hasattr(metrics, "box"):
        return {}
    box = metrics.box
    per_class: dict[str, dict[str, float | None]] = {
        name: {"mAP50": None, "mAP50-95": None} for name in names}
    for k, c in enumerate(getattr(metrics, "ap_class_index", [])):
        if int(c) < len(names):
            per_class[names[int(c)]] = {"mAP50": _num(box.ap50[k]), "mAP50-95": _num(box.ap[k])}
    return {"mAP50": _num(box.map50), "mAP50-95": _num(box.map),
            "precision": _num(box.mp), "recall": _num(box.mr), "per_class": per_class}


def chip_size(dataset_meta: dict[str, Any]) -> int | None:
    """The chip side in pixels recorded in dataset.json (``chip_size`` or ``chip.size``)."""
    size = dataset_meta.get("chip_size")
    if size is None and isinstance(dataset_meta.get("chip"), dict):
        size = dataset_meta["chip"].get("size")
    return int(size) if size else None


def model_m_per_px(dataset_meta: dict[str, Any], imgsz: int) -> float:
    """The resolution the model actually saw.

    Ultralytics resizes every chip so its long side is ``imgsz``; when that differs from the
    chip size, the model's input resolution differs from the dataset's m/px by that factor.
    """
    m_per_px = float(dataset_meta.get("m_per_px") or ModelCard.model_fields["m_per_px"].default)
    size = chip_size(dataset_meta)
    return round(m_per_px * size / imgsz, 6) if size else m_per_px


def operating_threshold(operating: dict[str, Any], names: list[str],
                        n_truth: dict[str, int]) -> dict[str, float]:
    """Per-class raw thresholds (F1-optimal on val) with the global one as ``default``.

    Classes without val truth use the global threshold.
    """
    out = {name: (operating["per_class"][name]["threshold"] if n_truth.get(name)
                  else operating["threshold"]) for name in names}
    out["default"] = operating["threshold"]
    return out


def calibration_metrics(cal: dict[str, Any]) -> dict[str, Any]:
    """The calibration figures that go into the card's ``metrics``."""
    return {"ece_before": cal["ece"]["ece_before"], "ece_after": cal["ece"]["ece_after"],
            "ece_per_class": cal["ece"]["per_class"],
            "f1_at_operating_threshold": cal["operating"]["f1"]}


def calibration_fields(cal: dict[str, Any], names: list[str], candidate_conf: float,
                       nms: dict[str, Any]) -> dict[str, Any]:
    """Card fields inference reads to turn raw candidates into calibrated counts."""
    n_truth = {name: int(v) for name, v in cal.get("n_truth_per_class", {}).items()}
    return {
        "calibration": cal["calibration"],
        "candidate_conf": float(candidate_conf),
        "nms": {"iou": float(nms["iou"]), "agnostic": bool(nms["agnostic"])},
        "operating_threshold": operating_threshold(cal["operating"], names, n_truth),
        "recall_at_candidate_conf": cal["recall_at_candidate_conf"],
        "recall_counts": cal["recall_counts"],
    }


def build_card(*, task: str, names: list[str], imgsz: int, dataset_meta: dict[str, Any],
               dataset_ref: dict[str, Any], cal: dict[str, Any], candidate_conf: float,
               nms: dict[str, Any],
               val_metrics: dict[str, Any], test_metrics: dict[str, Any] | None,
               training: dict[str, Any], not_wagons: list[str] | None = None) -> ModelCard:
    """The card of a trained model (``detector.bundle.write_card`` adds sha256 and created).

    Args:
        task: ``obb`` or ``detect``.
        names: class names in id order.
        imgsz: training image size.
        dataset_meta: the dataset's ``dataset.json``.
        dataset_ref: where the dataset is (data.yaml path, and how it was made).
        cal: output of :func:`detector.train.calibrate.calibrate`.
        candidate_conf: the raw score down to which candidates were collected.
        nms: ``{"iou", "agnostic"}`` of the NMS that produced the candidates.
        val_metrics: :func:`yolo_metrics` on the val split.
        test_metrics: the same on the test split, or None.
        training: model architecture, init, epochs, time, Ultralytics run folder.
        not_wagons: classes left out of the wagons total (None: the default among ``names``).
    """
    metrics = {**val_metrics, "split": "val", **calibration_metrics(cal)}
    if test_metrics:
        metrics["test"] = test_metrics
    fields: dict[str, Any] = {
        "task": task,
        "classes": list(names),
        "imgsz": int(imgsz),
        "m_per_px": model_m_per_px(dataset_meta, imgsz),
        "chip_size": chip_size(dataset_meta),
        **calibration_fields(cal, names, candidate_conf, nms),
        "metrics": metrics,
        "dataset": {**dataset_ref, "info": dataset_meta},
        "training": training,
        "init": training.get("init"),
        "not_wagons": None if not_wagons is None else [c for c in not_wagons if c in names],
        "git_commit": git_commit(),
    }
    if dataset_meta.get("normalization"):  # else the card's default
        fields["normalization"] = dict(dataset_meta["normalization"])
    return ModelCard.from_dict(fields, "trained model card")
