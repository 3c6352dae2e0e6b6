"""Poisson-binomial counts and intervals: exactness and honest coverage."""

import itertools

import numpy as np
import pytest
from scipy.stats import binom

from detector.infer.counting import (
    interval,
    poisson_binomial_pmf,
    summarize_counts,
    thin_correction,
)


def test_pmf_is_exact_against_enumeration():
    p = np.array([0.1, 0.5, 0.9, 0.33, 0.7])
    brute = np.zeros(6)
    for outcome in itertools.product([0, 1], repeat=5):
        o = np.array(outcome)
        brute[o.sum()] += np.prod(np.where(o == 1, p, 1 - p))
    assert np.allclose(poisson_binomial_pmf(p), brute)
    assert np.allclose(poisson_binomial_pmf(np.full(40, 0.3)), binom.pmf(np.arange(41), 40, 0.3))
    assert poisson_binomial_pmf([]).tolist() == [1.0]


def test_interval_is_central_and_degenerate_cases_hold():
    assert interval(poisson_binomial_pmf(np.ones(7))) == (7, 7)
    assert interval(poisson_binomial_pmf(np.zeros(7))) == (0, 0)
    pmf = binom.pmf(np.arange(101), 100, 0.5)
    assert interval(pmf) == (int(binom.ppf(0.025, 100, 0.5)), int(binom.ppf(0.975, 100, 0.5)))


def test_interval_covers_the_truth_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    hits, trials = 0, 2000
    for _ in range(trials):
        p = rng.beta(2, 1, size=rng.integers(20, 120))
        truth = int((rng.random(p.size) < p).sum())
        lo, hi = interval(poisson_binomial_pmf(p))
        hits += lo <= truth <= hi
    assert 0.94 <= hits / trials <= 0.995


def test_recall_correction_covers_missed_vehicles():
    rng = np.random.default_rng(1)
    recall, hits, trials = 0.8, 0, 800
    for _ in range(trials):
        n_true = int(rng.integers(30, 100))
        found = rng.random(n_true) < recall  # vehicles the model proposes at all
        p_true = rng.beta(5, 1, size=found.sum())  # calibrated p of true candidates
        p_false = rng.beta(1, 5, size=int(rng.integers(0, 20)))
        # candidates are true with their calibrated probability
        p = np.concatenate([p_true, p_false])
        is_true = rng.random(p.size) < p
        n_missed = n_true - found.sum()
        truth = int(is_true.sum() + n_missed)
        lo, hi = interval(thin_correction(poisson_binomial_pmf(p), recall))
        hits += lo <= truth <= hi
    assert 0.93 <= hits / trials <= 0.995
    pmf = thin_correction(poisson_binomial_pmf(np.full(50, 0.8)), 0.8)
    assert np.dot(np.arange(len(pmf)), pmf) == pytest.approx(50, rel=1e-3)


def test_summary_counts_per_class_and_wagons():
    classes = ["freight_car", "covered_car", "tank_car", "locomotive"]
    det = ["freight_car", "freight_car", "covered_car", "locomotive", "covered_car"]
    scores = np.array([0.9, 0.3, 0.8, 0.95, 0.6])
    p = np.array([0.95, 0.2, 0.9, 0.99, 0.5])
    per_class, wagons = summarize_counts(classes, det, scores, p,
                                         {"covered_car": 0.7, "default": 0.5})
    assert per_class["freight_car"]["count"] == 1
    assert per_class["covered_car"]["count"] == 1  # 0.6 is below its own threshold
    assert per_class["locomotive"]["count"] == 1
    assert per_class["tank_car"] == {"count": 0, "expected": 0.0, "ci95": [0, 0],
                                     "mean_confidence": 0.0}
    assert wagons["count"] == 2  # locomotives are not wagons
    assert wagons["expected"] == pytest.approx(0.95 + 0.2 + 0.9 + 0.5)
    lo, hi = wagons["ci95"]
    assert 0 <= lo <= 2 <= hi <= 4
    assert per_class["freight_car"]["mean_confidence"] == pytest.approx(0.9)


def test_recall_uncertainty_widens_the_interval_not_its_centre():
    from detector.infer.counting import interval, thin_correction, uncertain_recall_correction

    pmf = poisson_binomial_pmf(np.full(60, 0.9))
    point = thin_correction(pmf, 0.5)
    few = uncertain_recall_correction(pmf, 10, 20)      # recall 0.5 from 20 objects
    many = uncertain_recall_correction(pmf, 500, 1000)  # recall 0.5 from 1000 objects
    width = {name: np.subtract(*interval(p)[::-1]) for name, p in
             {"point": point, "few": few, "many": many}.items()}
    assert width["few"] > width["many"] >= width["point"] - 1
    mean = {name: float(np.dot(np.arange(len(p)), p)) for name, p in
            {"point": point, "many": many}.items()}
    assert mean["many"] == pytest.approx(mean["point"], rel=0.02)


def test_dispersion_stretches_the_interval_around_its_mean():
    from detector.infer.counting import dispersion_ratio, interval

    pmf = poisson_binomial_pmf(np.full(100, 0.5))
    lo, hi = interval(pmf)
    lo4, hi4 = interval(pmf, dispersion=4.0)  # twice the spread
    assert (lo4, hi4) == (pytest.approx(50 - 2 * (50 - lo), abs=1),
                          pytest.approx(50 + 2 * (hi - 50), abs=1))
    # Truth scattered exactly as the model says gives a ratio of about 1; twice as far, 4.
    sd = 5.0
    assert dispersion_ratio([50 + sd, 50 - sd], [pmf, pmf]) == pytest.approx(1.0, rel=0.01)
    assert dispersion_ratio([50 + 2 * sd, 50 - 2 * sd], [pmf, pmf]) == pytest.approx(4.0, rel=0.01)


def _exact_poisson_binomial(p: np.ndarray) -> np.ndarray:
    """Reference: the plain O(N^2) recursion (the implementation before the fast one)."""
    pmf = np.zeros(len(p) + 1)
    pmf[0] = 1.0
    for k, pk in enumerate(p, start=1):
        pmf[1:k + 1] = pmf[1:k + 1] * (1 - pk) + pmf[:k] * pk
        pmf[0] *= 1 - pk
    return pmf


def _exact_thinning(pmf_detected: np.ndarray, recall: float) -> np.ndarray:
    """Reference: the D x N matrix of scipy negative-binomial pmfs, with a generous span."""
    from scipy.stats import nbinom

    d_max = len(pmf_detected) - 1
    mean = d_max / recall
    n = np.arange(int(mean + 20 * np.sqrt(mean * (1 - recall)) / recall + 1000))
    out = np.zeros(n.size)
    out[0] = pmf_detected[0]
    d = np.arange(1, d_max + 1)[:, None]
    out += pmf_detected[1:] @ nbinom.pmf(n[None, :] - d, d, recall)
    return out / out.sum()


def _l1(a: np.ndarray, b: np.ndarray) -> float:
    size = max(len(a), len(b))
    return float(np.abs(np.pad(a, (0, size - len(a))) - np.pad(b, (0, size - len(b)))).sum())


@pytest.mark.parametrize("seed", range(6))
def test_fast_counting_matches_the_exact_computation(seed):
    rng = np.random.default_rng(seed)
    for _ in range(8):
        p = rng.beta(rng.uniform(0.2, 3), rng.uniform(0.2, 3), size=int(rng.integers(0, 150)))
        exact = _exact_poisson_binomial(p)
        assert _l1(poisson_binomial_pmf(p), exact) < 1e-12
        recall = float(rng.choice([0.05, 0.2, 0.5, 0.66, 0.9, 0.99]))
        fast, ref = thin_correction(exact, recall), _exact_thinning(exact, recall)
        assert _l1(fast, ref) < 1e-7
        assert interval(fast) == interval(ref)


def test_recall_posterior_quantiles_match_scipy():
    from scipy.stats import beta

    from detector.infer.counting import beta_quantiles

    levels = (np.arange(9) + 0.5) / 9
    for a, b in [(1, 1), (1, 50), (50, 1), (3, 2), (51, 101), (680, 355)]:
        assert np.allclose(beta_quantiles(a, b, levels), beta.ppf(levels, a, b), atol=2e-6)


def test_long_pmfs_convolve_like_numpy_and_large_scenes_stay_consistent():
    from detector.infer.counting import convolve_pmfs, uncertain_recall_correction

    a, b = binom.pmf(np.arange(301), 300, 0.3), binom.pmf(np.arange(41), 40, 0.9)
    assert np.allclose(convolve_pmfs(a, b), np.convolve(a, b), atol=1e-15)
    p = np.random.default_rng(3).beta(0.6, 1.5, size=20_000)
    pmf = uncertain_recall_correction(poisson_binomial_pmf(p), 679, 1033)
    assert pmf.sum() == pytest.approx(1.0)
    mean = float(np.dot(np.arange(len(pmf)), pmf))
    assert mean == pytest.approx(p.sum() * 1034 / 679, rel=0.01)  # E[1/r], r ~ Beta(680, 355)
