"""Matching candidates to truth, and the calibration/threshold numbers the card carries."""

import numpy as np
import pytest

from detector import calibration
from detector.geometry import obb_corners
from detector.train.calibrate import (
    MatchedCandidates,
    calibrate,
    f1_threshold,
    match,
    read_truth,
)


def _boxes(specs):
    return np.stack([obb_corners(*s) for s in specs])


def test_match_is_greedy_by_score_and_class_aware():
    truth = _boxes([(20, 20, 28, 6, 0.3), (60, 60, 28, 6, 1.2)])
    pred = _boxes([(20, 20, 28, 6, 0.3), (21, 20, 28, 6, 0.3), (60, 60, 28, 6, 1.2),
                   (90, 90, 28, 6, 0.0)])
    scores = np.array([0.6, 0.9, 0.8, 0.7])
    pred_cls = np.array([0, 0, 1, 0])
    correct, matched = match(pred, scores, pred_cls, truth, np.array([0, 0]), 0.5)
    # the higher-scored near-duplicate takes the first truth; the exact one is a duplicate;
    # the right box with the wrong class does not match; the far box matches nothing.
    assert correct.tolist() == [False, True, False, False]
    assert matched.tolist() == [True, False]


def test_rotated_iou_decides_obb_matches():
    truth = _boxes([(50, 50, 28, 6, 0.0)])
    crossing = _boxes([(50, 50, 28, 6, np.pi / 2)])  # same centre, turned 90 degrees
    correct, _ = match(crossing, np.array([0.9]), np.array([0]), truth, np.array([0]), 0.5)
    assert not correct.any()


def test_read_truth_obb_and_detect_rows(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("2 0.1 0.1 0.3 0.1 0.3 0.2 0.1 0.2\n1 0.5 0.5 0.2 0.1\n")
    cls, polys = read_truth(path, 100, 200)
    assert cls.tolist() == [2, 1]
    assert polys[0].tolist() == [[10, 20], [30, 20], [30, 40], [10, 40]]
    assert polys[1].min(0).tolist() == pytest.approx([40, 90])


def _synthetic_candidates(n=4000, seed=0, n_classes=2):
    """Scores whose true probability of being correct is known: p = score**2."""
    rng = np.random.default_rng(seed)
    cands = MatchedCandidates(n_classes)
    scores = rng.uniform(0.05, 1.0, n)
    correct = rng.uniform(size=n) < scores ** 2
    classes = rng.integers(0, 2, n)
    for img in range(40):
        sel = slice(img * n // 40, (img + 1) * n // 40)
        truth_cls = np.array([0] * 60 + [1] * 60)
        matched = np.zeros(120, bool)
        for c in (0, 1):
            k = int((correct[sel] & (classes[sel] == c)).sum())
            matched[c * 60: c * 60 + k] = True
        cands.add(img, scores[sel], classes[sel], correct[sel], truth_cls, matched)
    return cands


def test_calibration_recovers_known_probabilities():
    cands = _synthetic_candidates()
    out = calibrate(cands, ["a", "b"], min_samples=20)
    grid = np.linspace(0.15, 0.95, 9)
    for name in ("a", "b"):
        assert out["calibration"][name]["method"] == "isotonic"
        p = calibration.apply(out["calibration"][name], grid)
        assert np.abs(p - grid ** 2).max() < 0.1
    # raw scores overstate P(correct); cross-fitted calibrated ones are close to honest
    assert out["ece"]["ece_before"] > 0.1
    assert out["ece"]["ece_after"] < 0.04


def test_threshold_recall_and_small_classes():
    cands = _synthetic_candidates(n_classes=3)  # class 2 has neither candidates nor truth
    out = calibrate(cands, ["a", "b", "rare"], min_samples=20)
    assert out["calibration"]["rare"] == {"method": "identity"}
    assert out["recall_at_candidate_conf"]["rare"] is None
    assert 0 < out["recall_at_candidate_conf"]["a"] <= 1
    assert 0.05 <= out["operating"]["threshold"] <= 1.0
    assert set(out["operating"]["per_class"]) == {"a", "b", "rare"}


def test_f1_threshold_picks_the_best_cut():
    scores = np.array([0.9, 0.8, 0.7, 0.3, 0.2])
    correct = np.array([True, True, True, False, False])
    threshold, f1 = f1_threshold(scores, correct, n_truth=3)
    assert threshold == pytest.approx(0.7) and f1 == pytest.approx(1.0)
    assert f1_threshold(np.zeros(0), np.zeros(0, bool), 5)[1] == 0.0


def test_count_threshold_keeps_as_many_as_there_are_objects():
    from detector.train.calibrate import count_threshold

    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    correct = np.array([1, 1, 0, 1, 0, 0], bool)
    threshold, f1 = count_threshold(scores, correct, n_truth=4)
    assert threshold == 0.6 and (scores >= threshold).sum() == 4
    assert f1 == pytest.approx(2 * 3 / 8)
    # Fewer candidates than objects: keep them all.
    assert count_threshold(scores[:2], correct[:2], n_truth=5)[0] == 0.8
