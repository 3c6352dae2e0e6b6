"""``train(cfg)``: dataset -> Ultralytics training -> calibration -> model bundle.

Called by ``python -m detector.train`` (Hydra) and directly by tests and notebooks with a
config from ``detector.config.compose("train", [...])``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from detector.atomic import atomic_path, sha256_file
from detector.bundle import ModelCard, write_card
from detector.data.yolo import class_names, dataset_split_images
from detector.errors import DetectorError
from detector.train import (
    offline,  # sets YOLO_OFFLINE before ultralytics loads
    pretrained,
)
from detector.train.augment import build_augmentations, ultralytics_hyp
from detector.train.calibrate import calibrate, collect_candidates
from detector.train.card import build_card, chip_size, model_m_per_px, yolo_metrics
from detector.train.model import build_model, resolve_init
from detector.validation import check_config

log = logging.getLogger(__name__)

ULTRALYTICS_RUN = "ultralytics"  # Ultralytics' save_dir inside the run folder


def train(cfg: DictConfig) -> Path:
    """Train a YOLO model as ``cfg`` says and write its calibrated bundle.

    Returns:
        Path of the bundle weights ``<paths.bundle_dir>/<paths.bundle_name>.pt`` (the card
        is the ``.json`` beside it).

    Raises:
        DetectorError: bad dataset, weights or settings (one line naming the fix).
    """
    check_config(cfg, "train")
    with offline.training_session(tensorboard=bool(cfg.get("tensorboard", True))):
        return _train(cfg)


def _train(cfg: DictConfig) -> Path:
    run_dir = output_dir(cfg)
    # Resolve now: building a synthetic dataset composes another config, and ${hydra:...}
    # interpolations are best read before that.
    bundle_weights = Path(str(cfg.paths.bundle_dir)) / f"{cfg.paths.bundle_name}.pt"
    data_yaml, dataset_ref = resolve_dataset(cfg)
    meta = read_dataset_meta(data_yaml)
    names = class_names(data_yaml)
    task = str(cfg.model.task)
    check_dataset(meta, data_yaml, task, int(cfg.trainer.imgsz))

    resume = resolve_resume(cfg.trainer.get("resume"), cfg.paths.runs_dirs)
    if resume is not None:
        from ultralytics import YOLO

        log.info("resuming %s", resume)
        model = YOLO(str(resume))
        args = {"resume": True, "data": str(data_yaml),
                **{k: cfg.trainer[k] for k in ("device", "workers", "batch", "time")
                   if cfg.trainer.get(k) is not None}}
    else:
        model = build_model(cfg.model)
        args = train_args(cfg, data_yaml, run_dir)
    # Multi-GPU (trainer.device=[0,1,...]): Ultralytics trains in fresh DDP processes that
    # get the trainer's callbacks (pickled), not this process's patches: this re-applies them.
    model.add_callback("on_pretrain_routine_start", offline.in_every_process)
    val_metrics = yolo_metrics(model.train(**args), names)  # best.pt on the val split
    trainer = model.trainer
    best = Path(trainer.best) if Path(trainer.best).exists() else Path(trainer.last)

    from ultralytics import YOLO

    trained = YOLO(str(best))
    imgsz = int(trainer.args.imgsz)
    device = trainer.args.device
    cands = collect_candidates(trained, data_yaml, len(names), cfg.calibration, imgsz, device)
    cal = calibrate(cands, names, int(cfg.calibration.min_samples),
                    str(cfg.calibration.operating))
    log.info("calibration: %d candidates for %d truths; ECE %.4f -> %.4f", cal["n_candidates"],
             cal["n_truth"], cal["ece"]["ece_before"], cal["ece"]["ece_after"])
    test_metrics = None
    if cfg.get("evaluate_test", True) and dataset_split_images(data_yaml, "test"):
        test = trained.val(data=str(data_yaml), split="test", imgsz=imgsz, device=device,
                           plots=False, verbose=False, project=str(Path(trainer.save_dir)),
                           name="test", exist_ok=True)
        test_metrics = yolo_metrics(test, names)

    card = build_card(
        task=task, names=names, imgsz=imgsz, dataset_meta=meta, dataset_ref=dataset_ref,
        cal=cal, candidate_conf=float(cfg.calibration.candidate_conf),
        nms=OmegaConf.to_container(cfg.calibration.nms, resolve=True),
        val_metrics=val_metrics, test_metrics=test_metrics,
        training={"arch": str(cfg.model.arch), "init": str(cfg.model.get("init")),
                  "init_weights": init_provenance(cfg.model.get("init")),
                  "epochs_run": int(getattr(trainer, "epoch", -1)) + 1,
                  "epochs": int(trainer.args.epochs), "hours": _hours(trainer),
                  "device": str(trainer.device), "seed": int(trainer.args.seed),
                  "run_dir": str(trainer.save_dir), "best": str(best)},
        not_wagons=list(cfg.calibration.not_wagons))
    weights = write_bundle(best, bundle_weights, card)
    if cfg.calibration.get("level") == "scenes":
        # Needs the written bundle: inference reads its card (resolution, normalisation).
        from detector.train.recalibrate import recalibrate

        card = recalibrate(weights, cfg.calibration, data_yaml, "val", device=device or None)
    _log_summary(weights, card)
    return weights


# -- pieces -----------------------------------------------------------------------------

def init_provenance(init: str | None) -> dict[str, Any] | None:
    """What training started from: the init weights' path, sha256 and (for a bundle) card facts.

    Read when the card is written; the build script replaces the bundled model only after that.
    """
    path = resolve_init(init)
    if path is None:
        return None
    out: dict[str, Any] = {"path": str(path), "sha256": sha256_file(path)}
    if pretrained.is_pretrained_name(init):
        out.update(pretrained.provenance(str(init)))
    card_file = path.with_suffix(".json")
    if card_file.is_file():
        card = json.loads(card_file.read_text())
        out.update({k: card.get(k) for k in ("created", "git_commit", "training")})
    return out


def output_dir(cfg: DictConfig) -> Path:
    """This run's folder (``paths.output_dir``), created."""
    try:
        path = Path(str(cfg.paths.output_dir))
    except InterpolationResolutionError as err:
        raise DetectorError("paths.output_dir: needs Hydra's run folder; outside "
                            "`python -m detector.train` pass paths.output_dir=DIR") from err
    path.mkdir(parents=True, exist_ok=True)
    return path.resolve()


def dataset_key(data_cfg: DictConfig, task: str) -> str:
    """A short stable name for a data config + task (built datasets are reused by key).

    For synthetic data the key covers the composed conf/synth.yaml and the generator version,
    not only the overrides in ``data.synth``.
    """
    content: dict[str, Any] = {"data": OmegaConf.to_container(data_cfg, resolve=True),
                               "task": task}
    if data_cfg.get("source") == "synthetic":
        from detector.data.synthetic import synth_fingerprint

        content["synth"] = synth_fingerprint(data_cfg.get("synth"))
    text = json.dumps(content, sort_keys=True)
    digest = hashlib.sha256(text.encode()).hexdigest()[:10]
    return f"{data_cfg.get('source', 'data')}-{task}-{digest}"


def resolve_dataset(cfg: DictConfig) -> tuple[Path, dict[str, Any]]:
    """The data.yaml to train on: ``cfg.dataset`` or one built from ``cfg.data``.

    A dataset built from the same data config and task earlier is reused.
    """
    if cfg.get("dataset"):
        path = Path(str(cfg.dataset)).expanduser()
        path = path / "data.yaml" if path.is_dir() else path
        if not path.is_file():
            raise DetectorError(f"{path}: dataset not found; point dataset= to the data.yaml "
                                "written by `python -m detector.data`, or leave it null to "
                                "build one from the data group")
        return path.resolve(), {"data_yaml": str(path.resolve()), "built": False}
    task = str(cfg.model.task)
    out = Path(str(cfg.paths.datasets_dir)) / dataset_key(cfg.data, task)
    if not (out / "data.yaml").is_file():
        from detector.data import build_dataset

        log.info("building dataset %s", out)
        build_dataset(cfg.data, out, task)
    else:
        log.info("reusing dataset %s", out)
    data_yaml = (out / "data.yaml").resolve()
    return data_yaml, {"data_yaml": str(data_yaml), "built": True,
                       "data": OmegaConf.to_container(cfg.data, resolve=True)}


def read_dataset_meta(data_yaml: Path) -> dict[str, Any]:
    """dataset.json beside data.yaml (empty, with a warning, when there is none)."""
    path = data_yaml.parent / "dataset.json"
    if not path.is_file():
        log.warning("%s missing: the card gets the default m_per_px and normalisation", path)
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DetectorError(f"{path}: not valid JSON ({err}); rebuild the dataset") from err


def check_dataset(meta: dict[str, Any], data_yaml: Path, task: str, imgsz: int) -> None:
    """Fail early on a task mismatch; warn when imgsz differs from the chip size."""
    if meta.get("task") and meta["task"] != task:
        raise DetectorError(f"{data_yaml}: a {meta['task']} dataset but model.task={task}; "
                            f"build the dataset with task={task} or choose a {meta['task']} model")
    size = chip_size(meta)
    if size and size != imgsz:
        log.warning("trainer.imgsz=%d but chips are %d px: the model sees %.3g m/px, not the "
                    "dataset's (the card records it)", imgsz, size,
                    model_m_per_px(meta, imgsz))


def train_args(cfg: DictConfig, data_yaml: Path, run_dir: Path) -> dict[str, Any]:
    """Keyword arguments for ``YOLO.train``: trainer keys unchanged, plus augmentation."""
    args = OmegaConf.to_container(cfg.trainer, resolve=True)
    args.pop("resume", None)
    args = {k: v for k, v in args.items() if v is not None}
    args.update(ultralytics_hyp(cfg.augment))
    args.update(data=str(data_yaml), task=str(cfg.model.task), project=str(run_dir),
                name=ULTRALYTICS_RUN, exist_ok=True,
                augmentations=build_augmentations(cfg.augment))
    return args


def resolve_resume(resume: Any, runs_dirs: Any) -> Path | None:
    """The checkpoint ``trainer.resume`` asks for, or None for a fresh run.

    ``true`` picks the newest ``last.pt`` under ``runs_dirs`` that still has optimizer state
    (Ultralytics strips it when a run completes); a path names a ``last.pt`` or its run folder.
    """
    if resume in (None, False, "", "false", "False"):
        return None
    if resume is True or str(resume).lower() == "true":
        found = sorted((p for d in runs_dirs for p in Path(str(d)).glob("**/weights/last.pt")),
                       key=lambda p: p.stat().st_mtime, reverse=True)
        for path in found:
            if _resumable(path):
                return path
        raise DetectorError(f"trainer.resume=true: no unfinished run (weights/last.pt with "
                            f"optimizer state) under {', '.join(map(str, runs_dirs))}; pass "
                            "trainer.resume=path/to/last.pt or start a new run")
    path = Path(str(resume)).expanduser()
    if path.is_dir():
        hits = sorted(path.glob("**/weights/last.pt"))
        path = hits[0] if hits else path / "weights" / "last.pt"
    if not path.is_file():
        raise DetectorError(f"{path}: checkpoint to resume not found; pass the run's "
                            "weights/last.pt (or trainer.resume=true for the newest)")
    if not _resumable(path):
        raise DetectorError(f"{path}: this run already finished (no optimizer state); "
                            "start a new run, e.g. with model.init=" + str(path))
    return path


def _resumable(path: Path) -> bool:
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:  # unreadable or half-written checkpoint
        return False
    return isinstance(ckpt, dict) and ckpt.get("optimizer") is not None


def write_bundle(best: Path, weights: Path, card: ModelCard) -> Path:
    """Copy ``best`` to ``weights`` and write the card beside it (both atomically)."""
    with atomic_path(weights) as tmp:
        shutil.copyfile(best, tmp)
    write_card(weights, card)
    return weights


def _hours(trainer: Any) -> float | None:
    import time

    start = getattr(trainer, "train_time_start", None)
    return round((time.time() - start) / 3600, 4) if start else None


def _log_summary(weights: Path, card: ModelCard) -> None:
    metrics = card.metrics
    log.info("bundle %s (+ .json): val mAP50 %s, mAP50-95 %s, ECE %s -> %s", weights,
             metrics.get("mAP50"), metrics.get("mAP50-95"), metrics.get("ece_before"),
             metrics.get("ece_after"))
    for name, values in metrics.get("per_class", {}).items():
        log.info("  %-12s mAP50 %s  mAP50-95 %s", name, values["mAP50"], values["mAP50-95"])
