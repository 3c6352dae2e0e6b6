"""The built-in demo scene: generated once by detector.synth and cached."""

from __future__ import annotations

import os
from pathlib import Path

from detector.atomic import atomic_dir
from detector.errors import DetectorError


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/detector`` (default ``~/.cache/detector``)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "detector"


def demo_scene(seed: int = 0) -> Path:
    """Path of the cached demo scene (scene_000.tif), generating it on first use."""
    from detector.synth.scene import GENERATOR_VERSION

    # Keyed on the generator version: a changed generator draws a new demo scene.
    folder = cache_dir() / f"demo_seed{seed}_g{GENERATOR_VERSION}"
    scene = folder / "scene_000.tif"
    if scene.exists():
        return scene
    try:
        from detector.synth import write_scenes
    except ImportError as err:
        raise DetectorError("demo scene generator (detector.synth.write_scenes) is not "
                            "available in this install; give source=<scene.tif>") from err
    from detector.config import compose

    with atomic_dir(folder) as tmp:
        write_scenes(compose("synth", [f"out={tmp}", "n_scenes=1", f"seed={seed}"]))
    return scene
