"""Model bundle: ``NAME.pt`` (Ultralytics weights) + ``NAME.json`` card beside it.

The card tells inference everything it needs without flags: task, classes, imgsz, the
training resolution, the input bands and normalisation, and the calibration maps.
"""

from __future__ import annotations

import json
import logging
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from detector.atomic import sha256_file, write_text
from detector.errors import DetectorError
from detector.raster import DEFAULT_NORMALIZATION

log = logging.getLogger(__name__)

CARD_FORMAT = "detector-bundle/1"
ASSETS = Path(__file__).parent / "assets"
BUNDLED_WEIGHTS = ASSETS / "railcar_obb.pt"
# Fields every card written by detector.train carries.
REQUIRED_FIELDS = ("format", "task", "classes", "imgsz", "m_per_px", "normalization", "nms",
                   "calibration", "operating_threshold", "metrics", "dataset", "git_commit",
                   "sha256", "created")


def card_path(weights: str | Path) -> Path:
    """The card path that belongs to ``weights`` (same name, ``.json``)."""
    return Path(weights).with_suffix(".json")


def git_commit() -> str:
    """The current git commit of the source tree, or ``"unknown"`` outside a checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def default_card(task: str, classes: list[str], imgsz: int) -> dict[str, Any]:
    """A card for plain Ultralytics weights: defaults, identity calibration."""
    return {
        "format": CARD_FORMAT, "task": task, "classes": list(classes), "imgsz": int(imgsz),
        "m_per_px": 0.5, "normalization": dict(DEFAULT_NORMALIZATION),
        "calibration": {}, "operating_threshold": 0.5, "metrics": {}, "dataset": {},
        "git_commit": "unknown", "sha256": None, "created": None,
    }


def write_card(weights: str | Path, card: dict[str, Any]) -> Path:
    """Write ``card`` beside ``weights`` with the weights' sha256 and a timestamp."""
    card = dict(card)
    card["format"] = CARD_FORMAT
    card["sha256"] = sha256_file(weights)
    card["weights"] = Path(weights).name
    card.setdefault("created", datetime.now(UTC).isoformat(timespec="seconds"))
    path = card_path(weights)
    write_text(path, json.dumps(card, indent=2))
    return path


def resolve_weights(weights: str | Path | None) -> Path:
    """The weights file to use: the given path, or the bundled model when None."""
    path = Path(weights) if weights else BUNDLED_WEIGHTS
    if not path.is_file():
        hint = ("the bundled model is missing from the installed package; reinstall detector "
                "or build it with scripts/build_bundled_model.sh"
                if weights is None else
                "point weights= to a .pt you have (a detector bundle or Ultralytics weights); "
                "nothing is downloaded")
        raise DetectorError(f"{path}: weights file not found; {hint}")
    return path


def read_card(weights: str | Path, verify: bool = True) -> dict[str, Any] | None:
    """Read the card beside ``weights``; None when there is none.

    Raises:
        DetectorError: the card is unreadable, or its sha256 does not match the weights.
    """
    path = card_path(weights)
    if not path.exists():
        return None
    try:
        card = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DetectorError(f"{path}: model card is not valid JSON ({err}); "
                            "restore it from the bundle or delete it to use defaults") from err
    if verify and card.get("sha256") and card["sha256"] != sha256_file(weights):
        raise DetectorError(
            f"{path}: card does not match {Path(weights).name} (sha256 differs); "
            "keep each .pt with the .json written for it, or delete the card to use defaults")
    return card
