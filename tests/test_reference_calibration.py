"""Calibration maps, ECE, thresholds, recall and dispersion on candidate sets small enough
to work out by hand (the numbers in the comments)."""

from __future__ import annotations

import numpy as np
import pytest

from detector import calibration
from detector.errors import DetectorError
from detector.train.calibrate import (
    FALLBACK_THRESHOLD,
    MatchedCandidates,
    calibrate,
    count_threshold,
    cross_fitted,
    dispersion,
    ece_report,
    f1_threshold,
    fit_maps,
    operating_thresholds,
    recall_at_candidate_conf,
    recall_counts,
)

# --- detector.calibration ---------------------------------------------------------------


def test_isotonic_fit_by_hand():
    # sorted by score: correct 1, 0, 1, 1 -> pool-adjacent-violators: 0.5, 0.5, 1, 1;
    # clipped to [0.5 / 4, 1 - 0.5 / 4] = [0.125, 0.875]
    fit = calibration.fit_isotonic(np.array([0.3, 0.1, 0.4, 0.2]), np.array([1, 1, 1, 0]),
                                   min_samples=4)
    assert fit == {"method": "isotonic", "x": [0.1, 0.2, 0.3, 0.4],
                   "y": [0.5, 0.5, 0.875, 0.875], "n": 4}
    assert calibration.fit_isotonic(np.array([0.1, 0.2, 0.3]), np.array([0, 1, 1]),
                                    min_samples=4) == {"method": "identity"}
    # ties keep their input order (stable sort): equal scores with correct 1 then 0 pool
    fit = calibration.fit_isotonic(np.array([0.5, 0.5, 0.9]), np.array([1, 0, 1]),
                                   min_samples=3)
    assert fit["y"] == pytest.approx([0.5, 0.5, 1 - 0.5 / 3], abs=1e-5)


def test_isotonic_fit_keeps_at_most_64_knots_including_both_ends():
    rng = np.random.default_rng(0)
    scores = rng.random(1000)
    fit = calibration.fit_isotonic(scores, scores > 0.5)
    assert len(fit["x"]) == len(fit["y"]) == 64 and fit["n"] == 1000
    assert fit["x"][0] == round(float(scores.min()), 5)
    assert fit["x"][-1] == round(float(scores.max()), 5)
    assert fit["y"][0] == 0.0005 and fit["y"][-1] == 0.9995  # 0.5 / 1000 from the ends
    assert all(a <= b for a, b in zip(fit["x"], fit["x"][1:], strict=False))
    small = calibration.fit_isotonic(scores[:30], scores[:30] > 0.5)
    assert len(small["x"]) == 30  # fewer candidates than knots: one knot each


def test_apply_interpolates_and_identity_copies():
    scores = np.array([0.0, 0.25, 0.5, 1.0, 2.0])
    cmap = {"method": "isotonic", "x": [0.0, 1.0], "y": [0.1, 0.9]}
    assert calibration.apply(cmap, scores).tolist() == pytest.approx([0.1, 0.3, 0.5, 0.9, 0.9])
    for identity in (None, {}, {"method": "identity"}, {"x": [0, 1], "y": [1, 0]}):
        out = calibration.apply(identity, scores)
        assert out.tolist() == scores.tolist() and out is not scores
        out[0] = 7.0
        assert scores[0] == 0.0


def test_expected_calibration_error_by_hand():
    p, correct = np.array([0.2, 0.4, 0.6]), np.array([1, 0, 1])
    # ten bins, one candidate each: (0.8 + 0.4 + 0.4) / 3
    assert calibration.expected_calibration_error(p, correct) == pytest.approx(1.6 / 3)
    # two bins: {0.2, 0.4} mean 0.3 vs 0.5 (x2), {0.6} vs 1 -> (0.4 + 0.4) / 3
    assert calibration.expected_calibration_error(p, correct, n_bins=2) == pytest.approx(0.8 / 3)
    # p = 1 falls in the top bin: mean (0.95 + 1) / 2 vs 1 -> 0.05, over 2
    assert calibration.expected_calibration_error(np.array([0.95, 1.0]), np.array([1, 1])
                                                  ) == pytest.approx(0.025)
    assert calibration.expected_calibration_error(np.zeros(0), np.zeros(0)) == 0.0


# --- detector.train.calibrate -------------------------------------------------------------

def cands_two_classes() -> MatchedCandidates:
    """Image 0: freight 3 sure candidates (truth 5), locomotive 1 (truth 1);
    image 1: freight 2 sure candidates (truth 2), locomotive none (truth 3)."""
    c = MatchedCandidates(2)
    c.add(0, np.ones(4), np.array([0, 0, 0, 1]), np.array([1, 1, 1, 1]),
          np.array([0] * 5 + [1]), np.array([1, 1, 1, 0, 0, 1], bool))
    c.add(1, np.ones(2), np.array([0, 0]), np.array([1, 1]), np.array([0, 0, 1, 1, 1]),
          np.array([1, 1, 0, 0, 0], bool))
    return c


def test_matched_candidates_bookkeeping():
    c = cands_two_classes()
    assert c.n_truth.tolist() == [7, 4] and c.truth_found.tolist() == [5, 1]
    assert c.image.tolist() == [0, 0, 0, 0, 1, 1]
    assert c.classes.tolist() == [0, 0, 0, 1, 0, 0] and c.correct.all()
    assert c.truth_per_image[0].tolist() == [5, 1] and c.truth_per_image[1].tolist() == [2, 3]
    c.add(1, np.zeros(0), np.zeros(0, int), np.zeros(0, bool), np.array([1]), np.array([True]))
    assert c.truth_per_image[1].tolist() == [2, 4] and c.truth_found.tolist() == [5, 2]


def test_recall_and_its_evidence_per_class():
    c = cands_two_classes()
    names = ["freight_car", "locomotive"]
    assert recall_at_candidate_conf(c, names) == {"freight_car": round(5 / 7, 4),
                                                  "locomotive": 0.25}
    assert recall_counts(c, names) == {"freight_car": [5, 7], "locomotive": [1, 4]}
    empty = MatchedCandidates(1)
    assert recall_at_candidate_conf(empty, ["a"]) == {"a": None}


def test_dispersion_by_hand():
    c = cands_two_classes()
    names = ["freight_car", "locomotive"]
    no_recall = {"freight_car": [0, 0], "locomotive": [0, 0]}  # no thinning: sure counts
    out = dispersion(c, names, {}, no_recall, ["locomotive"])
    # freight: counts 3 and 2 (variance 0, floored at 1) vs truth 5 and 2 -> z^2 4, 0 -> 2
    # locomotive: 1 and 0 vs 1 and 3 -> 0, 9 -> 4.5; wagons = freight only -> 2
    # vehicles (every class): 4 vs 6, 2 vs 5 -> 4, 9 -> 6.5
    assert out == {"freight_car": 2.0, "locomotive": 4.5, "wagons": 2.0, "vehicles": 6.5}
    all_wagons = dispersion(c, names, {}, no_recall, [])
    # wagons: 4 vs 6, 2 vs 5 -> 4, 9 -> 6.5
    assert all_wagons["wagons"] == 6.5
    # the maps are applied: p = 0.5 for every candidate widens the pmfs
    half = {"method": "isotonic", "x": [0.0, 1.0], "y": [0.5, 0.5]}
    out = dispersion(c, names, {"freight_car": half}, no_recall, ["locomotive"])
    assert out["freight_car"] != 2.0
    # and the recall evidence: 5 of 7 found -> the expected count rises towards the truth
    out = dispersion(c, names, {}, {"freight_car": [5, 7], "locomotive": [0, 0]},
                     ["locomotive"])
    assert out["freight_car"] < 2.0


def test_thresholds_by_hand():
    scores = np.array([0.6, 0.9, 0.7, 0.8])
    correct = np.array([1, 1, 1, 0], bool)
    # by falling score: 0.9 (1), 0.8 (0), 0.7 (1), 0.6 (1); F1 = 2 tp / (kept + 4):
    # 2/5, 2/6, 4/7, 6/8 -> best at 0.6 with 0.75
    assert f1_threshold(scores, correct, 4) == (0.6, 0.75)
    # keep 3 (as many as truths): 0.9, 0.8, 0.7 -> threshold 0.7, F1 2 * 2 / 6
    assert count_threshold(scores, correct, 3) == (0.7, pytest.approx(4 / 6))
    # more truths than candidates: keep all 4 -> 0.6, F1 2 * 3 / (4 + 6)
    assert count_threshold(scores, correct, 6) == (0.6, pytest.approx(0.6))
    assert f1_threshold(scores, correct, 0) == (FALLBACK_THRESHOLD, 0.0)
    assert count_threshold(np.zeros(0), np.zeros(0, bool), 3) == (FALLBACK_THRESHOLD, 0.0)
    # first best kept on a tie: 0.9 alone (2 / 3) ties with all four (2 * 2 / 6)
    assert f1_threshold(np.array([0.9, 0.8, 0.7, 0.6]), np.array([1, 0, 0, 1], bool),
                        2) == (0.9, pytest.approx(2 / 3))


def test_operating_thresholds_global_and_per_class():
    c = MatchedCandidates(2)
    c.add(0, np.array([0.9, 0.8, 0.7, 0.6]), np.array([0, 0, 1, 1]),
          np.array([1, 0, 1, 1]), np.array([0, 1, 1]), np.array([1, 1, 1], bool))
    out = operating_thresholds(c, ["a", "b"])
    # global: keep 3 -> 0.7, F1 2 * 2 / 6; a: keep 1 -> 0.9, F1 1; b: keep 2 -> 0.6, F1 1
    assert out == {"threshold": 0.7, "f1": 0.6667,
                   "per_class": {"a": {"threshold": 0.9, "f1": 1.0},
                                 "b": {"threshold": 0.6, "f1": 1.0}}}
    f1 = operating_thresholds(c, ["a", "b"], rule="f1")
    # global F1 by falling score with 3 truths: 2/4, 2/5, 4/6, 6/7 -> 0.6
    assert f1["threshold"] == 0.6 and f1["f1"] == round(6 / 7, 4)
    with pytest.raises(DetectorError, match="calibration.operating=median"):
        operating_thresholds(c, ["a", "b"], rule="median")


def test_cross_fitting_uses_the_other_half_of_the_images():
    c = MatchedCandidates(1)
    # image 1 (fold 1): scores 0.1..0.4, correct 0, 0, 1, 1 -> map y 0.125, 0.125, 0.875, 0.875
    c.add(1, np.array([0.1, 0.2, 0.3, 0.4]), np.zeros(4, int), np.array([0, 0, 1, 1]),
          np.zeros(2, int), np.ones(2, bool))
    # image 0 (fold 0): 0.15 wrong, 0.35 right -> map y 0.25, 0.75 at x 0.15, 0.35
    c.add(0, np.array([0.15, 0.35]), np.zeros(2, int), np.array([0, 1]), np.zeros(1, int),
          np.ones(1, bool))
    probs = cross_fitted(c, 1, min_samples=2)
    assert probs.tolist() == pytest.approx([0.25, 0.375, 0.625, 0.75, 0.125, 0.875])
    assert cross_fitted(c, 1, min_samples=50).tolist() == c.scores.tolist()
    report = ece_report(c, ["a"], min_samples=2)
    assert report["per_class"]["a"]["candidates"] == 6
    # before: raw scores 0.1, 0.2, 0.3, 0.4, 0.15, 0.35 vs 0, 0, 1, 1, 0, 1 in bins 1..4
    # bin 1: 0.1, 0.15 (0, 0) -> 0.125 * 2; bin 2: 0.2 (0) -> 0.2; bin 3: 0.3, 0.35 (1, 1)
    # -> 0.675 * 2; bin 4: 0.4 (1) -> 0.6: total 2.4 / 6
    assert report["ece_before"] == 0.4
    assert report["per_class"]["a"]["ece_before"] == report["ece_before"]
    assert report["ece_after"] < report["ece_before"]


def test_fit_maps_and_calibrate_collect_everything():
    c = cands_two_classes()
    names = ["freight_car", "locomotive"]
    assert fit_maps(c, names, min_samples=20) == {"freight_car": {"method": "identity"},
                                                  "locomotive": {"method": "identity"}}
    out = calibrate(c, names, min_samples=20)
    assert out["n_candidates"] == 6 and out["n_truth"] == 11
    assert out["n_truth_per_class"] == {"freight_car": 7, "locomotive": 4}
    assert out["recall_counts"] == {"freight_car": [5, 7], "locomotive": [1, 4]}
    assert out["operating"]["threshold"] == 1.0
    assert calibrate(c, names, rule="f1")["operating"]["f1"] == round(2 * 6 / 17, 4)
