"""Refit the calibration of an existing bundle on a labelled dataset split.

``python -m detector.train.recalibrate weights=BUNDLE.pt (scenes=DIR | dataset=DATA.yaml)``
rewrites the card's calibration maps, candidate settings, operating thresholds, recall and
ECE figures; the weights are untouched. Use it after changing how candidates are collected,
or to calibrate on held-out labels of your own imagery.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf

from detector import calibration
from detector.bundle import ModelCard, read_card, threshold_for, write_card
from detector.config import CONFIG_PATH, HYDRA_VERSION_BASE
from detector.data.yolo import class_names
from detector.errors import DetectorError, guarded
from detector.shift import SIGNALS, fit_alarm, fit_reference, output_signals
from detector.train import offline
from detector.train.calibrate import (
    calibrate,
    collect_candidates,
    dispersion,
    run_scenes,
    scene_candidates,
)
from detector.train.card import calibration_fields, calibration_metrics
from detector.validation import CALIBRATION, check_config, check_values

log = logging.getLogger(__name__)


def _recorded_scenes(data_yaml: Path, split: str) -> list[tuple[Path, Path]]:
    """The whole labelled scenes of ``split`` that dataset.json records (may be none)."""
    from detector.evaluate.scenes import find_scenes

    try:
        return find_scenes(data_yaml.with_name("dataset.json"), split)
    except DetectorError as err:
        log.warning("%s; calibrating on the %s chips instead", err, split)
        return []


def recalibrate(weights: str | Path, cal_cfg: DictConfig, data_yaml: str | Path | None = None,
                split: str = "val", scenes: str | Path | None = None, device: Any = None,
                progress: bool = False) -> ModelCard:
    """Refit the calibration of ``weights``; rewrite its card and return it.

    Candidates come from tiled inference on whole labelled scenes — a folder of
    ``NAME.tif`` + ``NAME.geojson`` pairs (``scenes``), or the ``split`` scenes that
    ``data_yaml``'s dataset.json records when ``cal_cfg.level == "scenes"`` — else from the
    split's chips. ``progress`` shows bars over the scenes or chip batches.

    Raises:
        DetectorError: no card beside the weights, nothing to calibrate on, or the dataset's
            classes differ from the bundle's.
    """
    from ultralytics import YOLO

    from detector.evaluate.scenes import find_scenes

    check_values(cal_cfg, CALIBRATION, "the calibration config")
    offline.provide_font()
    weights = Path(weights)
    card = read_card(weights)
    if card is None:
        raise DetectorError(f"{weights}: no model card beside it; recalibrate bundles written "
                            "by detector.train (NAME.pt + NAME.json)")
    names = list(card.classes)
    if scenes is None and data_yaml is None:
        raise DetectorError("recalibrate: nothing to calibrate on; pass scenes=FOLDER of "
                            "labelled GeoTIFFs or dataset=DATA.yaml")
    if scenes is not None:
        pairs, source = find_scenes(scenes), str(Path(scenes).resolve())
    else:
        data_yaml = Path(data_yaml)
        if class_names(data_yaml) != names:
            raise DetectorError(f"{data_yaml}: classes {class_names(data_yaml)} differ from the "
                                f"bundle's {names}; build the dataset with data.classes={names}")
        pairs = _recorded_scenes(data_yaml, split) if cal_cfg.get("level") == "scenes" else []
        source = f"{data_yaml.resolve()}:{split}"
    if pairs:
        results = run_scenes(weights, pairs, cal_cfg, device, progress)
        cands = scene_candidates(results, pairs, names, cal_cfg)
    else:
        cands = collect_candidates(YOLO(str(weights)), data_yaml, len(names), cal_cfg,
                                   card.imgsz, device, split, progress)
    cal = calibrate(cands, names, int(cal_cfg.min_samples), str(cal_cfg.operating))
    nms = OmegaConf.to_container(cal_cfg.nms, resolve=True)
    metrics = {**card.metrics, **calibration_metrics(cal),
               "calibrated_on": {"source": source, "level": "scenes" if pairs else "chips",
                                 "scenes": len(pairs), "candidates": cal["n_candidates"],
                                 "truth": cal["n_truth"]}}
    fields = {**card.to_dict(),
              **calibration_fields(cal, names, float(cal_cfg.candidate_conf), nms),
              # Scene-to-scene variance beyond the independent-detection model (whole scenes).
              "dispersion": (dispersion(cands, names, cal["calibration"], cal["recall_counts"],
                                        list(card.not_wagons)) if pairs else {}),
              "metrics": metrics}
    if pairs:  # the reference needs whole scenes: chips keep the old one
        fields["shift"] = shift_reference(results, cal_cfg, fields)
    card = ModelCard.from_dict(fields, weights)
    write_card(weights, card)
    log.info("%s: recalibrated on %s (%s): %d candidates, ECE %.4f -> %.4f", weights, source,
             metrics["calibrated_on"]["level"], cal["n_candidates"],
             cal["ece"]["ece_before"], cal["ece"]["ece_after"])
    return read_card(weights)


def shift_reference(results: list[Any], cal_cfg: DictConfig,
                    fields: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """The card's ``shift`` reference from calibration scene runs.

    The feature reference (tile features; torch backend) at the top level, and, when the
    new calibration ``fields`` are given, the output-signal alarm rule under ``alarm``
    (signals recomputed with that calibration; each scene's feature score is its
    leave-one-out score, as a new scene would get).
    """
    settings = cal_cfg.get("shift") or {}
    logs = [r.features for r in results]
    layers = {f.layer for f in logs if f is not None}
    arrays = [f.array() if f is not None else None for f in logs]
    names = [Path(r.scene).name for r in results]
    reference = fit_reference(arrays, layers.pop() if len(layers) == 1 else None,
                              int(settings.get("components", 8)),
                              float(settings.get("margin", 1.0)),
                              int(settings.get("max_patches", 2000)), names)
    if reference is None:
        log.warning("no feature shift reference: tile features need at least two calibration "
                    "scenes and the torch backend")
    if fields is None:
        return reference
    loo = iter((reference or {}).get("reference", {}).get("loo_scores", []))
    feature = [next(loo, None) if a is not None and len(a) and reference else None
               for a in arrays]
    rows = [scene_signals(r, fields, f) for r, f in zip(results, feature, strict=True)]
    alarm_cfg = settings.get("alarm") or {}
    rule = fit_alarm(rows, list(alarm_cfg.get("use", list(SIGNALS))),
                     float(alarm_cfg.get("threshold_z", 3.0)), names)
    if rule is None:
        return reference
    return {**(reference or {}), "alarm": rule}


def scene_signals(result: Any, fields: Mapping[str, Any], feature: float | None
                  ) -> dict[str, float | None]:
    """:func:`detector.shift.output_signals` of a scene result under calibration ``fields``."""
    maps = fields.get("calibration") or {}
    dets = result.detections
    scores = np.array([d.score for d in dets], float)
    cls = np.array([d.cls for d in dets], dtype=object)
    p = scores.copy()
    for name in set(cls.tolist()):
        p[cls == name] = calibration.apply(maps.get(name), scores[cls == name])
    counted = np.array([d.score >= threshold_for(fields["operating_threshold"], d.cls)
                        for d in dets], bool)
    return output_signals(p, counted, float(result.counts["area_km2"]), feature)


@hydra.main(config_path=CONFIG_PATH, config_name="recalibrate", version_base=HYDRA_VERSION_BASE)
def main(cfg: DictConfig) -> None:
    """Hydra entry: see the module docstring."""
    def body() -> None:
        check_config(cfg, "recalibrate")
        recalibrate(cfg.weights, cfg.calibration, cfg.dataset, cfg.split, cfg.scenes,
                    cfg.device, bool(cfg.progress))

    guarded(body)


if __name__ == "__main__":
    main()
