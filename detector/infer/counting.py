"""Counts with honest intervals from calibrated per-detection probabilities.

Each candidate detection i is a true vehicle with probability p_i (its calibrated score),
independently, so the number of true vehicles among candidates is Poisson-binomial; we
compute its pmf exactly by dynamic programming. When the card gives the recall r at the
candidate threshold (vehicles the model never proposes), the D true candidates are a
binomial thinning of the N vehicles present, so N - D | D is negative binomial(D, r) and
the interval widens and shifts accordingly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.stats import beta, nbinom

from detector.bundle import DEFAULT_NOT_WAGONS, threshold_for

_BLOCK = 256
_MIN_RECALL = 0.05  # bounds the work; below this the interval is meaningless anyway
WAGONS = "wagons"  # key of the all-wagon total in dispersion maps
_RECALL_QUANTILES = 9  # points of the recall's posterior the pmf is averaged over


def poisson_binomial_pmf(p: np.ndarray) -> np.ndarray:
    """Exact pmf (length N+1) of the number of successes of independent Bernoulli(p_i)."""
    p = np.clip(np.asarray(p, dtype=float).ravel(), 0.0, 1.0)
    pmf = np.zeros(p.size + 1)
    pmf[0] = 1.0
    for k, pk in enumerate(p, start=1):
        pmf[1:k + 1] = pmf[1:k + 1] * (1 - pk) + pmf[:k] * pk
        pmf[0] *= 1 - pk
    return pmf


def thin_correction(pmf_detected: np.ndarray, recall: float) -> np.ndarray:
    """Pmf of the vehicles present given the pmf of true candidates and the recall r."""
    if not 0.0 < recall < 1.0:  # 0 or missing: unknown (a card from an untrained model)
        return pmf_detected
    recall = max(float(recall), _MIN_RECALL)
    d_max = len(pmf_detected) - 1
    mean = d_max / recall
    n_max = int(math.ceil(mean + 8 * math.sqrt(mean * (1 - recall)) / recall + 10))
    n = np.arange(n_max + 1)
    out = np.zeros(n_max + 1)
    out[0] += pmf_detected[0]
    for start in range(1, d_max + 1, _BLOCK):  # blocks of d keep the matrix small
        d = np.arange(start, min(start + _BLOCK, d_max + 1))[:, None]
        missed = nbinom.pmf(n[None, :] - d, d, recall)  # zero where n < d
        out += pmf_detected[d[:, 0]] @ missed
    return out / out.sum()


def uncertain_recall_correction(pmf_detected: np.ndarray, found: int, total: int
                                ) -> np.ndarray:
    """:func:`thin_correction` averaged over the recall's Beta(found+1, missed+1) posterior.

    The recall is estimated from a finite calibration set; a point estimate would make the
    interval too narrow whenever that estimate is off.
    """
    if total <= 0:
        return pmf_detected
    levels = (np.arange(_RECALL_QUANTILES) + 0.5) / _RECALL_QUANTILES
    recalls = beta.ppf(levels, found + 1, total - found + 1)
    parts = [thin_correction(pmf_detected, float(r)) for r in recalls]
    out = np.zeros(max(len(p) for p in parts))
    for part in parts:
        out[:len(part)] += part
    return out / out.sum()


def interval(pmf: np.ndarray, level: float = 0.95, dispersion: float = 1.0
             ) -> tuple[int, int]:
    """Central interval [lo, hi] holding at least ``level`` of the pmf's mass.

    ``dispersion`` > 1 (variance ratio measured on calibration scenes: detections within a
    scene are not independent, e.g. a hazy scene lowers every score) stretches the interval
    around the mean by its square root.
    """
    cdf = np.cumsum(pmf)
    tail = (1 - level) / 2
    lo = int(np.searchsorted(cdf, tail - 1e-12, side="left"))
    hi = min(int(np.searchsorted(cdf, 1 - tail - 1e-12, side="left")), len(pmf) - 1)
    if dispersion > 1.0:
        mean, scale = float(np.dot(np.arange(len(pmf)), pmf)), math.sqrt(dispersion)
        lo = max(0, math.floor(mean - (mean - lo) * scale))
        hi = math.ceil(mean + (hi - mean) * scale)
    return lo, hi


def dispersion_ratio(truth: Sequence[int], pmfs: Sequence[np.ndarray]) -> float:
    """Mean squared standardised error of per-scene counts (>= 1): the variance inflation."""
    if not pmfs:
        return 1.0
    z2 = []
    for t, pmf in zip(truth, pmfs, strict=True):
        k = np.arange(len(pmf))
        mean = float(np.dot(k, pmf))
        var = float(np.dot((k - mean) ** 2, pmf))
        z2.append((t - mean) ** 2 / max(var, 1.0))
    return max(1.0, float(np.mean(z2)))


def class_summary(scores: np.ndarray, p: np.ndarray, threshold: float, recall: float = 1.0,
                  level: float = 0.95, recall_evidence: Sequence[int] | None = None,
                  dispersion: float = 1.0) -> tuple[dict[str, Any], np.ndarray]:
    """Count, expected, interval and mean confidence for one class, and its pmf.

    ``recall_evidence`` ([found, total] on the calibration data), when given, replaces the
    point ``recall`` by its posterior.
    """
    scores = np.asarray(scores, dtype=float)
    counted = scores >= threshold
    pmf = poisson_binomial_pmf(p)
    if recall_evidence is not None:
        pmf = uncertain_recall_correction(pmf, int(recall_evidence[0]), int(recall_evidence[1]))
    else:
        pmf = thin_correction(pmf, recall)
    lo, hi = interval(pmf, level, dispersion)
    summary = {
        "count": int(counted.sum()),
        "expected": round(float(np.dot(np.arange(len(pmf)), pmf)), 3),
        "ci95": [lo, hi],
        "mean_confidence": round(float(scores[counted].mean()), 4) if counted.any() else 0.0,
    }
    return summary, pmf


def summarize_counts(classes: Sequence[str], det_classes: Sequence[str], scores: np.ndarray,
                     p: np.ndarray, operating_threshold: float | Mapping[str, float],
                     recall: Mapping[str, float] | None = None,
                     not_wagons: Sequence[str] = DEFAULT_NOT_WAGONS, level: float = 0.95,
                     recall_evidence: Mapping[str, Sequence[int]] | None = None,
                     dispersion: Mapping[str, float] | None = None
                     ) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Per-class summaries and the wagons summary (every class but ``not_wagons``).

    The wagons pmf is the convolution of the per-class pmfs (classes independent).
    ``dispersion`` ({class or "wagons": variance ratio}) widens the intervals.

    Returns:
        (classes {name: {count, expected, ci95, mean_confidence}}, wagons {count, expected, ci95})
    """
    det_classes = np.asarray(det_classes, dtype=object)
    scores, p = np.asarray(scores, dtype=float), np.asarray(p, dtype=float)
    recall, recall_evidence = recall or {}, recall_evidence or {}
    dispersion = dispersion or {}
    per_class, wagon_pmf, wagon_count = {}, np.ones(1), 0
    for name in classes:
        mask = det_classes == name
        threshold = threshold_for(operating_threshold, name)
        summary, pmf = class_summary(scores[mask], p[mask], threshold,
                                     float(recall.get(name) or 1.0), level,
                                     recall_evidence.get(name),
                                     float(dispersion.get(name, 1.0)))
        per_class[name] = summary
        if name not in not_wagons:
            wagon_pmf = np.convolve(wagon_pmf, pmf)
            wagon_count += summary["count"]
    lo, hi = interval(wagon_pmf, level, float(dispersion.get(WAGONS, 1.0)))
    wagons = {"count": wagon_count,
              "expected": round(float(np.dot(np.arange(len(wagon_pmf)), wagon_pmf)), 3),
              "ci95": [lo, hi]}
    return per_class, wagons
