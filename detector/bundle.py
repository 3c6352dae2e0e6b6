"""Model bundle: ``NAME.pt`` (Ultralytics weights) + ``NAME.json`` card beside it.

The card tells inference everything it needs without flags: task, classes, imgsz, the
training resolution, the input bands and normalisation, the calibration maps and which
classes are not wagons. :class:`ModelCard` is its one schema (defaults, version, checks);
``docs/design.md`` describes the file.
"""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from detector.atomic import sha256_file, write_text
from detector.errors import DetectorError
from detector.raster import DEFAULT_NORMALIZATION, check_normalization

log = logging.getLogger(__name__)

CARD_FORMAT = "detector-bundle/1"
# 1: cards before the schema (no card_version); 2: card_version, not_wagons, shift, adapted_from.
CARD_VERSION = 2
ASSETS = Path(__file__).parent / "assets"
BUNDLED_WEIGHTS = ASSETS / "railcar_obb.pt"
Task = Literal["obb", "detect"]  # Ultralytics tasks detector trains and runs
TASKS: tuple[str, ...] = get_args(Task)
# Classes left out of the "wagons" total unless a card says otherwise.
DEFAULT_NOT_WAGONS = ("locomotive",)


def threshold_for(operating_threshold: float | Mapping[str, float], cls: str) -> float:
    """The operating threshold of ``cls``: one float for all classes, or a dict per class
    with an optional ``default`` entry (0.5 when neither names it)."""
    if isinstance(operating_threshold, Mapping):
        return float(operating_threshold.get(cls, operating_threshold.get("default", 0.5)))
    return float(operating_threshold)


class NMS(BaseModel):
    """The in-tile NMS that produced the candidates the calibration was fitted on."""

    model_config = ConfigDict(extra="forbid")
    iou: float = Field(0.5, gt=0, le=1)
    agnostic: bool = True


class ModelCard(BaseModel):
    """The model card: what inference, evaluation and recalibration read about a model.

    Only ``task``, ``classes`` and ``imgsz`` are required; everything else has the default a
    plain Ultralytics ``.pt`` gets (identity calibration, 0.5 m/px, percentile stretch).
    Unknown fields are rejected, so a typo in a hand-edited card does not pass silently.
    """

    model_config = ConfigDict(extra="forbid")

    card_version: int = CARD_VERSION
    format: str = CARD_FORMAT
    task: Task
    classes: list[str] = Field(min_length=1)
    imgsz: int = Field(gt=0)
    m_per_px: float = Field(0.5, gt=0)
    chip_size: int | None = Field(None, gt=0)
    bands: list[int] | None = None
    normalization: dict[str, Any] = Field(default_factory=lambda: dict(DEFAULT_NORMALIZATION))
    not_wagons: list[str] | None = None  # None: DEFAULT_NOT_WAGONS among the classes
    calibration: dict[str, Any] = Field(default_factory=dict)
    candidate_conf: float = Field(0.05, gt=0, lt=1)
    nms: NMS = Field(default_factory=NMS)
    operating_threshold: float | dict[str, float] = 0.5
    recall_at_candidate_conf: dict[str, float | None] = Field(default_factory=dict)
    recall_counts: dict[str, list[int]] = Field(default_factory=dict)
    dispersion: dict[str, float] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    dataset: dict[str, Any] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict)
    init: str | None = None  # what training started from (scratch, a .pt, bundled)
    # Shift alarm (detector/shift.py): the feature reference and its threshold at the top
    # level, and (cards recalibrated since the output-signal alarm) the rule under "alarm".
    shift: dict[str, Any] | None = None
    adapted_from: dict[str, Any] | None = None  # provenance of an adapted model
    git_commit: str = "unknown"
    weights: str | None = None
    sha256: str | None = None
    created: str | None = None

    @field_validator("classes")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"class names repeat: {value}")
        return value

    @field_validator("normalization")
    @classmethod
    def _normalization(cls, value: dict[str, Any]) -> dict[str, Any]:
        return check_normalization(value)

    @field_validator("operating_threshold")
    @classmethod
    def _threshold(cls, value: float | dict[str, float]) -> float | dict[str, float]:
        values = value.values() if isinstance(value, dict) else [value]
        if any(not 0.0 <= float(v) <= 1.0 for v in values):
            raise ValueError("thresholds must lie in [0, 1]")
        return value

    @model_validator(mode="after")
    def _taxonomy(self) -> ModelCard:
        if self.not_wagons is None:
            self.not_wagons = [c for c in DEFAULT_NOT_WAGONS if c in self.classes]
        unknown = [c for c in self.not_wagons if c not in self.classes]
        if unknown:
            raise ValueError(f"not_wagons {unknown} are not among the classes {self.classes}")
        if self.bands is None:
            self.bands = list(self.normalization["bands"])
        return self

    @property
    def wagon_classes(self) -> list[str]:
        """The classes whose counts add up to the wagons total."""
        return [c for c in self.classes if c not in (self.not_wagons or ())]

    def threshold(self, cls: str) -> float:
        """The operating threshold (raw score) at which ``cls`` detections are counted."""
        return threshold_for(self.operating_threshold, cls)

    def to_dict(self) -> dict[str, Any]:
        """The card as the JSON-ready dict written beside the weights."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str | Path = "model card"
                  ) -> ModelCard:
        """Validate a card dict; a card without ``card_version`` is read as version 1.

        Raises:
            DetectorError: one line naming the first wrong or missing field and the fix.
        """
        if not isinstance(data, Mapping):
            raise DetectorError(f"{source}: a model card is a JSON object, not "
                                f"{type(data).__name__}; restore the card or delete it")
        data = dict(data)
        version = int(data.get("card_version", 1))
        if version > CARD_VERSION:
            raise DetectorError(f"{source}: card_version {version} is newer than this detector "
                                f"reads ({CARD_VERSION}); upgrade detector")
        data["card_version"] = CARD_VERSION  # version 1 differs only by fields with defaults
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            raise DetectorError(f"{source}: {card_problem(err)}") from err


def card_problem(err: ValidationError) -> str:
    """One line for the first problem pydantic found, naming the field and the fix."""
    first = err.errors()[0]
    field = ".".join(str(p) for p in first["loc"]) or "card"
    kind = first["type"]
    if kind == "missing":
        return f"field {field!r} is missing; add it (see docs/design.md, model card)"
    if kind == "extra_forbidden":
        return (f"unknown field {field!r}; remove it or fix its spelling "
                f"(known fields: {', '.join(ModelCard.model_fields)})")
    msg = str(first["msg"]).removeprefix("Value error, ")
    got = repr(first.get("input"))
    got = f" (got {got})" if first["loc"] and len(got) <= 60 else ""
    return f"field {field!r}: {msg}{got}; fix the value (see docs/design.md, model card)"


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


def default_card(task: str, classes: list[str], imgsz: int, **fields: Any) -> ModelCard:
    """The card of plain Ultralytics weights: every default (identity calibration) but
    ``fields``, validated."""
    return ModelCard.from_dict({"task": task, "classes": list(classes), "imgsz": int(imgsz),
                                **fields}, "model card")


def write_card(weights: str | Path, card: ModelCard | Mapping[str, Any]) -> Path:
    """Write ``card`` beside ``weights`` with the weights' sha256 and a timestamp."""
    path = card_path(weights)
    card = card if isinstance(card, ModelCard) else ModelCard.from_dict(card, path)
    card = card.model_copy(update={
        "card_version": CARD_VERSION, "format": CARD_FORMAT, "sha256": sha256_file(weights),
        "weights": Path(weights).name,
        "created": card.created or datetime.now(UTC).isoformat(timespec="seconds")})
    write_text(path, json.dumps(card.to_dict(), indent=2))
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


def read_card(weights: str | Path, verify: bool = True) -> ModelCard | None:
    """Read and validate the card beside ``weights``; None when there is none.

    Raises:
        DetectorError: the card is unreadable or invalid (one line naming the field), or its
            sha256 does not match the weights.
    """
    path = card_path(weights)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DetectorError(f"{path}: model card is not valid JSON ({err}); "
                            "restore it from the bundle or delete it to use defaults") from err
    card = ModelCard.from_dict(data, path)
    if verify and card.sha256 and card.sha256 != sha256_file(weights):
        raise DetectorError(
            f"{path}: card does not match {Path(weights).name} (sha256 differs); "
            "keep each .pt with the .json written for it, or delete the card to use defaults")
    return card
