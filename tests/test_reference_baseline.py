"""Baseline probabilities against brute-force enumeration and values worked out by hand."""

from __future__ import annotations

import math
from datetime import date

import numpy as np
import pytest

from detector.monitor.baseline import (
    BaselineSettings,
    Observation,
    assess,
    count_pmf,
    describe,
    fmt_p,
    p_above_all,
    p_below_all,
)


def obs(k: int, count: int, expected: float, lo: int, hi: int) -> Observation:
    return Observation(date(2020, 1, 1 + k), count, expected, (lo, hi))


def test_count_pmf_is_a_split_normal_by_hand():
    # expected 10, interval [6, 18]: sd 4 / 1.959964 below, 8 / 1.959964 above
    pmf = count_pmf(10.0, (6, 18), 40)
    k = np.arange(40.0)
    sd = np.where(k < 10, 4 / 1.959964, 8 / 1.959964)
    w = np.exp(-0.5 * ((k - 10) / sd) ** 2)
    assert np.allclose(pmf, w / w.sum())
    assert pmf.argmax() == 10 and pmf[14] > pmf[6]
    # an expected value outside its interval is pulled inside; a point interval keeps
    # its floor sd of 0.35
    assert np.allclose(count_pmf(25.0, (6, 18), 40), count_pmf(18.0, (6, 18), 40))
    point = count_pmf(5.0, (5, 5), 12)
    w = np.exp(-0.5 * ((np.arange(12) - 5) / 0.35) ** 2)
    assert np.allclose(point, w / w.sum()) and point[5] > 0.95


def brute(new: Observation, base: list[Observation], above: bool) -> float:
    """Sum over every joint outcome of the (independent) dates' totals (three dates)."""
    n = 60
    p0, p1, p2 = (count_pmf(o.expected, o.ci95, n) for o in [new, *base])
    joint = p0[:, None, None] * p1[None, :, None] * p2[None, None, :]
    k0, k1, k2 = np.meshgrid(np.arange(n), np.arange(n), np.arange(n), indexing="ij")
    hit = (k0 > np.maximum(k1, k2)) if above else (k0 < np.minimum(k1, k2))
    return float(joint[hit].sum())


@pytest.mark.parametrize("new", [obs(9, 30, 30.0, 25, 36), obs(9, 22, 21.5, 18, 26),
                                 obs(9, 12, 12.0, 9, 16)])
def test_p_above_and_below_all_match_enumeration(new):
    base = [obs(0, 20, 20.0, 16, 25), obs(1, 23, 22.4, 18, 28)]
    assert p_above_all(new, base) == pytest.approx(brute(new, base, True), abs=1e-9)
    assert p_below_all(new, base) == pytest.approx(brute(new, base, False), abs=1e-9)


def test_empty_baseline_is_not_a_number_and_formats_by_hand():
    assert math.isnan(p_above_all(obs(0, 1, 1.0, 0, 2), []))
    assert math.isnan(p_below_all(obs(0, 1, 1.0, 0, 2), []))
    assert fmt_p(0.9995) == "> 0.999" and fmt_p(0.999) == "= 0.999"
    assert fmt_p(0.0005) == "< 0.001" and fmt_p(0.001) == "= 0.001"
    assert fmt_p(0.87) == "= 0.870"
    assert describe(obs(0, 73, 72.5, 66, 81)) == "73 (95% 66–81)"


def test_assess_counts_the_baseline_and_both_directions():
    quiet = [obs(k, 20, 20.0, 17, 23) for k in range(5)]
    low = obs(6, 5, 5.0, 3, 7)
    settings = BaselineSettings(min_dates=5, direction="both", p_flag=0.99)
    verdicts = assess([*quiet, low], [True] * 6, settings)
    assert [v.status for v in verdicts[:5]] == ["no history"] * 5
    assert verdicts[4].reason.endswith("4 baseline date(s), 5 needed to compare")
    last = verdicts[5]
    assert last.status == "flagged" and last.baseline == [0, 1, 2, 3, 4]
    assert last.p_below > 0.99 and last.p_above < 0.01
    assert last.reason == ("5 (95% 3–7) vs at least 20 in 5 dates since 2020-01-01: "
                           "P(below all) > 0.999")
    up_only = assess([*quiet, low], [True] * 6, BaselineSettings(min_dates=5))
    assert up_only[5].status == "ok" and "P(above all) < 0.001" in up_only[5].reason
    down_only = assess([*quiet, low], [True] * 6, BaselineSettings(min_dates=5,
                                                                   direction="down"))
    assert down_only[5].status == "flagged"
    # fewer comparable dates than min_dates: no history, whatever the count
    few = assess([*quiet, low], [True, True, False, True, True, True],
                 BaselineSettings(min_dates=5, direction="both"),
                 not_compared=["", "", "AOI 40% imaged", "", "", ""])
    assert few[2].status == "partial" and few[2].reason == "AOI 40% imaged"
    assert few[5].status == "no history" and few[5].baseline == [0, 1, 3, 4]
