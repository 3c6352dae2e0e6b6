"""Score → probability calibration, stored in the model card and applied at inference.

A calibration map is a JSON-able dict per class::

    {"method": "isotonic", "x": [scores...], "y": [probabilities...]}

applied by piecewise-linear interpolation, or ``{"method": "identity"}``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

IDENTITY: dict[str, Any] = {"method": "identity"}
_MAX_KNOTS = 64


def fit_isotonic(scores: np.ndarray, correct: np.ndarray, min_samples: int = 20
                 ) -> dict[str, Any]:
    """Fit a monotone map from detection score to P(detection is a true vehicle).

    Args:
        scores: detector confidences of candidate detections.
        correct: 1 where the candidate matched a ground-truth vehicle, else 0.
        min_samples: fewer candidates than this gives the identity map.

    Returns:
        A calibration map (see module docstring) with at most 64 knots.
    """
    from scipy.optimize import isotonic_regression  # fitting only: inference never needs scipy

    scores = np.asarray(scores, dtype=float)
    correct = np.asarray(correct, dtype=float)
    if scores.size < min_samples:
        return dict(IDENTITY)
    order = np.argsort(scores, kind="stable")
    xs, ys = scores[order], correct[order]
    fitted = isotonic_regression(ys, increasing=True).x
    # Keep probabilities strictly inside (0, 1): a certain-looking 1.0 makes intervals too tight.
    n = scores.size
    fitted = np.clip(fitted, 0.5 / n, 1 - 0.5 / n)
    knots = np.unique(np.linspace(0, n - 1, min(_MAX_KNOTS, n)).round().astype(int))
    return {"method": "isotonic", "x": xs[knots].round(5).tolist(),
            "y": fitted[knots].round(5).tolist(), "n": int(n)}


def apply(calibration: dict[str, Any] | None, scores: np.ndarray) -> np.ndarray:
    """Map raw scores to calibrated probabilities with one class's calibration map."""
    scores = np.asarray(scores, dtype=float)
    if not calibration or calibration.get("method", "identity") == "identity":
        return scores.copy()
    return np.interp(scores, calibration["x"], calibration["y"])


def expected_calibration_error(probabilities: np.ndarray, correct: np.ndarray,
                               n_bins: int = 10) -> float:
    """Expected calibration error with equal-width bins over [0, 1]."""
    probabilities = np.asarray(probabilities, dtype=float)
    correct = np.asarray(correct, dtype=float)
    if probabilities.size == 0:
        return 0.0
    bins = np.minimum((probabilities * n_bins).astype(int), n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        in_bin = bins == b
        if in_bin.any():
            total += in_bin.sum() * abs(probabilities[in_bin].mean() - correct[in_bin].mean())
    return float(total / probabilities.size)
