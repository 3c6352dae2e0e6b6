"""Generate labelled scenes with detector.synth for ``data=synthetic``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from detector.config import compose
from detector.errors import DetectorError


def synth_overrides(block: Mapping[str, Any] | DictConfig | None, prefix: str = "") -> list[str]:
    """Hydra override strings (``key=value``, nested keys dotted) for conf/synth.yaml."""
    if isinstance(block, DictConfig):
        block = OmegaConf.to_container(block, resolve=True)
    out = []
    for key, value in (block or {}).items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.extend(synth_overrides(value, f"{name}."))
        else:
            out.append(f"{name}={json.dumps(value)}")  # JSON literals parse as Hydra values
    return out


def generate_scenes(block: Mapping[str, Any] | DictConfig | None, out_dir: str | Path) -> Path:
    """Write synthetic scenes (``scene_NNN.tif`` + ``.geojson``) into ``out_dir``.

    Args:
        block: the ``data.synth`` overrides (n_scenes, seed, any synth key).
        out_dir: folder for the scenes.

    Returns:
        ``out_dir``.
    """
    try:
        from detector.synth import write_scenes
    except ImportError as err:
        raise DetectorError(
            f"detector.synth.write_scenes is not available ({err}); update the package or "
            "use data=geojson with your own scenes") from err
    out_dir = Path(out_dir)
    try:
        cfg = compose("synth", [f"out={json.dumps(str(out_dir))}", *synth_overrides(block)])
    except (HydraException, OmegaConfBaseException) as err:
        raise DetectorError(
            f"data.synth: {str(err).splitlines()[0]}; use keys of conf/synth.yaml") from err
    write_scenes(cfg)
    return out_dir
