"""Is a date's wagon total above (or below) every date of its baseline? Pure functions.

Each date's total is uncertain: inference gives a point count, an expected value and a 95%
interval. We turn every date's (expected, ci95) into a distribution over whole counts — a
normal split at the expected value, each half scaled so that its 2.5% tail falls at the
interval's end, cut at zero — and compute exactly (by summing over counts)

    P(above) = P(X_new > max_i X_i) = sum_k P(X_new = k) * prod_i P(X_i <= k - 1)

the probability that the new date's true total exceeds the true total of every baseline
date, with the dates' errors taken as independent (``P(below)`` likewise). Wide intervals
on either side lower the probability, so an ordinary date whose interval overlaps the
baseline's busiest dates is not flagged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

import numpy as np

_Z95 = 1.959964
_MIN_SD = 0.35  # an interval [k, k] still puts >= 95% on k, and a little beside it


@dataclass(frozen=True)
class Observation:
    """One date's wagon total: the point count, its expected value and 95% interval."""

    day: date
    count: int
    expected: float
    ci95: tuple[int, int]


@dataclass(frozen=True)
class BaselineSettings:
    """Which dates form the baseline of a date, and when to flag.

    Attributes:
        mode: ``rolling`` (the comparable dates in the ``years`` before each date) or
            ``fixed`` (the comparable dates in [start, end], the date itself left out).
        years: rolling look-back.
        start, end: fixed window (None: open).
        min_dates: fewer baseline dates than this and a date is not compared.
        exclude_flagged: rolling: a flagged date does not join later baselines.
        p_flag: flag when P(above) (or P(below)) reaches this.
        direction: ``up``, ``down`` or ``both``.
    """

    mode: str = "rolling"
    years: float = 5.0
    start: date | None = None
    end: date | None = None
    min_dates: int = 5
    exclude_flagged: bool = True
    p_flag: float = 0.99
    direction: str = "up"


@dataclass
class Assessment:
    """The verdict on one date."""

    status: str  # flagged | ok | no history | partial
    reason: str
    p_above: float | None = None
    p_below: float | None = None
    baseline: list[int] = field(default_factory=list)  # indices of the baseline dates


def count_pmf(expected: float, ci95: Sequence[float], support: int) -> np.ndarray:
    """Probabilities of totals 0..support-1 for a date with this expected value and interval."""
    lo, hi = float(ci95[0]), float(ci95[1])
    mu = float(np.clip(expected, lo, hi))
    sd_lo = max((mu - lo) / _Z95, _MIN_SD)
    sd_hi = max((hi - mu) / _Z95, _MIN_SD)
    k = np.arange(support, dtype=float)
    z = np.where(k < mu, (k - mu) / sd_lo, (k - mu) / sd_hi)
    weights = np.exp(-0.5 * z * z)
    return weights / weights.sum()


def _support(observations: Sequence[Observation]) -> int:
    top = max((max(o.ci95[1], o.expected) for o in observations), default=0.0)
    return int(top * 1.5) + 50  # far enough that the tails beyond it are negligible


def p_above_all(new: Observation, baseline: Sequence[Observation]) -> float:
    """P(new date's true total > every baseline date's true total)."""
    if not baseline:
        return float("nan")
    n = _support([new, *baseline])
    below = np.ones(n)  # below[k] = prod_i P(X_i <= k - 1)
    for obs in baseline:
        cdf = np.cumsum(count_pmf(obs.expected, obs.ci95, n))
        below *= np.concatenate([[0.0], cdf[:-1]])
    return float(np.clip(np.dot(count_pmf(new.expected, new.ci95, n), below), 0.0, 1.0))


def p_below_all(new: Observation, baseline: Sequence[Observation]) -> float:
    """P(new date's true total < every baseline date's true total)."""
    if not baseline:
        return float("nan")
    n = _support([new, *baseline])
    above = np.ones(n)  # above[k] = prod_i P(X_i >= k + 1)
    for obs in baseline:
        above *= 1.0 - np.cumsum(count_pmf(obs.expected, obs.ci95, n))
    return float(np.clip(np.dot(count_pmf(new.expected, new.ci95, n), above), 0.0, 1.0))


def fmt_p(p: float) -> str:
    """``> 0.999``, ``< 0.001`` or ``= 0.870``."""
    if p > 0.999:
        return "> 0.999"
    if p < 0.001:
        return "< 0.001"
    return f"= {p:.3f}"


def describe(obs: Observation) -> str:
    """``73 (95% 66–81)``."""
    return f"{obs.count} (95% {obs.ci95[0]}–{obs.ci95[1]})"


def _window_members(i: int, days: Sequence[date], usable: Sequence[bool],
                    settings: BaselineSettings) -> list[int]:
    if settings.mode == "fixed":
        return [j for j, d in enumerate(days) if j != i and usable[j]
                and (settings.start is None or d >= settings.start)
                and (settings.end is None or d <= settings.end)]
    since = days[i] - timedelta(days=round(365.25 * settings.years))
    return [j for j in range(i) if usable[j] and since <= days[j] < days[i]]


def _reason(obs: Observation, base: list[Observation], p: float, up: bool) -> str:
    since = min(b.day for b in base)
    level = (f"at most {max(b.count for b in base)}" if up
             else f"at least {min(b.count for b in base)}")
    word = "above" if up else "below"
    return (f"{describe(obs)} vs {level} in {len(base)} dates since {since:%Y-%m-%d}: "
            f"P({word} all) {fmt_p(p)}")


def assess(observations: Sequence[Observation | None], comparable: Sequence[bool],
           settings: BaselineSettings, not_compared: Sequence[str] | None = None
           ) -> list[Assessment]:
    """Verdicts for a date-sorted series.

    Args:
        observations: one per date, sorted by date; None for a date without counts.
        comparable: whether a date may be compared and join baselines (e.g. it imaged
            enough of the AOI).
        settings: baseline window and flag rule.
        not_compared: the reason shown for a date that is not comparable.

    Returns:
        One :class:`Assessment` per date.
    """
    days = [o.day if o is not None else date.min for o in observations]
    usable = [bool(c) and o is not None for c, o in zip(comparable, observations, strict=True)]
    out: list[Assessment] = []
    for i, obs in enumerate(observations):
        if obs is None or not usable[i]:
            why = (not_compared[i] if not_compared and not_compared[i] else "not compared")
            out.append(Assessment("partial", why))
            continue
        members = _window_members(i, days, usable, settings)
        if settings.mode == "rolling" and settings.exclude_flagged:
            members = [j for j in members if out[j].status != "flagged"]
        if len(members) < settings.min_dates:
            out.append(Assessment(
                "no history", f"{describe(obs)}; {len(members)} baseline date(s), "
                f"{settings.min_dates} needed to compare", baseline=members))
            continue
        base = [observations[j] for j in members]
        p_up, p_down = p_above_all(obs, base), p_below_all(obs, base)
        up = settings.direction in ("up", "both") and p_up >= settings.p_flag
        down = settings.direction in ("down", "both") and p_down >= settings.p_flag
        show_up = up or not down and (settings.direction != "down")
        reason = _reason(obs, base, p_up if show_up else p_down, show_up)
        out.append(Assessment("flagged" if up or down else "ok", reason, p_up, p_down, members))
    return out
