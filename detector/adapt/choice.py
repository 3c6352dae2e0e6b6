"""Which adaptation candidate to ship: the best by held-out wagon error, never worse than base.

Every candidate is scored on the same cross-fitted folds (``crossfit.headline`` rows). The
error is the wagon MAPE in percent (the wagon MAE where no scene has wagons); candidates
within ``tie`` (percentage points) of the best error are told apart by 95% coverage, then
by simplicity (the base first, the fine-tune last), so a fine-tune must beat the base by
more than noise to be shipped. A candidate whose held-out 95% coverage is below the base's
is not eligible whatever its error: scripts/bench_adapt.py saw a recalibration from three
desert scenes win on the folds (MAPE 7.0% vs 8.7%, coverage 67% vs 100%) and then count
other desert scenes at 24% MAPE and 50% coverage, where the base had 4.2% and 100%.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# In order of simplicity: the first of equally good candidates is shipped.
BASE = "base"
RECALIBRATED = "base recalibrated"
FINETUNED = "fine-tuned recalibrated"
ORDER = (BASE, RECALIBRATED, FINETUNED)


@dataclass(frozen=True)
class Choice:
    """The candidate to ship, whether it is recommended, and the one-line reason."""

    shipped: str
    best: str
    recommended: bool
    reason: str


def error(row: Mapping[str, Any]) -> float:
    """Held-out wagon error of a headline row (MAPE, else MAE; inf when unmeasured)."""
    for key in ("wagon_mape", "wagon_mae"):
        if row.get(key) is not None:
            return float(row[key])
    return math.inf


def _coverage(row: Mapping[str, Any]) -> float:
    value = row.get("coverage")
    return -1.0 if value is None else float(value)


def better(a: Mapping[str, Any], b: Mapping[str, Any], tie: float) -> bool:
    """Whether row ``a`` is strictly better than row ``b`` (error, then coverage)."""
    ea, eb = error(a), error(b)
    if math.isinf(ea) or math.isinf(eb):
        return not math.isinf(ea) and math.isinf(eb)
    if abs(ea - eb) > tie:
        return ea < eb
    return _coverage(a) > _coverage(b)


def less_covered(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether row ``a``'s held-out 95% coverage is below row ``b``'s."""
    return _coverage(a) < _coverage(b)


def choose(rows: Mapping[str, Mapping[str, Any]], tie: float = 1.0,
           force: str | None = None) -> Choice:
    """Pick the candidate to ship from ``rows`` (name -> headline; must hold :data:`BASE`).

    Args:
        rows: held-out headline rows per candidate (names of :data:`ORDER`).
        tie: errors closer than this (MAPE percentage points) count as equal.
        force: a candidate to ship whatever the table says (marked not recommended when it is
            worse than the base: more error, or less coverage).

    Returns:
        The :class:`Choice`; ``best`` is never worse than the base (the base is a candidate,
        and a candidate covering the truth less often than the base is not eligible).
    """
    names = [n for n in ORDER if n in rows] + [n for n in rows if n not in ORDER]
    eligible = [n for n in names if n == BASE or not less_covered(rows[n], rows[BASE])]
    best = BASE
    for name in eligible:
        if better(rows[name], rows[best], tie):
            best = name
    shipped = force if force in rows else best
    worse = shipped != BASE and (better(rows[BASE], rows[shipped], tie)
                                 or less_covered(rows[shipped], rows[BASE]))
    figures = ", ".join(f"{n} {_fmt(rows[n])}" for n in names)
    if shipped == best:
        dropped = [n for n in names if n not in eligible and better(rows[n], rows[best], tie)]
        why = ("no candidate beat the base by more than the tie margin" if best == BASE
               else f"lowest held-out wagon error (coverage breaks ties within {tie:g} "
                    "MAPE points)")
        if dropped:
            why += (f"; {', '.join(dropped)} erred less but its intervals held the truth "
                    "less often than the base's")
        reason = f"shipped {best}: {why}; held-out {figures}"
    else:
        verdict = ("; NOT RECOMMENDED: worse than the base on the held-out folds (error or "
                   "coverage)" if worse else "")
        reason = (f"shipped {shipped} as forced (force=true){verdict}; best would be {best}; "
                  f"held-out {figures}")
    return Choice(shipped, best, not worse, reason)


def _fmt(row: Mapping[str, Any]) -> str:
    e = error(row)
    cov = row.get("coverage")
    err = "n/a" if math.isinf(e) else (f"MAPE {e:.1f}%" if row.get("wagon_mape") is not None
                                       else f"MAE {e:.2f}")
    return f"({err}, coverage {'n/a' if cov is None else f'{100 * cov:.0f}%'})"


def format_candidates(rows: Mapping[str, Mapping[str, Any]], shipped: str, base_name: str
                      ) -> str:
    """The before/after table (Markdown): every candidate on the held-out folds."""
    cols = [("wagon_mape", "wagon MAPE %"), ("wagon_bias", "bias"), ("coverage", "95% coverage"),
            ("width", "interval width"), ("covered_f1", "covered_car F1"), ("f1", "F1 (all)"),
            ("ece", "ECE")]

    def cell(key: str, v: Any) -> str:
        if v is None:
            return "–"
        if key == "wagon_mape":
            return f"{v:.1f}"
        return f"{v:.3f}" if isinstance(v, float) and abs(v) < 10 else (
            f"{v:.1f}" if isinstance(v, float) else str(v))

    lines = ["| model | " + " | ".join(c[1] for c in cols) + " |",
             "|---|" + "---|" * len(cols)]
    for name in [n for n in ORDER if n in rows] + [n for n in rows if n not in ORDER]:
        label = f"{name} ({base_name})" if name == BASE else name
        if name == shipped:
            label = f"**{label}** (shipped)"
        lines.append(f"| {label} | " + " | ".join(cell(k, rows[name].get(k)) for k, _ in cols)
                     + " |")
    return "\n".join(lines)
