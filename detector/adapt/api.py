"""``adapt(cfg)``: a few corrected scenes of new imagery -> the best of three candidates.

Steps, all within ``cfg.minutes`` of wall clock (the CLI counts from its own start):

1. check the scenes (pairs, classes, label positions) and the budget (a budget below the
   minimum is refused, naming it) before anything is written;
2. run the base bundle on every scene: candidate "base" (its own card) and, recounted per
   fold with a calibration fitted on the other folds, candidate "base recalibrated";
3. chip the scenes once, with the base model's resolution, chip size and normalisation
   (a scene smaller than a chip becomes one padded chip), plus a replay of synthetic
   chips in the base's training style so classes the scenes lack are not forgotten;
4. per fold, fine-tune from the base (frozen backbone, training augmentation) on the other
   folds' chips and the replay, score the fold's scenes with it: candidate "fine-tuned
   recalibrated" (each fold recalibrated on the others); the fine-tunes share what is left
   of the budget equally;
5. choose (``detector.adapt.choice``): the best by held-out wagon error, coverage breaking
   ties, never worse than the base; only when the fine-tune wins (or ``force=true``) is
   the final model fine-tuned on all chips;
6. write OUT/NAME.pt + card (calibration, shift reference, what was shipped and why) and
   the table of every candidate (OUT/NAME.adapt.md).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from detector.adapt.choice import BASE, FINETUNED, RECALIBRATED, choose, format_candidates
from detector.adapt.crossfit import (
    FoldRun,
    calibration_card,
    headline,
    held_out_after,
    pooled_candidates,
    report,
)
from detector.adapt.folds import (
    assign_folds,
    chip_scene,
    chips_by_scene,
    replay_sample,
    write_fold_dataset,
)
from detector.adapt.inputs import AdaptScene, check_scenes
from detector.atomic import sha256_file, write_text
from detector.bundle import ModelCard, read_card, resolve_weights
from detector.config import compose
from detector.errors import DetectorError
from detector.progress import progress
from detector.quiet import quiet
from detector.train.calibrate import run_scenes
from detector.train.card import calibration_metrics
from detector.validation import check_config

log = logging.getLogger(__name__)
# Inside a step only their warnings show: the step's own line and the bar say what runs.
QUIETED = ("detector.train", "detector.infer", "detector.data", "detector.evaluate")


@dataclass
class Budget:
    """Shares what is left of the wall-clock budget equally among the fine-tunes still to run.

    Each fine-tune's share is (deadline - now - reserve) / fine-tunes left, the reserve being
    ``reserve_s`` plus 1.2 x the scoring still to come (scenes still to score x the latest
    seconds per scene, and runs still to start x the latest start-up of a run). Its
    Ultralytics time limit is that share less the overhead a fine-tune spends outside
    training (start-up, closing validation, chip calibration, bundle writing): first the
    configured estimate, then the latest measured.
    """

    deadline: float
    reserve_s: float
    overhead_s: float = 0.0  # seconds a fine-tune spends outside its training time limit
    per_scene_s: float = 0.0  # seconds to score one scene (latest measured)
    per_run_s: float = 0.0  # start-up of one scoring run (model load; latest measured)
    to_score: int = 0  # scene inferences still to come (fold scoring, the final model)
    runs: int = 0  # scoring runs still to come
    max_train_s: float | None = None  # cap on one fine-tune's training time
    spent: list[dict[str, Any]] = field(default_factory=list)

    def left(self) -> float:
        """Seconds left before the reserve."""
        scoring = self.per_scene_s * self.to_score + self.per_run_s * self.runs
        return self.deadline - time.monotonic() - self.reserve_s - 1.2 * scoring

    def next_seconds(self, remaining: int) -> tuple[float, float]:
        """(share, training time) for the next of ``remaining`` fine-tunes (time may be <= 0)."""
        share = self.left() / max(1, remaining)
        seconds = share - self.overhead_s
        return share, seconds if self.max_train_s is None else min(seconds, self.max_train_s)

    def record(self, label: str, share_s: float, limit_s: float, wall_s: float) -> None:
        self.spent.append({"model": label, "share_s": round(share_s, 1),
                           "overhead_s": round(self.overhead_s, 1),
                           "train_limit_s": round(limit_s, 1), "wall_s": round(wall_s, 1)})
        self.overhead_s = max(0.0, wall_s - limit_s)

    def scored(self, results: Sequence[Any], seconds: float) -> None:
        """A scoring run of ``results`` took ``seconds`` (their own times: per scene)."""
        scene_s = sum(float(r.counts.get("seconds") or 0) for r in results if r.ok)
        self.per_scene_s = scene_s / max(1, len(results))
        self.per_run_s = max(0.0, seconds - scene_s)
        self.to_score = max(0, self.to_score - len(results))
        self.runs = max(0, self.runs - 1)


def minimum_seconds(fine_tunes: int, settings: Any) -> float:
    """The least budget worth running: ``fine_tunes`` x (min training + overhead) + fixed."""
    return (fine_tunes * (float(settings.min_train_s) + float(settings.finetune_overhead_s))
            + float(settings.fixed_s))


@dataclass
class AdaptResult:
    """What :func:`adapt` wrote and measured."""

    weights: Path
    card: dict[str, Any]
    table: str
    shipped: str = FINETUNED
    recommended: bool = True
    reason: str = ""


def adapt(cfg: DictConfig, started: float | None = None) -> AdaptResult:
    """Adapt the base bundle to the labelled scenes of ``cfg.scenes`` (see module docstring).

    Args:
        cfg: the ``adapt`` config.
        started: ``time.monotonic()`` when the command started (the CLI passes its start, so
            ``cfg.minutes`` bounds the whole command); default now.

    Raises:
        DetectorError: bad scenes or labels, fewer than two scenes, a base without a card,
            a budget below the minimum (the message names it), or an existing output without
            ``overwrite=true`` (one line; nothing written).
    """
    start = time.monotonic() if started is None else float(started)
    check_config(cfg, "adapt")
    budget_s = float(cfg.minutes) * 60
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
    fold_ids = sorted(set(folds.values()))
    need = minimum_seconds(len(fold_ids) + 1, cfg.budget)
    if budget_s - (time.monotonic() - start) < need:
        raise DetectorError(
            f"minutes={cfg.minutes}: too small for {len(scenes)} scenes in {len(fold_ids)} "
            f"folds; adapt needs at least {math.ceil(need / 6) / 10:.1f} minutes "
            f"({len(fold_ids) + 1} fine-tunes of >= {float(cfg.budget.min_train_s):g} s "
            "training each, plus start-up, inference and writing): pass a larger minutes=")
    force = bool(cfg.force)
    out = Path(str(cfg.out)).expanduser()
    target = out / f"{cfg.name}.pt"
    if target.exists() and not cfg.overwrite:
        raise DetectorError(f"{target}: exists; pass overwrite=true or another name=")
    pairs = [(s.image, s.labels) for s in scenes]
    not_wagons = list(base_card.not_wagons)

    fold_ids = sorted(set(folds.values()))
    steps = progress(total=3, desc="adapt", unit="step",
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
            base_results = run_scenes(base, pairs, cfg.calibration, cfg.device)
        one_pass = time.monotonic() - t0
        rows: dict[str, dict[str, Any]] = {}
        rows[BASE] = headline([report(scenes, base_results, classes,
                                      base_card.operating_threshold, not_wagons)], classes)
        # The base recalibrated: its own candidates, each fold calibrated on the others.
        base_runs = [FoldRun(fold, [s for s in scenes if folds[s.name] == fold],
                             [r for s, r in zip(scenes, base_results, strict=True)
                              if folds[s.name] == fold], []) for fold in fold_ids]
        reports, base_provenance = held_out_after(base_runs, classes, cfg.calibration,
                                                  not_wagons)
        rows[RECALIBRATED] = headline(reports, classes)

        # Still to come after the fine-tunes: each scene once by its fold model (and once
        # by the final model), calibration and writing.
        budget = Budget(start + budget_s, float(cfg.reserve) * budget_s,
                        float(cfg.budget.finetune_overhead_s), max_train_s=cfg.budget.get(
                            "max_train_s"))
        budget.scored(base_results, one_pass)  # measures a run; then what is still to come:
        budget.to_score, budget.runs = 2 * len(scenes), len(fold_ids) + 1
        with step("chipping, fine-tuning and scoring the folds"):
            runs, final, provenance, skipped = _finetunes(cfg, base, base_card, scenes, folds,
                                                          work, budget, rows, force)
        choice = choose(rows, float(cfg.tie), FINETUNED if force else None)
        if choice.shipped == FINETUNED and final is None:
            choice = choose({k: v for k, v in rows.items() if k != FINETUNED}, float(cfg.tie))
            choice = replace(choice, reason=f"{choice.reason}; the fine-tune could not be "
                                            f"shipped: {skipped}")
        elif skipped:
            choice = replace(choice, reason=f"{choice.reason}; fine-tuning stopped: {skipped}")
        table = format_candidates(rows, choice.shipped, base.name)
        log.info("%s", choice.reason)

        from detector.train.recalibrate import shift_reference

        if choice.shipped == FINETUNED:
            cands, used = pooled_candidates(runs, classes, cfg.calibration)
            with step("scoring every scene with the final model"):
                final_results = run_scenes(final, pairs, cfg.calibration, cfg.device)
            weights_src, card = final, read_card(final).to_dict()
            # Ultralytics validated on a few training chips: not evidence (held_out is).
            card["metrics"]["split"] = "training chips (not held out; see adapted_from.held_out)"
        elif choice.shipped == RECALIBRATED:
            cands, used = pooled_candidates(base_runs, classes, cfg.calibration)
            final_results = base_results
            weights_src, card = base, base_card.to_dict()
            provenance = base_provenance
        else:
            cands, used, final_results = None, [], None
            weights_src, card = base, base_card.to_dict()
        if cands is not None:
            fields, cal = calibration_card(cands, classes, cfg.calibration, not_wagons)
            card.update(fields)
            card["metrics"].update(calibration_metrics(cal))
            card["metrics"]["calibrated_on"] = {
                "source": str(Path(str(cfg.scenes)).resolve()), "level": "scenes",
                "cross_fitted": choice.shipped == FINETUNED, "scenes": len(used),
                "candidates": cal["n_candidates"], "truth": cal["n_truth"]}
            card["shift"] = shift_reference(final_results, cfg.calibration, fields)
        minutes = (time.monotonic() - start) / 60
        card["adapted_from"] = {
            "base": {"path": str(base.resolve()), "name": base.name,
                     "sha256": base_card.sha256 or sha256_file(base)},
            "shipped": choice.shipped, "recommended": choice.recommended,
            "reason": choice.reason, "forced": force,
            "scenes": [{"name": s.name, "image": str(s.image.resolve()),
                        "labels": str(s.labels.resolve()), "vehicles": s.vehicles,
                        "fold": folds[s.name]} for s in scenes],
            "budget_minutes": float(cfg.minutes), "minutes": round(minutes, 2),
            "fine_tunes": budget.spent, "fine_tune_skipped": skipped,
            "recipe": _recipe(cfg),
            "cross_fitting": {
                "design": "folds by scene: each fold's scenes are scored by a model fine-tuned "
                          "from the base without them and recounted with a calibration "
                          "fitted on the other folds only; every candidate (base, base "
                          "recalibrated, fine-tuned recalibrated) is scored on the same folds",
                "folds": len(fold_ids), "provenance": provenance},
            "held_out": {"candidates": rows, "before": rows[BASE], "after": rows[choice.shipped],
                         "note": "every scene scored by a model and a calibration fitted "
                                 "without it (calibration of each fold: the other folds)"},
        }
        weights = _write(weights_src, target, card)
        minutes = (time.monotonic() - start) / 60
        write_text(out / f"{cfg.name}.adapt.md",
                   f"# {cfg.name}: adapted from {base.name}\n\n{table}\n\n{choice.reason}\n\n"
                   f"{len(scenes)} scenes, {len(fold_ids)} folds, {minutes:.1f} of "
                   f"{float(cfg.minutes):g} minutes.\n")
    return AdaptResult(weights, read_card(weights), table, choice.shipped, choice.recommended,
                       choice.reason)


def _finetunes(cfg: DictConfig, base: Path, base_card: ModelCard, scenes: list[AdaptScene],
               folds: dict[str, int], work: Path, budget: Budget,
               rows: dict[str, dict[str, Any]], force: bool
               ) -> tuple[list[FoldRun], Path | None, list[dict], str | None]:
    """Fold fine-tunes (scored into ``rows``), then the final one if it can be shipped.

    Returns:
        (fold runs, final weights or None, provenance, why fine-tuning stopped or None).
    """
    classes, not_wagons = list(base_card.classes), list(base_card.not_wagons)
    fold_ids = sorted(set(folds.values()))
    min_train = float(cfg.budget.min_train_s)
    if budget.next_seconds(len(fold_ids) + 1)[1] < min_train:
        return [], None, [], "no time left for the fine-tunes after the base inference"
    dataset = _chip(cfg, base_card, scenes, work)
    chips = chips_by_scene(dataset)
    replay = _replay_chips(cfg, base_card, work, sum(len(v) for v in chips.values()))
    runs = []
    for i, fold in enumerate(fold_ids):
        share, seconds = budget.next_seconds(len(fold_ids) + 1 - i)
        if seconds < min_train:
            return runs, None, [], f"no time left for the fold {fold} fine-tune"
        held = [s for s in scenes if folds[s.name] == fold]
        train_on = sorted(s.name for s in scenes if folds[s.name] != fold)
        data_yaml = write_fold_dataset(work / "folds" / str(fold), dataset, chips, train_on,
                                       int(cfg.val_chips), int(cfg.seed), replay)
        weights = _finetune(cfg, base, base_card, data_yaml, work / "runs" / f"fold{fold}",
                            budget, share, seconds, f"fold {fold}")
        t0 = time.monotonic()
        results = run_scenes(weights, [(s.image, s.labels) for s in held], cfg.calibration,
                             cfg.device)
        budget.scored(results, time.monotonic() - t0)
        runs.append(FoldRun(fold, held, results, _trained_scenes(data_yaml, dataset)))
    reports, provenance = held_out_after(runs, classes, cfg.calibration, not_wagons)
    rows[FINETUNED] = headline(reports, classes)
    if not force and choose(rows, float(cfg.tie)).best != FINETUNED:
        return runs, None, provenance, None  # not shipped: the final fine-tune is not needed
    share, seconds = budget.next_seconds(1)
    if seconds < min_train:
        return runs, None, provenance, "no time left for the final fine-tune"
    data_yaml = write_fold_dataset(work / "folds" / "all", dataset, chips,
                                   [s.name for s in scenes], int(cfg.val_chips),
                                   int(cfg.seed), replay)
    final = _finetune(cfg, base, base_card, data_yaml, work / "runs" / "final", budget,
                      share, seconds, "final")
    return runs, final, provenance, None


def _recipe(cfg: DictConfig) -> dict[str, Any]:
    """The fine-tune recipe as recorded in the card."""
    trainer = OmegaConf.to_container(cfg.trainer, resolve=True)
    return {"freeze": trainer.get("freeze"), "optimizer": trainer.get("optimizer"),
            "lr0": trainer.get("lr0"), "augment": "conf/augment (training augmentation)",
            "replay": OmegaConf.to_container(cfg.replay, resolve=True)}


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


def _chip(cfg: DictConfig, card: ModelCard, scenes: Sequence[AdaptScene], work: Path,
          name: str = "dataset") -> Path:
    """Chip every scene once at the base model's resolution, size and normalisation."""
    staging = work / f"{name}_scenes"
    staging.mkdir(parents=True)
    for scene in scenes:
        os.symlink(scene.image.resolve(), staging / f"{scene.name}{scene.image.suffix}")
        os.symlink(scene.labels.resolve(), staging / f"{scene.name}.geojson")
    suffixes = {s.image.suffix.lower() for s in scenes}
    if len(suffixes) > 1:
        raise DetectorError(f"{cfg.scenes}: scenes in several formats ({sorted(suffixes)}); "
                            "convert them to one (e.g. GeoTIFF)")
    return _build(cfg, card, staging, f"*{suffixes.pop()}", work / name)


def _build(cfg: DictConfig, card: ModelCard, root: Path, pattern: str, out: Path,
           chip: dict[str, Any] | None = None, by_block: bool = False) -> Path:
    """Chip the scenes ``root/pattern`` as the base model sees them (``chip``: overrides)."""
    from detector.data import build_dataset

    data = compose("train", ["data=geojson", f"data.root={root}"]).data
    OmegaConf.set_struct(data, False)
    data.classes = list(card.classes)
    data.m_per_px = float(card.m_per_px)
    data.normalization = dict(card.normalization)
    data.chip.size = int(card.imgsz)
    for key, value in {**cfg.chip, **(chip or {})}.items():
        data.chip[key] = value
    # Every chip is listed per fold afterwards; this split only satisfies the builder (by
    # block, one block per chip, where there may be a single scene).
    block_m = int(card.imgsz) * float(card.m_per_px)
    data.split = {"val": 0.3, "test": 0.0, "by": "block" if by_block else "scene",
                  "block_m": block_m if by_block else 1000, "seed": 0}
    data.pattern = pattern
    return build_dataset(data, out, str(card.task)).parent


def _replay_chips(cfg: DictConfig, card: ModelCard, work: Path, user_chips: int) -> list[Path]:
    """Synthetic chips in the base's training style, mixed into every fine-tune.

    A few corrected scenes rarely hold every class; without a replay the fine-tune forgets
    the classes they lack (their counts collapse to zero). ``cfg.replay.share`` of each
    fine-tune's chips are replay chips, drawn from ``cfg.replay.scenes`` generated scenes.
    """
    share, n_scenes = float(cfg.replay.share), int(cfg.replay.scenes)
    if share <= 0 or n_scenes <= 0 or user_chips <= 0:
        return []
    from detector.evaluate.experiments import make_scenes, training_scene_settings

    settings = {**training_scene_settings(), "size": [int(cfg.replay.size)] * 2,
                "vehicles.empty_prob": 0.0}
    root = make_scenes(work / "replay_scenes", n_scenes, int(cfg.seed) + 7919, settings)
    # Class names of the generator are the bundled model's; other bases map what they share.
    try:
        data = _build(cfg, card, root, "scene_*.tif", work / "replay", {"background_keep": 0},
                      by_block=True)
    except DetectorError as err:  # e.g. a base whose classes the generator does not draw
        log.warning("no replay chips (%s); fine-tuning on the scenes' chips alone", err)
        return []
    chips = [c for scene in chips_by_scene(data).values() for c in scene]
    want = max(1, round(user_chips * share / max(1e-6, 1 - share)))
    return replay_sample(chips, want, int(cfg.seed))


def _trained_scenes(data_yaml: Path, dataset: Path) -> list[str]:
    """The user scenes a fold's training list actually holds (read back from its chips)."""
    lines = (data_yaml.parent / "train.txt").read_text().splitlines()
    root = dataset.resolve()
    return sorted({chip_scene(Path(line)) for line in lines
                   if line.strip() and Path(line).is_relative_to(root)})


def _finetune(cfg: DictConfig, base: Path, card: ModelCard, data_yaml: Path,
              run_dir: Path, budget: Budget, share: float, seconds: float, label: str) -> Path:
    """Fine-tune from ``base`` on ``data_yaml`` for ``seconds`` of training."""
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
    budget.record(label, share, seconds, time.monotonic() - t0)
    return weights


def _write(final: Path, target: Path, card: dict[str, Any]) -> Path:
    """The bundle OUT/NAME.pt + card, each written atomically."""
    from detector.train.train import write_bundle

    card = {k: v for k, v in card.items() if k not in ("sha256", "created", "weights")}
    return write_bundle(final, target, json.loads(json.dumps(card)))

