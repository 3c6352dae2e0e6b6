"""The shift alarm's statistics against independent computations: the PPCA fit against an
eigen-decomposition of the covariance, the patch distance against an explicit Mahalanobis
distance under the fitted covariance, AUROC by hand."""

from __future__ import annotations

import numpy as np
import pytest

from detector.shift import (
    METHOD,
    NO_FEATURES,
    NO_REFERENCE,
    alarm_message,
    auroc,
    fit_gaussian,
    fit_reference,
    scene_score,
    shift_fields,
    tile_distances,
)


def correlated(rng: np.random.Generator, n: int, d: int = 6, shift: float = 0.0) -> np.ndarray:
    """n patches of d features with two strong directions and a constant column."""
    base = rng.normal(size=(n, 2)) * [3.0, 1.5]
    mix = np.array([[1, 0.5, 0, 0.2, -1, 0], [0, 1, 1, -0.5, 0.3, 0]], float)[:, :d]
    x = base @ mix + rng.normal(scale=0.3, size=(n, d)) + shift
    x[:, -1] = 7.0  # constant: its sd is floored
    return x


def test_ppca_fit_matches_the_eigen_decomposition_of_the_covariance():
    x = correlated(np.random.default_rng(0), 200)
    g = fit_gaussian(x, components=2)
    assert np.allclose(g["mean"], x.mean(axis=0))
    sd = x.std(axis=0)
    assert np.allclose(g["sd"][:-1], sd[:-1]) and g["sd"][-1] == 1e-3
    z = (x - x.mean(axis=0)) / g["sd"]
    eig, vec = np.linalg.eigh(np.cov(z.T))  # ddof 1, ascending
    eig, vec = eig[::-1], vec[:, ::-1]
    assert np.allclose(g["variances"], eig[:2])
    assert g["residual_var"] == pytest.approx(eig[2:].sum() / (6 - 2))
    # components are the top eigenvectors (up to sign)
    assert np.allclose(np.abs(g["components"] @ vec[:, :2]), np.eye(2), atol=1e-6)
    # k is capped by the data: one component from two patches; at least one always
    assert fit_gaussian(x[:2], components=4)["components"].shape == (1, 6)
    assert fit_gaussian(x, components=0)["components"].shape == (1, 6)
    assert fit_gaussian(x, components=9)["components"].shape == (5, 6)


def test_patch_distance_is_the_mahalanobis_distance_under_the_fitted_covariance():
    rng = np.random.default_rng(1)
    x = correlated(rng, 300)
    g = fit_gaussian(x, components=2)
    w = g["components"].T  # (d, k)
    cov = w @ np.diag(g["variances"]) @ w.T + g["residual_var"] * (np.eye(6) - w @ w.T)
    new = correlated(rng, 5, shift=0.5)
    z = (new - g["mean"]) / g["sd"]
    expected = np.sqrt(np.einsum("ij,ij->i", z, np.linalg.solve(cov, z.T).T) / 6)
    assert np.allclose(tile_distances(g, new), expected)
    assert scene_score(g, new) == pytest.approx(float(np.median(expected)))
    # reference-like patches sit near 1, shifted ones well above
    assert 0.7 < scene_score(g, correlated(rng, 400)) < 1.3
    assert scene_score(g, correlated(rng, 400, shift=3.0)) > 3


def test_fit_reference_scores_each_scene_against_the_others():
    rng = np.random.default_rng(2)
    scenes = [correlated(rng, 60) for _ in range(3)] + [None, np.zeros((0, 6))]
    ref = fit_reference(scenes, layer=2, components=2, margin=1.5, max_patches=50,
                        names=["a", "b", "c", "d", "e"])
    assert ref["method"] == METHOD and ref["layer"] == 2 and ref["margin"] == 1.5
    assert ref["reference"]["scenes"] == 3 and ref["reference"]["patches"] == 150
    assert ref["reference"]["names"] == ["a", "b", "c", "d", "e"]
    loo = ref["reference"]["loo_scores"]
    assert len(loo) == 3 and all(0.5 < s < 2 for s in loo)
    assert ref["threshold"] == pytest.approx(1.5 * max(loo), abs=1e-3)
    assert len(ref["mean"]) == 6 and np.array(ref["components"]).shape == (2, 6)
    # the stored reference scores like the fitted Gaussian (rounded to 5 digits)
    new = correlated(rng, 40, shift=2.0)
    g = fit_gaussian(np.concatenate([s[np.sort(np.random.default_rng(k).choice(60, 50, False))]
                                     for k, s in enumerate(scenes[:3])]), 2)
    assert scene_score(ref, new) == pytest.approx(scene_score(g, new), rel=1e-3)
    assert ref["reference"]["in_sample_scores"] == [
        round(scene_score(g, s[np.sort(np.random.default_rng(k).choice(60, 50, False))]), 4)
        for k, s in enumerate(scenes[:3])]
    assert "names" not in fit_reference(scenes[:2], layer=0)["reference"]
    assert fit_reference(scenes[:1], layer=2) is None
    assert fit_reference(scenes[:3], layer=None) is None


def test_shift_fields_and_alarm_by_threshold():
    rng = np.random.default_rng(3)
    ref = fit_reference([correlated(rng, 80) for _ in range(3)], layer=2, components=2)
    feats = correlated(rng, 50, shift=1.0)
    score = round(scene_score(ref, feats), 4)
    at = shift_fields({**ref, "threshold": score + 1e-4}, feats)
    assert at == {"shift": {"score": score, "alarm": False, "threshold": score + 1e-4}}
    below = shift_fields({**ref, "threshold": score - 1e-3}, feats)
    assert below["shift"]["alarm"] is True
    assert shift_fields(None, feats) == {"shift": None, "shift_note": NO_REFERENCE}
    assert shift_fields({}, feats) == {"shift": None, "shift_note": NO_REFERENCE}
    assert shift_fields(ref, None) == {"shift": None, "shift_note": NO_FEATURES}
    assert shift_fields(ref, np.zeros((0, 6))) == {"shift": None, "shift_note": NO_FEATURES}
    line = alarm_message("yard.tif", {"score": 3.14159, "threshold": 2.0})
    assert line.startswith("yard.tif: SHIFT score 3.14 > 2.00: ")
    assert "python -m detector.adapt" in line and "\n" not in line


def test_auroc_by_hand():
    # positives 2 and 4 against negatives 1, 2, 3: 2 beats 1 and ties 2 (1.5), 4 beats all
    assert auroc([1, 2, 3], [2, 4]) == pytest.approx(4.5 / 6)
    assert auroc([1, 2], [3, 4]) == 1.0 and auroc([3, 4], [1, 2]) == 0.0
    assert auroc([1], [1]) == 0.5
    assert auroc([], [1]) is None and auroc([1], []) is None
