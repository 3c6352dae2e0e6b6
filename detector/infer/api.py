"""Python API: ``run(source, weights=None, **overrides) -> list[SceneResult]``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError

from detector.config import compose
from detector.errors import DetectorError
from detector.infer.demo import demo_scene
from detector.infer.model import Bundle, all_cores, load_bundle
from detector.infer.outputs import write_summary
from detector.infer.results import SceneResult
from detector.infer.scene import make_predictor, process_scene
from detector.infer.sources import resolve_sources
from detector.raster import gdal_cache
from detector.validation import check_config

log = logging.getLogger(__name__)
# Overrides that select a config group option rather than set a value.
CONFIG_GROUPS = ("tiling",)


def config(source: Any = None, weights: Any = None, **overrides: Any) -> DictConfig:
    """Compose ``conf/infer.yaml`` with Python-valued overrides (dotted keys allowed).

    Keys are checked as on the command line: an unknown key is an error, not ignored.

    Raises:
        DetectorError: an override names a key ``conf/infer.yaml`` does not have.
    """
    groups = [f"{k}={v}" for k, v in overrides.items() if k in CONFIG_GROUPS]
    cfg = compose("infer", groups)
    for key, value in overrides.items():
        if key in CONFIG_GROUPS:
            continue
        try:
            OmegaConf.update(cfg, key, str(value) if isinstance(value, Path) else value,
                             merge=True)
        except (ConfigAttributeError, ConfigKeyError) as err:
            raise DetectorError(f"{key}: not a key of conf/infer.yaml; check its spelling "
                                f"(top-level keys: {', '.join(cfg)})") from err
    if source is not None:
        cfg.source = [str(s) for s in source] if _is_list(source) else str(source)
    if weights is not None:
        cfg.weights = str(weights)
    return cfg


def _is_list(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str | bytes)


def scenes_of(cfg: DictConfig) -> list[Path]:
    """Scene paths from ``cfg.source``; the cached demo scene when it is empty."""
    source = cfg.get("source")
    if source in (None, ""):
        return [demo_scene(int(cfg.demo_seed))]
    if OmegaConf.is_list(source):
        return [p for s in source for p in resolve_sources(s)]
    return resolve_sources(source)


def run_config(cfg: DictConfig, bundle: Bundle | None = None, predictor: Any = None
               ) -> list[SceneResult]:
    """Run inference over every scene of ``cfg``; one failing scene does not stop the rest.

    ``bundle``/``predictor`` may be injected (tests use a stand-in model).

    Raises:
        DetectorError: a config value that cannot work, no scenes, or weights that cannot
            be loaded.
    """
    check_config(cfg, "infer")
    scenes = scenes_of(cfg)
    if bundle is None:
        bundle = load_bundle(cfg.get("weights"), cfg.device, cfg.get("half"))
    if predictor is None:
        predictor = make_predictor(bundle, cfg)
    results = []
    with all_cores(bundle.device), gdal_cache():
        for path in scenes:
            try:
                results.append(process_scene(path, bundle, predictor, cfg))
            except DetectorError as err:
                log.error("%s", err)
                results.append(SceneResult(path, False, str(err)))
            except Exception as err:  # noqa: BLE001 - one bad scene must not stop the others
                log.exception("%s: failed", path)
                results.append(SceneResult(path, False,
                                           f"{path}: {type(err).__name__}: {err}"))
    if len(scenes) > 1:
        write_summary(Path(cfg.out) / "summary.csv", results, bundle.classes)
    return results


def run(source: Any = None, weights: str | Path | None = None, **overrides: Any
        ) -> list[SceneResult]:
    """Detect and count vehicles in one or more scenes.

    Args:
        source: a GeoTIFF, a folder, a glob, a ``.txt`` listing scenes, or a list of these;
            None runs the cached demo scene.
        weights: a ``.pt`` bundle; None uses the bundled model.
        **overrides: ``conf/infer.yaml`` keys, e.g. ``out="results"``, ``aoi="station.geojson"``,
            ``quicklook=False``, ``tiling="default"``, ``**{"merge.threshold": 0.6}``.

    Returns:
        One :class:`SceneResult` per scene (failed scenes have ``ok=False`` and ``error``).
    """
    return run_config(config(source, weights, **overrides))
