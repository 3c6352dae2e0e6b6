"""Counts and intervals against distributions stated exactly, with the card's recall,
recall evidence and dispersion, and the coverage check on interval endpoints.

Every expected value here comes from scipy's distributions or from numbers worked out by
hand in the comments, never from the counting code itself.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import beta, binom, nbinom

from detector.evaluate.count_metrics import count_errors, counting_metrics, summarize
from detector.infer.counting import (
    class_summary,
    convolve_pmfs,
    dispersion_ratio,
    interval,
    summarize_counts,
    thin_correction,
    uncertain_recall_correction,
)

# A real card's counting fields: those of the v0.2 bundled model (recalibrated on 24 whole
# scenes), fixed here so the hand-computed figures below do not move with each release.
CARD = {
    "recall_at_candidate_conf": {"freight_car": 0.7803, "covered_car": 0.3205,
                                 "tank_car": 0.1902, "locomotive": 0.4066},
    "recall_counts": {"freight_car": [490, 628], "covered_car": [83, 259],
                      "tank_car": [35, 184], "locomotive": [37, 91]},
    "dispersion": {"freight_car": 2.494, "covered_car": 2.837, "tank_car": 15.243,
                   "locomotive": 1.0, "wagons": 1.95},
    "not_wagons": ["locomotive"],
    "operating_threshold": {"freight_car": 0.3244, "covered_car": 0.0501, "tank_car": 0.0619,
                            "locomotive": 0.0543, "default": 0.1619},
}
SHIPPED = json.loads((Path(__file__).resolve().parents[1] / "detector" / "assets"
                      / "railcar_obb.json").read_text())
CLASSES = ["freight_car", "covered_car", "tank_car", "locomotive"]


def central(pmf: np.ndarray, level: float = 0.95) -> tuple[int, int]:
    """Smallest k with P(X <= k) >= tail and smallest k with P(X <= k) >= 1 - tail."""
    cdf = np.cumsum(pmf)
    tail = (1 - level) / 2
    return int(np.argmax(cdf >= tail - 1e-9)), int(np.argmax(cdf >= 1 - tail - 1e-9))


def stretched(pmf: np.ndarray, dispersion: float, level: float = 0.95) -> tuple[int, int]:
    """The central interval stretched about the mean by sqrt(dispersion) (design doc)."""
    lo, hi = central(pmf, level)
    mean = float((np.arange(len(pmf)) * pmf).sum())
    s = math.sqrt(dispersion)
    return max(0, math.floor(mean - (mean - lo) * s)), math.ceil(mean + (hi - mean) * s)


def thinned(pmf_d: np.ndarray, r: float, n_max: int) -> np.ndarray:
    """P(N = n) with N = D + M, M | D=d ~ NegBin(d, r) (failures before the d-th success)."""
    out = np.zeros(n_max + 1)
    for d, w in enumerate(pmf_d):
        if d == 0:
            out[0] += w
            continue
        out[d:] += w * nbinom.pmf(np.arange(n_max + 1 - d), d, r)
    return out


def recall_mixture(pmf_d: np.ndarray, found: int, total: int, n_max: int) -> np.ndarray:
    """:func:`thinned` averaged over 9 central quantiles of the Beta(found+1, missed+1)."""
    levels = (np.arange(9) + 0.5) / 9
    recalls = beta.ppf(levels, found + 1, total - found + 1)
    return np.mean([thinned(pmf_d, r, n_max) for r in recalls], axis=0)


def delta(d: int) -> np.ndarray:
    out = np.zeros(d + 1)
    out[d] = 1.0
    return out


# --- interval ---------------------------------------------------------------------------

def test_interval_of_binomial_100_half_and_its_dispersion_stretch_by_hand():
    pmf = binom.pmf(np.arange(101), 100, 0.5)
    # Binomial(100, 1/2): P(X <= 39) = 0.0176, P(X <= 40) = 0.0284 -> lo 40; hi 60 by symmetry.
    assert interval(pmf) == (40, 60)
    # dispersion 2.25: sqrt 1.5 around the mean 50: 50 -+ 10 * 1.5 = 35, 65.
    assert interval(pmf, dispersion=2.25) == (35, 65)
    # dispersion 4: 50 -+ 20 = 30, 70; a ratio below 1 never narrows the interval.
    assert interval(pmf, dispersion=4.0) == (30, 70)
    assert interval(pmf, dispersion=0.5) == (40, 60)
    assert interval(pmf, dispersion=1.0) == (40, 60)
    # level 0.5: quartiles of Binomial(100, 1/2) are 47 and 53.
    assert interval(pmf, level=0.5) == (47, 53)
    # stretch of a non-integer mean rounds outwards: mean 50.5 of the shifted pmf.
    shifted = np.concatenate([[0.5 * p for p in pmf], [0.0]]) + np.concatenate(
        [[0.0], [0.5 * p for p in pmf]])
    lo, hi = central(shifted)
    assert interval(shifted, dispersion=2.25) == (math.floor(50.5 - (50.5 - lo) * 1.5),
                                                   math.ceil(50.5 + (hi - 50.5) * 1.5))


def test_interval_endpoints_hit_exactly_and_stretch_clamps_at_zero():
    # cdf 0.025, 0.975, 1: both tails are met exactly at 0 and 1.
    assert interval(np.array([0.025, 0.95, 0.025])) == (0, 1)
    # cdf 0.02, 0.97, 1: the lower tail is first met at 1, the upper at 2.
    assert interval(np.array([0.02, 0.95, 0.03])) == (1, 2)
    assert interval(np.array([0.03, 0.95, 0.02])) == (0, 1)
    # the upper end never leaves the pmf, even with float rounding of the cdf
    assert interval(np.array([0.0, 0.0, 1.0 - 1e-13])) == (2, 2)
    # a stretched interval near zero stops at zero: mean 1, lo 0 -> floor(1 - 1 * 3) < 0
    pmf = np.array([0.3, 0.4, 0.3])
    assert interval(pmf, dispersion=9.0) == (0, 4)  # hi: ceil(1 + 1 * 3) = 4


# --- recall -----------------------------------------------------------------------------

def test_point_recall_gives_the_negative_binomial_exactly():
    # 20 sure candidates, recall 0.8: N = 20 + NegBin(20, 0.8), mean 25.
    pmf = thin_correction(delta(20), 0.8)
    ref = thinned(delta(20), 0.8, len(pmf) - 1)
    assert np.abs(pmf - ref).max() < 1e-9
    assert (np.arange(len(pmf)) * pmf).sum() == pytest.approx(25.0, abs=1e-6)
    lo, hi = interval(pmf)
    assert (lo, hi) == (20 + int(nbinom.ppf(0.025, 20, 0.8)), 20 + int(nbinom.ppf(0.975, 20, 0.8)))


def test_point_recall_on_uncertain_candidates_mixes_exactly():
    # D ~ Binomial(30, 0.6) (P(D=0) > 0 too), recall 0.7
    pmf_d = binom.pmf(np.arange(31), 30, 0.6)
    pmf = thin_correction(pmf_d, 0.7)
    ref = thinned(pmf_d, 0.7, len(pmf) - 1)
    assert np.abs(pmf - ref).max() < 1e-9
    assert (np.arange(len(pmf)) * pmf).sum() == pytest.approx(18 / 0.7, abs=1e-6)
    # D = 0 stays N = 0: nothing found, nothing inferred
    pmf0 = thin_correction(np.array([0.25, 0.75]), 0.5)
    assert pmf0[0] == pytest.approx(0.25)
    assert pmf0[1:].sum() == pytest.approx(0.75)
    assert (np.arange(len(pmf0)) * pmf0).sum() == pytest.approx(0.75 / 0.5)


def test_recall_out_of_range_means_unknown_and_tiny_recall_is_floored():
    pmf = delta(5)
    assert thin_correction(pmf, 1.0) is pmf
    assert thin_correction(pmf, 0.0) is pmf
    # recall 0.01 is floored at 0.05: mean 2 / 0.05 = 40
    floored = thin_correction(delta(2), 0.01)
    assert (np.arange(len(floored)) * floored).sum() == pytest.approx(40.0, rel=1e-4)
    assert thin_correction(np.array([1.0]), 0.5).tolist() == [1.0]


def test_recall_evidence_averages_nine_beta_quantiles():
    # 40 sure candidates, recall seen as 80 of 100 -> Beta(81, 21) posterior on the recall.
    pmf = uncertain_recall_correction(delta(40), 80, 100)
    ref = recall_mixture(delta(40), 80, 100, len(pmf) - 1)
    assert np.abs(pmf - ref).max() < 1e-5
    assert interval(pmf) == central(ref)
    # The mean is close to the exact beta-negative-binomial's: 40 + 40 * 21 / 80 = 50.5.
    assert (np.arange(len(pmf)) * pmf).sum() == pytest.approx(50.5, abs=0.15)
    # ...and the interval is wider than the point estimate's (recall 0.8) on both sides.
    lo_p, hi_p = interval(thin_correction(delta(40), 0.8))
    lo, hi = interval(pmf)
    assert lo <= lo_p and hi > hi_p and (hi - lo) >= (hi_p - lo_p) + 3
    assert uncertain_recall_correction(pmf, 3, 0) is pmf  # no evidence: unchanged


# --- class and wagons summaries as with a real card --------------------------------------

def test_class_summary_counts_mean_confidence_and_threshold_edge():
    scores = np.array([0.2, 0.5, 0.5, 0.9, 0.7])
    summary, pmf = class_summary(scores, np.ones(5), threshold=0.5)
    # scores >= 0.5 count: 0.5, 0.5, 0.9, 0.7 -> 4, mean 2.6 / 4 = 0.65
    assert summary == {"count": 4, "expected": 5.0, "ci95": [5, 5], "mean_confidence": 0.65}
    summary, _ = class_summary(np.array([0.1]), np.array([0.5]), threshold=0.5)
    assert summary == {"count": 0, "expected": 0.5, "ci95": [0, 1], "mean_confidence": 0.0}
    # evidence replaces the point recall
    with_evidence, _ = class_summary(np.ones(10), np.ones(10), 0.5, recall=0.5,
                                     recall_evidence=[90, 100])
    assert with_evidence["expected"] == pytest.approx(10 * 102 / 91, abs=0.05)  # ~11.2, not 20


def test_the_shipped_card_has_the_fields_these_tests_use():
    for key in ("recall_at_candidate_conf", "recall_counts", "dispersion", "not_wagons",
                "operating_threshold"):
        assert set(SHIPPED[key]) >= set(CARD[key]) - {"default"}, key


def card_fields() -> dict:
    """A real card's recall, recall evidence, dispersion and taxonomy (v0.2's)."""
    return {"recall": CARD["recall_at_candidate_conf"],
            "recall_evidence": CARD["recall_counts"],
            "dispersion": CARD["dispersion"],
            "not_wagons": tuple(CARD["not_wagons"])}


def test_summary_with_the_shipped_cards_recall_evidence_and_dispersion():
    """Sure candidates per class (p = 1), so each class's truth is d + missed, whose law is
    the recall-posterior mixture of negative binomials; wagons sum the wagon classes."""
    fields = card_fields()
    n = {"freight_car": 60, "covered_car": 15, "tank_car": 8, "locomotive": 3}
    det = [c for c in CLASSES for _ in range(n[c])]
    scores = np.full(len(det), 0.99)
    per_class, wagons = summarize_counts(CLASSES, det, scores, np.ones(len(det)),
                                         CARD["operating_threshold"], **fields)
    pmfs = {}
    for c in CLASSES:
        found, total = fields["recall_evidence"][c]
        pmfs[c] = recall_mixture(delta(n[c]), found, total, 40 * n[c] + 400)
        lo, hi = stretched(pmfs[c], fields["dispersion"][c])
        mean = float((np.arange(len(pmfs[c])) * pmfs[c]).sum())
        row = per_class[c]
        assert row["count"] == n[c]
        assert row["mean_confidence"] == 0.99
        assert row["expected"] == pytest.approx(mean, abs=0.02), c
        assert abs(row["ci95"][0] - lo) <= 1 and abs(row["ci95"][1] - hi) <= 1, (c, row, lo, hi)
    wagon_pmf = np.ones(1)
    for c in ("freight_car", "covered_car", "tank_car"):
        wagon_pmf = np.convolve(wagon_pmf, pmfs[c])
    lo, hi = stretched(wagon_pmf, fields["dispersion"]["wagons"])
    assert wagons["count"] == 83
    assert wagons["expected"] == pytest.approx(float((np.arange(len(wagon_pmf)) * wagon_pmf).sum()),
                                               abs=0.05)
    assert abs(wagons["ci95"][0] - lo) <= 1 and abs(wagons["ci95"][1] - hi) <= 1, (wagons, lo, hi)
    # What the card's uncertainty is worth: without dispersion, or with the point recall,
    # the wagon interval is much narrower than the honest one.
    no_disp = stretched(wagon_pmf, 1.0)
    assert (hi - lo) - (no_disp[1] - no_disp[0]) >= 10


def test_dropping_the_cards_dispersion_or_recall_evidence_changes_the_interval():
    fields = card_fields()
    det = ["freight_car"] * 120 + ["covered_car"] * 30
    p = np.ones(len(det))
    _, honest = summarize_counts(CLASSES, det, p, p, 0.5, **fields)
    _, no_disp = summarize_counts(CLASSES, det, p, p, 0.5,
                                  **{**fields, "dispersion": None})
    _, point = summarize_counts(CLASSES, det, p, p, 0.5,
                                **{**fields, "recall_evidence": None})
    width = honest["ci95"][1] - honest["ci95"][0]
    assert width >= 1.3 * (no_disp["ci95"][1] - no_disp["ci95"][0])
    # the card's point recall alone (its evidence dropped): 207..293 against 202..300
    assert width >= (point["ci95"][1] - point["ci95"][0]) + 8
    # per-class dispersion widens the class, the wagons entry widens the wagons
    per_class, _ = summarize_counts(CLASSES, det, p, p, 0.5,
                                    **{**fields, "dispersion": {"wagons": 1.95}})
    honest_class, _ = summarize_counts(CLASSES, det, p, p, 0.5, **fields)
    fc, fc_honest = per_class["freight_car"]["ci95"], honest_class["freight_car"]["ci95"]
    assert fc_honest[1] - fc_honest[0] > fc[1] - fc[0]


def test_wagons_are_the_convolution_of_the_wagon_classes_only():
    # 100 freight and 44 covered at p = 1/2: wagons ~ Binomial(144, 1/2); 10 locomotives out.
    det = ["freight_car"] * 100 + ["covered_car"] * 44 + ["locomotive"] * 10
    p = np.full(len(det), 0.5)
    scores = np.where(np.arange(len(det)) % 2 == 0, 0.8, 0.3)
    per_class, wagons = summarize_counts(CLASSES, det, scores, p, 0.5)
    assert per_class["freight_car"]["ci95"] == [40, 60]
    assert per_class["freight_car"]["count"] == 50 and per_class["covered_car"]["count"] == 22
    assert per_class["locomotive"]["count"] == 5
    assert per_class["freight_car"]["mean_confidence"] == 0.8
    assert wagons == {"count": 72, "expected": 72.0,
                      "ci95": [int(binom.ppf(0.025, 144, 0.5)), int(binom.ppf(0.975, 144, 0.5))]}
    # dispersion per class and for the wagons, by hand around the means 50 and 72
    per_class, wagons = summarize_counts(CLASSES, det, scores, p, 0.5,
                                         dispersion={"freight_car": 2.25, "wagons": 4.0})
    assert per_class["freight_car"]["ci95"] == [35, 65]
    lo, hi = int(binom.ppf(0.025, 144, 0.5)), int(binom.ppf(0.975, 144, 0.5))
    assert wagons["ci95"] == [72 - (72 - lo) * 2, 72 + (hi - 72) * 2]
    # a custom taxonomy: locomotives counted as wagons when not_wagons is empty
    _, all_wagons = summarize_counts(CLASSES, det, scores, p, 0.5, not_wagons=())
    assert all_wagons["count"] == 77 and all_wagons["expected"] == 77.0
    # a point recall (no evidence) thins each class: freight mean 50 / 0.5 = 100
    per_class, _ = summarize_counts(CLASSES, det, scores, p, 0.5,
                                    recall={"freight_car": 0.5, "covered_car": None})
    assert per_class["freight_car"]["expected"] == pytest.approx(100.0, abs=1e-3)
    assert per_class["covered_car"]["expected"] == pytest.approx(22.0, abs=1e-3)


def test_level_reaches_the_class_and_wagon_intervals():
    det = ["freight_car"] * 100
    p = np.full(100, 0.5)
    per_class, wagons = summarize_counts(CLASSES, det, p, p, 0.5, level=0.5)
    assert per_class["freight_car"]["ci95"] == [47, 53]
    assert wagons["ci95"] == [47, 53]


def test_convolve_pmfs_matches_numpy_on_offset_spans():
    a = np.zeros(50)
    a[30:33] = [0.2, 0.5, 0.3]
    b = binom.pmf(np.arange(21), 20, 0.3)
    out = convolve_pmfs(a, b)
    assert out.shape == (70,)
    assert np.abs(out - np.convolve(a, b)).max() < 1e-12


def test_dispersion_ratio_by_hand():
    # pmf uniform on {0, 2}: mean 1, variance 1; truths 3 and 1 -> z^2 = 4 and 0 -> mean 2
    pmf = np.array([0.5, 0.0, 0.5])
    assert dispersion_ratio([3, 1], [pmf, pmf]) == pytest.approx(2.0)
    # variance floored at 1: a sure count of 5, truth 7 -> z^2 = 4
    assert dispersion_ratio([7], [delta(5)]) == pytest.approx(4.0)
    # never below 1, and 1 without scenes
    assert dispersion_ratio([1, 1], [pmf, pmf]) == 1.0
    assert dispersion_ratio([], []) == 1.0


# --- coverage on interval endpoints ------------------------------------------------------

@pytest.mark.parametrize(("truth", "covered"), [(9, False), (10, True), (12, True), (14, True),
                                                (15, False)])
def test_truth_on_interval_endpoints_is_covered(truth, covered):
    counts = {"classes": {"freight_car": {"count": 12, "expected": 12.3, "ci95": [10, 14]}},
              "wagons": {"count": 12, "expected": 12.3, "ci95": [10, 14]}}
    rows = count_errors(counts, {"freight_car": truth}, ["freight_car", "locomotive"])
    assert rows["classes"]["freight_car"]["covered"] is covered
    assert rows["wagons"]["covered"] is covered
    assert rows["wagons"]["truth"] == truth
    assert rows["classes"]["freight_car"]["error"] == 12 - truth
    assert rows["classes"]["freight_car"]["expected"] == 12.3


def test_count_errors_wagons_truth_leaves_out_not_wagons_and_missing_classes_count_zero():
    counts = {"classes": {"freight_car": {"count": 3, "ci95": [2, 4]}},
              "wagons": {"count": 3, "expected": 3.0, "ci95": [2, 4]}}
    truth = {"freight_car": 2, "covered_car": 1, "locomotive": 5}
    rows = count_errors(counts, truth, CLASSES)
    assert rows["wagons"]["truth"] == 3
    assert rows["classes"]["locomotive"] == {"truth": 5, "count": 0, "error": -5,
                                             "expected": 0.0, "ci95": [0, 0],
                                             "covered": False}
    assert rows["classes"]["freight_car"]["expected"] == 3.0  # no expected: the count
    rows = count_errors(counts, truth, CLASSES, not_wagons=())
    assert rows["wagons"]["truth"] == 8


def test_summarize_by_hand():
    rows = [{"truth": 10, "count": 12, "error": 2, "ci95": [8, 14], "covered": True},
            {"truth": 0, "count": 1, "error": 1, "ci95": [0, 3], "covered": True},
            {"truth": 5, "count": 1, "error": -4, "ci95": [0, 2], "covered": False}]
    s = summarize(rows)
    assert s == {"n_scenes": 3, "truth_total": 15, "mae": pytest.approx(7 / 3),
                 "mape": pytest.approx((0.2 + 0.8) / 2 * 100),
                 "wape": pytest.approx(7 / 15 * 100), "bias": pytest.approx(-1 / 3),
                 "rmse": pytest.approx(math.sqrt(21 / 3)), "coverage": pytest.approx(2 / 3),
                 "mean_width": pytest.approx(11 / 3)}
    empty = summarize([])
    assert empty["n_scenes"] == 0 and empty["mae"] is None and empty["coverage"] is None
    zero = summarize([{"truth": 0, "count": 0, "error": 0, "ci95": [0, 0], "covered": True}])
    assert zero["mape"] is None and zero["wape"] is None and zero["mae"] == 0.0
    both = counting_metrics([{"wagons": rows[0], "classes": {"a": rows[2]}}], ["a"])
    assert both["wagons"]["mae"] == 2.0 and both["classes"]["a"]["mae"] == 4.0


def test_rounding_of_expected_and_mean_confidence():
    summary, _ = class_summary(np.array([0.123456]), np.array([1 / 3]), threshold=0.1)
    assert summary["expected"] == 0.333 and summary["mean_confidence"] == 0.1235
    _, wagons = summarize_counts(CLASSES, ["freight_car"], np.array([0.9]), np.array([1 / 3]),
                                 0.5)
    assert wagons["expected"] == 0.333


def test_one_calibration_truth_is_evidence_too():
    # found 1 of 1: recall ~ Beta(2, 1), mean 2/3 -- far from certain, so the pmf widens
    pmf = uncertain_recall_correction(delta(5), 1, 1)
    ref = recall_mixture(delta(5), 1, 1, len(pmf) - 1)
    assert np.abs(pmf - ref).max() < 1e-5
    assert (np.arange(len(pmf)) * pmf).sum() > 6.0
    # found 0 of 1: Beta(1, 2), recalls below 0.05 are floored
    assert (np.arange(len(p := uncertain_recall_correction(delta(3), 0, 1))) * p).sum() > 9


@pytest.mark.parametrize(("a", "b"), [(2, 5), (5, 2), (2, 2), (17, 5)])
def test_recall_posterior_quantiles_for_small_evidence(a, b):
    from detector.infer.counting import beta_quantiles

    levels = (np.arange(9) + 0.5) / 9
    assert np.allclose(beta_quantiles(a, b, levels), beta.ppf(levels, a, b), atol=2e-6)


def test_probabilities_outside_0_1_are_clipped_and_the_upper_end_stays_in_the_pmf():
    from detector.infer.counting import poisson_binomial_pmf

    assert poisson_binomial_pmf([-0.2, 1.3]).tolist() == [0.0, 1.0, 0.0]
    # a pmf whose mass falls short of 0.975 (rounding, cut tails): hi is its last value
    assert interval(np.array([0.5, 0.4])) == (0, 1)
