"""``adapt(cfg)``: a few corrected scenes of new imagery -> a fine-tuned, recalibrated bundle.

Steps, all within ``cfg.minutes`` of wall clock:

1. check the scenes (pairs, classes, label positions) before anything is written;
2. run the base bundle on every scene (the "before" figures; the time of one pass also
   sizes the inference reserve);
3. chip the scenes once, with the base model's resolution, chip size and normalisation;
4. per fold, fine-tune from the base on the other folds' chips and score the fold's scenes
   with it; then fine-tune the final model on all chips (the budget is shared equally);
5. fit the final calibration on the pooled held-out scores (cross-fitting), and, per fold,
   a calibration on the other folds only for the before/after table;
6. run the final model on the scenes for the shift reference, write OUT/NAME.pt + card.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from detector.adapt.crossfit import (
    FoldRun,
    calibration_card,
    format_before_after,
    headline,
    held_out_after,
    pooled_candidates,
    report,
)
from detector.adapt.folds import assign_folds, chip_scene, chips_by_scene, write_fold_dataset
from detector.adapt.inputs import AdaptScene, check_scenes
from detector.atomic import sha256_file, write_text
from detector.bundle import ModelCard, read_card, resolve_weights
from detector.config import compose
from detector.errors import DetectorError
from detector.progress import progress
from detector.quiet import quiet
from detector.train.calibrate import run_scenes
from detector.train.card import calibration_metrics

log = logging.getLogger(__name__)
# Inside a step only their warnings show: the step's own line and the bar say what runs.
QUIETED = ("detector.train", "detector.infer", "detector.data", "detector.evaluate")


@dataclass
class Budget:
    """Shares what is left of the wall-clock budget among the fine-tunes still to run."""

    deadline: float
    reserve_s: float
    overhead_s: float = 0.0  # seconds a fine-tune spends outside its training time limit
    spent: list[dict[str, Any]] = field(default_factory=list)

    def next_seconds(self, remaining: int) -> float:
        """Training time for the next of ``remaining`` fine-tunes (at least 1 s)."""
        left = self.deadline - time.monotonic() - self.reserve_s
        return max(1.0, left / max(1, remaining) - self.overhead_s)

    def record(self, label: str, limit_s: float, wall_s: float) -> None:
        self.overhead_s = max(self.overhead_s, wall_s - limit_s)
        self.spent.append({"model": label, "train_limit_s": round(limit_s, 1),
                           "wall_s": round(wall_s, 1)})


@dataclass
class AdaptResult:
    """What :func:`adapt` wrote and measured."""

    weights: Path
    card: dict[str, Any]
    table: str


def adapt(cfg: DictConfig) -> AdaptResult:
    """Adapt the base bundle to the labelled scenes of ``cfg.scenes`` (see module docstring).

    Raises:
        DetectorError: bad scenes or labels, fewer than two scenes, a base without a card, or
            an existing output without ``overwrite=true`` (one line; nothing written).
    """
    start = time.monotonic()
    budget_s = float(cfg.minutes) * 60
    if budget_s <= 0:
        raise DetectorError(f"minutes={cfg.minutes}: the time budget must be positive")
    base = resolve_weights(cfg.weights)
    base_card = read_card(base)
    if base_card is None:
        raise DetectorError(f"{base}: no model card beside it; adapt starts from a detector "
                            "bundle (NAME.pt + NAME.json), e.g. the bundled model (weights=null)")
    classes = list(base_card.classes)
    scenes = check_scenes(cfg.scenes, classes)
    try:
        folds = assign_folds([s.name for s in scenes], cfg.folds, int(cfg.seed))
    except ValueError as err:
        raise DetectorError(f"folds={cfg.folds}: {err}; use folds=null or at least 2") from err
    out = Path(str(cfg.out)).expanduser()
    target = out / f"{cfg.name}.pt"
    if target.exists() and not cfg.overwrite:
        raise DetectorError(f"{target}: exists; pass overwrite=true or another name=")
    pairs = [(s.image, s.labels) for s in scenes]
    not_wagons = list(base_card.not_wagons)

    fold_ids = sorted(set(folds.values()))
    steps = progress(total=4 + 2 * len(fold_ids), desc="adapt", unit="step",
                     enabled=bool(cfg.get("progress", True)))

    @contextmanager
    def step(label: str) -> Iterator[None]:
        """One step of the run: the bar's label (a line when not a terminal), third-party
        output quiet."""
        log.debug("adapt: %s", label)
        steps.set_postfix_str(label, refresh=True)
        with quiet(log, label, QUIETED):
            yield
        steps.update()

    with _work_dir(out, str(cfg.name), bool(cfg.keep_work)) as work, steps:
        log.info("adapting %s on %d scenes in %d folds, budget %.1f min", base.name,
                 len(scenes), len(fold_ids), budget_s / 60)
        t0 = time.monotonic()
        with step("counting with the base model"):
            base_results = _infer(base, pairs, cfg)
        one_pass = time.monotonic() - t0
        before = headline([report(scenes, base_results, classes,
                                  base_card.operating_threshold, not_wagons)], classes)
        with step("chipping the scenes"):
            dataset = _chip(cfg, base_card, scenes, work)
        chips = chips_by_scene(dataset)
        # Inference still to come: each scene once by its fold model, once by the final one.
        budget = Budget(start + budget_s, float(cfg.reserve) * budget_s + 2.2 * one_pass)
        runs = []
        for i, fold in enumerate(fold_ids):
            held = [s for s in scenes if folds[s.name] == fold]
            train_on = sorted(s.name for s in scenes if folds[s.name] != fold)
            data_yaml = write_fold_dataset(work / "folds" / str(fold), dataset, chips, train_on,
                                           int(cfg.val_chips), int(cfg.seed))
            seconds = budget.next_seconds(len(fold_ids) + 1 - i)
            with step(f"fine-tune fold {fold} ({seconds:.0f} s)"):
                weights = _finetune(cfg, base, base_card, data_yaml, work / "runs" / f"fold{fold}",
                                    budget, seconds, f"fold {fold}")
            with step(f"scoring fold {fold}'s held-out scenes"):
                results = run_scenes(weights, [(s.image, s.labels) for s in held],
                                     cfg.calibration, cfg.device)
            runs.append(FoldRun(fold, held, results, _trained_scenes(data_yaml)))
        data_yaml = write_fold_dataset(work / "folds" / "all", dataset, chips,
                                       [s.name for s in scenes], int(cfg.val_chips),
                                       int(cfg.seed))
        seconds = budget.next_seconds(1)
        with step(f"fine-tune on all scenes ({seconds:.0f} s)"):
            final = _finetune(cfg, base, base_card, data_yaml, work / "runs" / "final", budget,
                              seconds, "final")

        names = classes
        cands, used = pooled_candidates(runs, names, cfg.calibration)
        fields, cal = calibration_card(cands, names, cfg.calibration, not_wagons)
        reports, provenance = held_out_after(runs, names, cfg.calibration, not_wagons)
        after = headline(reports, names)
        table = format_before_after(before, after, base.name)

        from detector.train.recalibrate import shift_reference

        with step("scoring every scene with the final model"):
            final_results = run_scenes(final, pairs, cfg.calibration, cfg.device)
        card = read_card(final).to_dict()
        card.update(fields)
        card["metrics"].update(calibration_metrics(cal))
        # Ultralytics validated on a few training chips: not evidence (held_out below is).
        card["metrics"]["split"] = "training chips (not held out; see adapted_from.held_out)"
        card["metrics"]["calibrated_on"] = {
            "source": str(Path(str(cfg.scenes)).resolve()), "level": "scenes",
            "cross_fitted": True, "scenes": len(used), "candidates": cal["n_candidates"],
            "truth": cal["n_truth"]}
        card["shift"] = shift_reference(final_results, cfg.calibration)
        minutes = (time.monotonic() - start) / 60
        card["adapted_from"] = {
            "base": {"path": str(base.resolve()), "name": base.name,
                     "sha256": base_card.sha256 or sha256_file(base)},
            "scenes": [{"name": s.name, "image": str(s.image.resolve()),
                        "labels": str(s.labels.resolve()), "vehicles": s.vehicles,
                        "fold": folds[s.name],
                        "chips": len(chips.get(s.name, []))} for s in scenes],
            "budget_minutes": float(cfg.minutes), "minutes": round(minutes, 2),
            "fine_tunes": budget.spent,
            "cross_fitting": {
                "design": "folds by scene: each fold's scenes are scored by a model fine-tuned "
                          "from the base without them; the final calibration is fitted on "
                          "those held-out scores; the final model is fine-tuned on all scenes",
                "folds": len(fold_ids), "provenance": provenance},
            "held_out": {"before": before, "after": after,
                         "note": "every scene scored by a model and a calibration fitted "
                                 "without it (calibration of each fold: the other folds)"},
        }
        weights = _write(final, target, card)
        write_text(out / f"{cfg.name}.adapt.md",
                   f"# {cfg.name}: adapted from {base.name}\n\n{table}\n\n"
                   f"{len(scenes)} scenes, {len(fold_ids)} folds, {minutes:.1f} of "
                   f"{float(cfg.minutes):g} minutes.\n")
    return AdaptResult(weights, read_card(weights), table)


# -- pieces -------------------------------------------------------------------------------

@contextmanager
def _work_dir(out: Path, name: str, keep: bool) -> Iterator[Path]:
    """A hidden scratch folder in ``out``, removed at the end unless ``keep``."""
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{name}.work.", dir=out))
    try:
        yield work
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            log.info("work folder kept: %s", work)


def _infer(weights: Path, pairs: Sequence[tuple[Path, Path]], cfg: DictConfig) -> list[Any]:
    """The model as a user runs it (its card's settings) on the scenes; failures stop."""
    from detector.infer import run

    with tempfile.TemporaryDirectory(prefix="adapt_") as tmp:
        results = run([str(image) for image, _ in pairs], weights, out=tmp, overwrite=True,
                      quicklook=False, progress=False,
                      **({"device": str(cfg.device)} if cfg.device is not None else {}))
    for (image, _), result in zip(pairs, results, strict=True):
        if not result.ok:
            raise DetectorError(f"{image}: inference failed ({result.error}); fix the scene or "
                                "leave it out")
    return results


def _chip(cfg: DictConfig, card: dict[str, Any], scenes: Sequence[AdaptScene], work: Path
          ) -> Path:
    """Chip every scene once at the base model's resolution, size and normalisation."""
    from detector.data import build_dataset

    staging = work / "scenes"
    staging.mkdir(parents=True)
    for scene in scenes:
        os.symlink(scene.image.resolve(), staging / f"{scene.name}{scene.image.suffix}")
        os.symlink(scene.labels.resolve(), staging / f"{scene.name}.geojson")
    data = compose("train", ["data=geojson", f"data.root={staging}"]).data
    OmegaConf.set_struct(data, False)
    data.classes = list(card.classes)
    data.m_per_px = float(card.m_per_px)
    data.normalization = dict(card.normalization)
    data.chip.size = int(card.imgsz)
    for key, value in cfg.chip.items():
        data.chip[key] = value
    # Every chip is listed per fold afterwards; this split only satisfies the builder.
    data.split = {"val": 0.3, "test": 0.0, "by": "scene", "block_m": 1000, "seed": 0}
    suffixes = {s.image.suffix.lower() for s in scenes}
    if len(suffixes) > 1:
        raise DetectorError(f"{cfg.scenes}: scenes in several formats ({sorted(suffixes)}); "
                            "convert them to one (e.g. GeoTIFF)")
    data.pattern = f"*{suffixes.pop()}"
    return build_dataset(data, work / "dataset", str(card.task)).parent


def _trained_scenes(data_yaml: Path) -> list[str]:
    """The scenes a fold's training list actually holds (read back from its chips)."""
    lines = (data_yaml.parent / "train.txt").read_text().splitlines()
    return sorted({chip_scene(Path(line)) for line in lines if line.strip()})


def _finetune(cfg: DictConfig, base: Path, card: ModelCard, data_yaml: Path,
              run_dir: Path, budget: Budget, seconds: float, label: str) -> Path:
    """Fine-tune from ``base`` on ``data_yaml`` for ``seconds`` of training (this model's
    share of the budget, :meth:`Budget.next_seconds`)."""
    from detector.train.train import train

    task = str(card.task)
    arch = (card.training or {}).get("arch") or (
        "yolo11n-obb.yaml" if task == "obb" else "yolo11n.yaml")
    tcfg = compose("train", [f"dataset={data_yaml}", f"model.init={base}", f"model.arch={arch}",
                             f"model.task={task}", f"paths.output_dir={run_dir}",
                             "paths.bundle_name=model", "evaluate_test=false",
                             "tensorboard=false", f"trainer.imgsz={int(card.imgsz)}",
                             f"trainer.seed={int(cfg.seed)}"])
    OmegaConf.set_struct(tcfg, False)
    tcfg.augment = cfg.augment
    tcfg.calibration = OmegaConf.merge(cfg.calibration, {"level": "chips"})
    for key, value in cfg.trainer.items():
        tcfg.trainer[key] = value
    tcfg.trainer.time = seconds / 3600
    if cfg.device is not None:
        tcfg.trainer.device = cfg.device
    log.debug("fine-tune %s: %.0f s of training", label, seconds)
    t0 = time.monotonic()
    weights = train(tcfg)
    budget.record(label, seconds, time.monotonic() - t0)
    return weights


def _write(final: Path, target: Path, card: dict[str, Any]) -> Path:
    """The bundle OUT/NAME.pt + card, each written atomically."""
    from detector.train.train import write_bundle

    card = {k: v for k, v in card.items() if k not in ("sha256", "created", "weights")}
    return write_bundle(final, target, json.loads(json.dumps(card)))

