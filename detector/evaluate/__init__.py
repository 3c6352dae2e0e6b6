"""detector.evaluate: detection and counting accuracy of the inference pipeline on labelled
scenes (``python -m detector.evaluate source=DIR``)."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from detector.evaluate.scoring import SceneEval, build_report

__all__ = ["SceneEval", "build_report", "evaluate"]


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate a model on labelled scenes (see :func:`detector.evaluate.api.evaluate`)."""
    # Imported here so that scoring planted detections never loads the inference stack.
    from detector.evaluate.api import evaluate as run_evaluation

    return run_evaluation(cfg)
