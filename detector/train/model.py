"""Build the YOLO model to train: from its Ultralytics YAML, optionally with local weights."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

import detector.train.offline  # noqa: F401  (sets YOLO_OFFLINE before ultralytics loads)
from detector.bundle import BUNDLED_WEIGHTS, TASKS
from detector.errors import DetectorError
from detector.train import pretrained


def resolve_init(init: str | None) -> Path | None:
    """The weights file ``model.init`` points to, or None for ``scratch``.

    ``init`` is ``scratch``, ``bundled``, a pinned pretrained name such as
    ``dota:yolo26n-obb`` (see :mod:`detector.train.pretrained`) or a path to a ``.pt``.

    Raises:
        DetectorError: the file does not exist (nothing is downloaded).
    """
    if init in (None, "", "scratch"):
        return None
    if pretrained.is_pretrained_name(init):
        return pretrained.resolve(str(init))
    path = BUNDLED_WEIGHTS if init == "bundled" else Path(str(init)).expanduser()
    if not path.is_file():
        raise DetectorError(
            f"{path}: model.init weights not found; copy a .pt you have (Ultralytics COCO/DOTA "
            "weights, e.g. yolo11n-obb.pt from github.com/ultralytics/assets/releases, or a "
            "detector bundle) to this path, or use model.init=scratch; nothing is downloaded")
    if path.suffix != ".pt":
        raise DetectorError(f"{path}: model.init must be a PyTorch .pt weights file, "
                            "or scratch / bundled")
    return path


def build_model(model_cfg: DictConfig):
    """A ``ultralytics.YOLO`` built from ``model_cfg.arch``; ``init`` weights transfer by layer.

    Layers whose names and shapes match the init weights are copied (Ultralytics' ``load``),
    so COCO/DOTA backbones fine-tune into our classes and head.
    """
    from ultralytics import YOLO

    if model_cfg.task not in TASKS:
        raise DetectorError(f"model.task={model_cfg.task}: must be one of {', '.join(TASKS)}; "
                            "fix conf/model/ or the override")
    init = resolve_init(model_cfg.get("init"))
    try:
        model = YOLO(str(model_cfg.arch), task=model_cfg.task)
    except FileNotFoundError as err:
        raise DetectorError(f"model.arch={model_cfg.arch}: not an Ultralytics model YAML; "
                            "use a name such as yolo11n-obb.yaml") from err
    if model.task != model_cfg.task:
        raise DetectorError(f"model.arch={model_cfg.arch} is a {model.task} model but "
                            f"model.task={model_cfg.task}; make them agree")
    if init is not None:
        try:
            model.load(init)
        except Exception as err:  # torch/pickle errors for files that are not YOLO weights
            raise DetectorError(f"{init}: cannot load as Ultralytics weights ({err}); "
                                "point model.init to a YOLO .pt") from err
    return model
