"""Counts with honest intervals from calibrated per-detection probabilities.

Each candidate detection i is a true vehicle with probability p_i (its calibrated score),
independently, so the number D of true vehicles among candidates is Poisson-binomial. When
the card gives the recall r at the candidate threshold (vehicles the model never proposes),
the D true candidates are a binomial thinning of the N vehicles present, so N - D | D is
negative binomial(D, r) and the interval widens and shifts accordingly.

Both steps run in near-linear time: a pmf's mass lies within a few standard deviations
(O(sqrt(N)) values) of its mean, so every pmf is cut to the span that holds all but
``_TAIL`` of its mass at each end (the error is bounded: at most ``2 * _TAIL`` of mass per
cut, a few hundred cuts per scene), and the negative-binomial mixture is one convolution
(see :func:`thin_correction`). No scipy: this runs on every inference and scipy's import
alone takes longer than counting 20,000 candidates.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from detector.bundle import DEFAULT_NOT_WAGONS, threshold_for

_MIN_RECALL = 0.05  # below this the interval is meaningless anyway
WAGONS = "wagons"  # key of the all-wagon total in dispersion maps
VEHICLES = "vehicles"  # key of the all-class total (wagons and locomotives) in dispersion maps
_RECALL_QUANTILES = 9  # points of the recall's posterior the pmf is averaged over
_TAIL = 1e-15  # mass a cut may drop from each end of a pmf
_LGAMMA_BLOCK = 256  # integers per exact anchor of the log-gamma recursion
_BETA_GRID = 4097  # points of the numerical Beta cdf
_WIDEN = (10.0, 20.0, 40.0)  # standard deviations of the missed count spanned, in turn
_ROUND_TOL = 1e-9  # float noise ignored when a stretched endpoint is rounded
_THIN_TOL = 1e-10  # mass the thinning may lose beyond its span (float rounding is ~1e-12)
# Subnormal floats (below this) are flushed to zero: arithmetic on them is ~100x slower.
_TINY = float(np.finfo(float).tiny)


def pmf_mean(pmf: np.ndarray) -> float:
    """Mean of a pmf over 0, 1, 2, ...

    A plain sum of products, not ``np.dot``: BLAS threads a long dot product, and on a busy
    CPU its threads' hand-off costs more than the sum (tens of ms per call).
    """
    return float((np.arange(len(pmf), dtype=float) * pmf).sum())


def _flush(x: np.ndarray) -> np.ndarray:
    """``x`` with values below ``_TINY`` set to zero (in place; returned for chaining)."""
    x[x < _TINY] = 0.0
    return x


def _span(pmf: np.ndarray, tail: float = _TAIL) -> tuple[int, int]:
    """[lo, hi) of ``pmf`` holding all but at most ``tail`` of its mass at each end."""
    total = float(pmf.sum())
    if pmf.size == 0 or total <= 0:
        return 0, pmf.size
    # Sums from each end separately: a single cumsum's rounding (~N eps) exceeds ``tail``.
    lo = int(np.searchsorted(np.cumsum(pmf), tail * total, side="right"))
    hi = pmf.size - int(np.searchsorted(np.cumsum(pmf[::-1]), tail * total, side="right"))
    return (lo, hi) if lo < hi else (int(np.argmax(pmf)), int(np.argmax(pmf)) + 1)


def _cut(offset: int, values: np.ndarray) -> tuple[int, np.ndarray]:
    """A pmf piece (values at offset, offset + 1, ...) cut to :func:`_span`."""
    lo, hi = _span(values)
    return offset + lo, values[lo:hi]


def _lgamma_range(start: int, stop: int) -> np.ndarray:
    """log Gamma(k) for the integers start <= k < stop (start >= 1), vectorised.

    lgamma(k + 1) = lgamma(k) + log k: cumulative sums of logs within blocks of
    ``_LGAMMA_BLOCK``, each anchored on ``math.lgamma``, so rounding cannot accumulate.
    """
    k = np.arange(start, stop, dtype=float)
    pad = -k.size % _LGAMMA_BLOCK
    logs = np.log(np.concatenate([k, np.ones(pad)])).reshape(-1, _LGAMMA_BLOCK)
    anchors = np.array([math.lgamma(start + i * _LGAMMA_BLOCK) for i in range(logs.shape[0])])
    steps = np.cumsum(logs, axis=1) - logs  # sum of log k over the block's earlier entries
    return (anchors[:, None] + steps).ravel()[:k.size]


def convolve_pmfs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pmf of the sum of two independent counts, full length ``len(a) + len(b) - 1``.

    Only the spans holding the mass are convolved, so long pmfs with narrow mass are cheap.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    (oa, va), (ob, vb) = _cut(0, a), _cut(0, b)
    out = np.zeros(a.size + b.size - 1)
    part = _flush(np.convolve(va, vb))
    out[oa + ob:oa + ob + part.size] = part
    return out


def poisson_binomial_pmf(p: np.ndarray) -> np.ndarray:
    """Pmf (length N+1) of the number of successes of independent Bernoulli(p_i).

    The exact recursion runs on about sqrt(N) groups of candidates at once; the groups'
    pmfs are then multiplied pairwise (convolution of their spans). Error at most a few
    ``_TAIL`` per group in total variation.
    """
    p = np.clip(np.asarray(p, dtype=float).ravel(), 0.0, 1.0)
    if p.size == 0:
        return np.ones(1)
    size = max(8, math.isqrt(p.size))  # as many steps as groups: both loops stay short
    q = np.concatenate([p, np.zeros(-p.size % size)]).reshape(-1, size).T.copy()
    g = np.zeros((q.shape[1], size + 1))
    g[:, 0] = 1.0
    for k, (pk, qk) in enumerate(zip(q[:, :, None], 1 - q[:, :, None], strict=True)):
        g[:, 1:k + 2] = g[:, 1:k + 2] * qk + g[:, :k + 1] * pk
        g[:, :1] *= qk
    parts = [_cut(0, row) for row in _flush(g)]
    while len(parts) > 1:  # a balanced product keeps every convolution small
        pairs = [(parts[i], parts[i + 1]) for i in range(0, len(parts) - 1, 2)]
        merged = [_cut(a[0] + b[0], _flush(np.convolve(a[1], b[1]))) for a, b in pairs]
        parts = merged + ([parts[-1]] if len(parts) % 2 else [])
    offset, values = parts[0]
    out = np.zeros(p.size + 1)
    out[offset:offset + values.size] = values
    return out / out.sum()


def _failure_range(d_lo: int, d_hi: int, recall: float, widen: float) -> tuple[int, int]:
    """Failures m (missed vehicles) that matter for D in [d_lo, d_hi]: NB(d, r) quantiles."""
    q = 1 - recall
    sd_lo, sd_hi = math.sqrt(d_lo * q) / recall, math.sqrt(d_hi * q) / recall
    m_lo = max(0, math.floor(d_lo * q / recall - widen * (sd_lo + 2)))
    m_hi = math.ceil(d_hi * q / recall + widen * (sd_hi + 2) + widen * 4 / recall)
    return m_lo, m_hi


def thin_correction(pmf_detected: np.ndarray, recall: float) -> np.ndarray:
    """Pmf of the vehicles present given the pmf of true candidates and the recall r.

    With N = D + M and M | D=d ~ NB(d, r)::

        P(N=n) = sum_d P(D=d) C(n-1, d-1) r^d (1-r)^(n-d)
               = e^{c(n)} sum_d [P(D=d) e^{u(d)}] [e^{-log (n-d)!}]

    with c(n) = log (n-1)! + n log(1-r) and u(d) = -log (d-1)! + d log(r/(1-r)): a single
    convolution over the spans of D and M. Both factors are tilted by e^{theta k} (which
    cancels in the product) so that neither under- nor overflows where the mass is. The
    span of M widens until the result holds all but ``_THIN_TOL`` of the mass.
    """
    if not 0.0 < recall < 1.0:  # 0 or missing: unknown (a card from an untrained model)
        return pmf_detected
    r = max(float(recall), _MIN_RECALL)
    pmf_detected = np.asarray(pmf_detected, dtype=float)
    lo, hi = _span(pmf_detected)
    p0 = float(pmf_detected[0]) if lo == 0 else 0.0
    d = np.arange(max(lo, 1), hi)
    if d.size == 0:
        return np.ones(1)
    weights = pmf_detected[d]
    mass = float(weights.sum())
    mean_n = max(float((d * weights).sum()) / mass / r, 1.0)
    theta = math.log(mean_n) + math.log1p(-r)  # slope of c(n) at the mean: flattens both
    with np.errstate(divide="ignore"):
        log_u = (np.log(weights) - _lgamma_range(d[0], d[-1] + 1)
                 + d * (math.log(r) - math.log1p(-r) + theta))
    u = _flush(np.exp(log_u - log_u.max()))
    for widen in _WIDEN:  # the first almost always holds the mass; heavy tails need more
        m_lo, m_hi = _failure_range(int(d[0]), int(d[-1]), r, widen)
        m = np.arange(m_lo, m_hi + 1)
        log_v = theta * m - _lgamma_range(m_lo + 1, m_hi + 2)
        conv = np.convolve(u, _flush(np.exp(log_v - log_v.max())))
        n = np.arange(d[0] + m_lo, d[0] + m_lo + conv.size)
        log_c = _lgamma_range(n[0], n[-1] + 1) + n * math.log1p(-r) - theta * n
        with np.errstate(divide="ignore"):
            part = _flush(np.exp(np.log(conv) + log_c + log_u.max() + log_v.max()))
        if mass - part.sum() <= _THIN_TOL * mass:
            break
    out = np.zeros(int(n[-1]) + 1)
    out[n[0]:] = part
    out[0] += p0
    return out / out.sum()


def beta_quantiles(a: float, b: float, levels: np.ndarray) -> np.ndarray:
    """Quantiles of Beta(a, b) for a, b >= 1, from its cdf on a grid around the mass."""
    mean = a / (a + b)
    sd = math.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))
    x = np.linspace(max(0.0, mean - 14 * sd), min(1.0, mean + 14 * sd), _BETA_GRID)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_pdf = (np.where(a > 1, (a - 1) * np.log(x), 0.0)
                   + np.where(b > 1, (b - 1) * np.log1p(-x), 0.0))
    pdf = np.exp(log_pdf - log_pdf.max())
    cdf = np.concatenate([[0.0], np.cumsum((pdf[1:] + pdf[:-1]) / 2)])
    return np.interp(levels, cdf / cdf[-1], x)


def uncertain_recall_correction(pmf_detected: np.ndarray, found: int, total: int
                                ) -> np.ndarray:
    """:func:`thin_correction` averaged over the recall's Beta(found+1, missed+1) posterior.

    The recall is estimated from a finite calibration set; a point estimate would make the
    interval too narrow whenever that estimate is off.
    """
    if total <= 0:
        return pmf_detected
    levels = (np.arange(_RECALL_QUANTILES) + 0.5) / _RECALL_QUANTILES
    recalls = beta_quantiles(found + 1, total - found + 1, levels)
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
        mean, scale = pmf_mean(pmf), math.sqrt(dispersion)
        # Rounded outwards, but float noise in the mean (50 + 1e-14) must not add a count.
        lo = max(0, math.floor(mean - (mean - lo) * scale + _ROUND_TOL))
        hi = math.ceil(mean + (hi - mean) * scale - _ROUND_TOL)
    return lo, hi


def dispersion_ratio(truth: Sequence[int], pmfs: Sequence[np.ndarray]) -> float:
    """Mean squared standardised error of per-scene counts (>= 1): the variance inflation."""
    if not pmfs:
        return 1.0
    z2 = []
    for t, pmf in zip(truth, pmfs, strict=True):
        k = np.arange(len(pmf), dtype=float)
        mean = pmf_mean(pmf)
        var = float(((k - mean) ** 2 * pmf).sum())
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
        "expected": round(pmf_mean(pmf), 3),
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
            wagon_pmf = convolve_pmfs(wagon_pmf, pmf)
            wagon_count += summary["count"]
    lo, hi = interval(wagon_pmf, level, float(dispersion.get(WAGONS, 1.0)))
    wagons = {"count": wagon_count,
              "expected": round(pmf_mean(wagon_pmf), 3),
              "ci95": [lo, hi]}
    return per_class, wagons
