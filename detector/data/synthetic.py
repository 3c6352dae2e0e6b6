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


# Keys that choose where and how scenes are written, not what their pixels are.
_NOT_CONTENT = ("out", "jobs", "render", "render_crop", "render_zoom", "hydra")


def compose_synth(block: Mapping[str, Any] | DictConfig | None, out_dir: str | Path = "."
                  ) -> DictConfig:
    """The full synth config (``conf/synth.yaml`` + the ``data.synth`` overrides).

    Raises:
        DetectorError: an override names a key conf/synth.yaml does not have.
    """
    try:
        return compose("synth", [f"out={json.dumps(str(out_dir))}", *synth_overrides(block)])
    except (HydraException, OmegaConfBaseException) as err:
        raise DetectorError(
            f"data.synth: {str(err).splitlines()[0]}; use keys of conf/synth.yaml") from err


def synth_fingerprint(block: Mapping[str, Any] | DictConfig | None) -> dict[str, Any]:
    """Everything that determines the generated pixels: the composed config + generator version.

    Dataset caches key on this, so editing conf/synth.yaml or the generator invalidates them.
    """
    from detector.synth.scene import GENERATOR_VERSION

    cfg = OmegaConf.to_container(compose_synth(block), resolve=True)
    return {"generator_version": GENERATOR_VERSION,
            "config": {k: v for k, v in cfg.items() if k not in _NOT_CONTENT}}


def generate_scenes(block: Mapping[str, Any] | DictConfig | None, out_dir: str | Path) -> Path:
    """Write synthetic scenes (``scene_NNN.tif`` + ``.geojson``) into ``out_dir``.

    Args:
        block: the ``data.synth`` overrides (n_scenes, seed, any synth key).
        out_dir: folder for the scenes.

    Returns:
        ``out_dir``.
    """
    from detector.synth import write_scenes

    out_dir = Path(out_dir)
    write_scenes(compose_synth(block, out_dir))
    return out_dir
