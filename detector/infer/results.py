"""Result types of ``detector.infer``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Detection:
    """One detected vehicle.

    Attributes:
        corners_px: (4, 2) scene pixel coords (col, row) in the source raster grid.
        corners_map: (4, 2) in the scene CRS (== corners_px when the scene has no CRS).
        cls: class name.
        score: raw model confidence.
        p: calibrated probability that it is a true vehicle.
        tile: id of the tile that owns it, e.g. ``"r3c7"``.
    """

    corners_px: np.ndarray
    corners_map: np.ndarray
    cls: str
    score: float
    p: float
    tile: str


@dataclass
class SceneResult:
    """Everything inference produced for one scene.

    ``detections`` holds ALL candidates (score >= the card's candidate_conf); the counted
    ones have score >= the operating threshold. ``error`` says why a scene failed;
    ``skipped`` marks a scene whose outputs already existed (its detections are then the
    counted ones read back from its GeoJSON); ``missing`` one with no outputs yet (a summary
    of a partial run). ``name`` is the scene's unique output name. ``features`` logs one
    pooled backbone vector per tile read (:class:`detector.shift.FeatureLog`), in memory only.
    """

    scene: Path
    ok: bool
    error: str | None = None
    detections: list[Detection] = field(default_factory=list)
    counts: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Path] = field(default_factory=dict)
    skipped: bool = False
    features: Any = field(default=None, repr=False)
    name: str = ""
    missing: bool = False

    @property
    def status(self) -> str:
        """``ok``, ``skipped``, ``failed`` or ``missing``."""
        if self.missing:
            return "missing"
        return "skipped" if self.skipped else ("ok" if self.ok else "failed")
