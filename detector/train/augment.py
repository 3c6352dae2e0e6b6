"""Augmentation for nadir imagery: an albumentations pipeline run inside Ultralytics training.

Ultralytics applies the transforms passed as its ``augmentations`` argument to image and
labels together (after mosaic, before its own HSV and flips). Spatial transforms move the
oriented boxes' corner points with the pixels, and the boxes are re-fitted to them, so
OBB geometry is preserved. ``conf/augment/*.yaml`` holds both parts: ``albumentations``
(a list of ``_target_`` transforms) and ``ultralytics`` (its own augmentation arguments,
set deliberately because several defaults are wrong for images seen from straight above).
"""

from __future__ import annotations

from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from detector.errors import DetectorError


def build_augmentations(augment_cfg: DictConfig) -> list[Any]:
    """Instantiate the ``albumentations`` list of an augment config.

    Returns:
        albumentations transform objects, in order (empty when the list is empty).
    """
    specs = augment_cfg.get("albumentations") or []
    transforms = []
    for spec in specs:
        try:
            transforms.append(instantiate(spec, _convert_="all"))
        except Exception as err:  # hydra wraps import and argument errors alike
            raise DetectorError(
                f"augment.albumentations: cannot build {OmegaConf.to_container(spec)} ({err}); "
                "fix the transform name or its arguments in conf/augment/") from err
    return transforms


def ultralytics_hyp(augment_cfg: DictConfig) -> dict[str, Any]:
    """Ultralytics' own augmentation arguments (mosaic, hsv_*, flips, ...) from the config."""
    hyp = augment_cfg.get("ultralytics") or {}
    return dict(OmegaConf.to_container(hyp, resolve=True)) if hyp else {}
