"""``evaluate(cfg)``: run the real inference pipeline on labelled scenes and score it."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from detector.bundle import ModelCard, read_card, resolve_weights
from detector.errors import DetectorError
from detector.evaluate.agnostic import agnostic_report, label_classes_known
from detector.evaluate.plots import write_plots
from detector.evaluate.report import write_report
from detector.evaluate.scenes import find_scenes, load_scene, scene_aoi
from detector.evaluate.scoring import SceneEval, build_report
from detector.labels import read_geojson
from detector.scene_files import unique_names
from detector.validation import check_config

log = logging.getLogger(__name__)
GEOMETRIES = ("rotated", "axis_aligned")


def flatten(node: Mapping[str, Any] | None, prefix: str = "") -> dict[str, Any]:
    """Nested overrides → dotted keys, e.g. {"tiling": {"overlap_m": 20}} → tiling.overlap_m."""
    out: dict[str, Any] = {}
    for key, value in (node or {}).items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def model_card(weights: str | Path | None) -> tuple[Path, ModelCard]:
    """The weights path and the card inference will use (defaults for a bare ``.pt``)."""
    from detector.infer.model import load_bundle

    path = resolve_weights(weights)
    card = read_card(path)
    if card is None:  # a plain Ultralytics .pt: its classes and task come from the model
        card = load_bundle(path, device="cpu").card
    return path, card


def infer_overrides(cfg: DictConfig, out: Path) -> dict[str, Any]:
    """Overrides for ``detector.infer.run``: outputs under ``out``, fresh results, the AOI,
    plus whatever ``cfg.infer`` sets."""
    extra = flatten(OmegaConf.to_container(cfg.infer, resolve=True) if cfg.get("infer") else {})
    return {"out": str(out), "overwrite": True, "quicklook": bool(cfg.quicklook),
            "aoi": cfg.aoi, **extra}


def class_agnostic_mode(setting: Any, pairs: list[tuple[Path, Path]],
                        classes: list[str]) -> list[str] | None:
    """The label classes when scoring is class-agnostic, else None.

    ``setting`` is ``auto`` (agnostic when some label class is not one of the model's
    ``classes``), true or false (class-aware: unknown label classes are an error).
    """
    if setting is False:
        return None
    found = sorted({p.cls for _, labels in pairs for p in read_geojson(labels)[0]})
    if setting is True or not label_classes_known(found, classes):
        log.info("scoring class-agnostically: label classes %s, model classes %s",
                 found, classes)
        return found or list(classes)
    return None


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate a model on labelled scenes; write report.json, report.md and plots to cfg.out.

    Args:
        cfg: the composed ``conf/evaluate.yaml``.

    Returns:
        The report dict (also written to ``cfg.out/report.json``).

    Raises:
        DetectorError: no labelled scenes, bad labels, bad weights, or every scene failed.
    """
    from detector.infer import run
    from detector.infer.api import config as infer_config
    from detector.infer.demo import demo_scene

    check_config(cfg, "evaluate")
    out = Path(cfg.out)
    overrides = infer_overrides(cfg, out / "predictions")
    check_config(infer_config(**overrides), "infer")  # a bad infer.* fails before any work
    pairs = find_scenes(cfg.source or demo_scene(), cfg.split)
    weights, card = model_card(cfg.weights)
    classes = list(card.classes)
    geometry = cfg.geometry if cfg.geometry != "auto" else (
        "axis_aligned" if card.task == "detect" else "rotated")
    if geometry not in GEOMETRIES:
        raise DetectorError(f"geometry={cfg.geometry}: unknown; use auto, "
                            + " or ".join(GEOMETRIES))
    agnostic = class_agnostic_mode(cfg.class_agnostic, pairs, classes)
    # Read every label file first: a bad one fails the run before any inference.
    scenes = [load_scene(image, labels, agnostic or classes) for image, labels in pairs]
    results = {Path(r.scene).resolve(): r
               for r in run([str(s.image) for s in scenes], weights=str(weights), **overrides)}
    evals, failed = [], []
    # The names inference gave the prediction files: unique for 2023/site.tif + 2024/site.tif.
    names = unique_names([s.image for s in scenes])
    for scene, name in zip(scenes, names, strict=True):
        result = results.get(scene.image.resolve())
        if result is None or not result.ok:
            failed.append({"scene": name,
                           "error": result.error if result else "not run by inference"})
            continue
        evals.append(SceneEval(name, result.detections, result.counts, scene.truth,
                               scene.width, scene.height, scene_aoi(cfg.aoi, scene.image)))
    if not evals:
        raise DetectorError(f"{pairs[0][0].parent}: inference failed on every scene "
                            f"({failed[0]['error'] if failed else 'no scenes'}); fix the first "
                            "error above and rerun")
    axis_aligned = geometry == "axis_aligned"
    if agnostic:
        report = {"n_scenes": len(evals), "label_classes": agnostic,
                  "class_agnostic": agnostic_report(evals, card, cfg.iou, cfg.min_inside,
                                                    axis_aligned)}
    else:
        report = build_report(evals, classes, card.operating_threshold, cfg.iou,
                              list(cfg.iou_thresholds), cfg.min_inside,
                              axis_aligned=axis_aligned, not_wagons=list(card.not_wagons))
    ran = evals[0].counts
    report = {"source": str(cfg.source or pairs[0][0]),
              "model": {"path": str(weights), "sha256": card.sha256,
                        "task": card.task, "m_per_px": card.m_per_px},
              "inference": {"backend": ran.get("backend"), "precision": ran.get("precision")},
              **report, "failed": failed}
    if cfg.plots and not agnostic:
        report["plots"] = write_plots(report, out)
    paths = write_report(report, out)
    log.info("wrote %s and %s", paths["md"], paths["json"])
    return report
