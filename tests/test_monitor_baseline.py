"""Baseline and flag logic as pure functions on planted count series."""

from datetime import date, timedelta

import numpy as np
import pytest

from detector.monitor.baseline import (
    BaselineSettings,
    Observation,
    assess,
    count_pmf,
    p_above_all,
    p_below_all,
)

START = date(2019, 3, 2)


def obs(day, count, lo, hi, expected=None):
    return Observation(day, count, float(count if expected is None else expected), (lo, hi))


def ordinary_series(n=14, seed=0):
    """Light traffic (5–22 wagons) with intervals as wide as a modest model gives."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(5, 21, n)
    counts[3] = 22  # the busiest ordinary date
    return [obs(START + timedelta(days=120 * i), int(c), max(0, int(c * 0.6) - 3),
                int(c * 1.4) + 4) for i, c in enumerate(counts)]


def test_count_pmf_matches_its_interval():
    pmf = count_pmf(40.0, (30, 56), 200)
    cdf = np.cumsum(pmf)
    assert pmf.sum() == pytest.approx(1.0)
    assert cdf[29] == pytest.approx(0.025, abs=0.01)  # P(X < 30)
    assert 1 - cdf[56] == pytest.approx(0.025, abs=0.01)  # P(X > 56)
    assert count_pmf(0.3, (0, 0), 50)[0] > 0.95  # an interval [0, 0] keeps 95% at zero


def test_identical_dates_split_evenly_and_the_three_cases_sum_to_one():
    a = obs(START, 20, 12, 30)
    b = obs(START + timedelta(days=9), 20, 12, 30)
    up, down = p_above_all(a, [b]), p_below_all(a, [b])
    assert up == pytest.approx(down, abs=1e-9)
    tie = float(np.dot(count_pmf(20, (12, 30), 100), count_pmf(20, (12, 30), 100)))
    assert up + down + tie == pytest.approx(1.0, abs=1e-6)


def test_wider_intervals_lower_the_probability():
    base = ordinary_series()
    narrow = p_above_all(obs(date(2024, 1, 1), 40, 35, 45), base)
    wide = p_above_all(obs(date(2024, 1, 1), 40, 10, 70), base)
    assert wide < narrow
    # The baseline's own intervals count too, not only its point counts.
    tight_base = [obs(o.day, o.count, o.count - 1, o.count + 1) for o in base]
    assert p_above_all(obs(date(2024, 1, 1), 30, 24, 36), tight_base) > \
        p_above_all(obs(date(2024, 1, 1), 30, 24, 36), base)


def test_surge_is_flagged_with_a_plain_reason():
    series = [*ordinary_series(), obs(date(2023, 10, 6), 73, 66, 81)]
    verdicts = assess(series, [True] * len(series), BaselineSettings())
    last = verdicts[-1]
    assert last.status == "flagged" and last.p_above > 0.999
    assert last.reason == ("73 (95% 66–81) vs at most 22 in 14 dates since 2019-03-02: "
                           "P(above all) > 0.999")
    assert [v.status for v in verdicts[:5]] == ["no history"] * 5
    assert all(v.status == "ok" for v in verdicts[5:-1])


@pytest.mark.parametrize("seed", range(5))
def test_ordinary_variation_within_the_intervals_is_not_flagged(seed):
    series = [*ordinary_series(seed=seed), obs(date(2023, 10, 6), 26, 16, 40)]
    verdicts = assess(series, [True] * len(series), BaselineSettings(direction="both"))
    assert not any(v.status == "flagged" for v in verdicts)
    assert verdicts[-1].p_above < 0.9


def test_a_two_date_surge_stays_flagged_while_flagged_dates_leave_the_baseline():
    series = [*ordinary_series(), obs(date(2023, 9, 29), 70, 60, 82),
              obs(date(2023, 10, 6), 66, 56, 78)]
    verdicts = assess(series, [True] * len(series), BaselineSettings())
    assert [v.status for v in verdicts[-2:]] == ["flagged", "flagged"]
    kept = assess(series, [True] * len(series), BaselineSettings(exclude_flagged=False))
    assert kept[-1].status == "ok"  # the first surge date raised the bar


def test_partial_dates_are_not_compared_nor_in_baselines():
    series = ordinary_series(8)
    series[6] = obs(series[6].day, 90, 80, 100)  # e.g. counts from a sliver of the AOI
    comparable = [i != 6 for i in range(8)]
    why = [f"imaged 30% (date {i})" for i in range(8)]
    verdicts = assess(series, comparable, BaselineSettings(), why)
    assert verdicts[6].status == "partial" and verdicts[6].reason == "imaged 30% (date 6)"
    assert 6 not in verdicts[7].baseline and verdicts[7].status == "ok"


def test_rolling_look_back_and_fixed_window():
    series = [obs(START + timedelta(days=365 * i), 10, 6, 15) for i in range(8)]
    rolling = assess(series, [True] * 8, BaselineSettings(years=3, min_dates=2))
    assert rolling[7].baseline == [4, 5, 6]
    window = BaselineSettings(mode="fixed", start=START + timedelta(days=365),
                              end=START + timedelta(days=365 * 4), min_dates=2)
    fixed = assess(series, [True] * 8, window)
    assert fixed[7].baseline == [1, 2, 3, 4]
    assert fixed[2].baseline == [1, 3, 4]  # a date inside the window is left out of its own
    drop = [*series, obs(START + timedelta(days=365 * 9), 0, 0, 1)]
    down = assess(drop, [True] * 9, BaselineSettings(min_dates=2, direction="down"))
    assert down[-1].status == "flagged" and "at least 10" in down[-1].reason
