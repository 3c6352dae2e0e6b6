"""Which adaptation candidate to ship: the best by held-out wagon error, never worse than base.

Every candidate is scored on the same cross-fitted folds (``crossfit.headline`` rows). The
error is the wagon MAPE in percent (the wagon MAE where no scene has wagons); candidates
within ``tie`` (percentage points) of the best error are told apart by 95% coverage, then
by simplicity (the base first, the fine-tune last), so a fine-tune must beat the base by
more than noise to be shipped.
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


def choose(rows: Mapping[str, Mapping[str, Any]], tie: float = 1.0,
           force: str | None = None) -> Choice:
    """Pick the candidate to ship from ``rows`` (name -> headline; must hold :data:`BASE`).

    Args:
        rows: held-out headline rows per candidate (names of :data:`ORDER`).
        tie: errors closer than this (MAPE percentage points) count as equal.
        force: a candidate to ship whatever the table says (marked not recommended when it is
            worse than the base).

    Returns:
        The :class:`Choice`; ``best`` is never worse than the base (the base is a candidate).
    """
    names = [n for n in ORDER if n in rows] + [n for n in rows if n not in ORDER]
    best = names[0]
    for name in names[1:]:
        if better(rows[name], rows[best], tie):
            best = name
    shipped = force if force in rows else best
    worse = better(rows[BASE], rows[shipped], tie) if shipped != BASE else False
    figures = ", ".join(f"{n} {_fmt(rows[n])}" for n in names)
    if shipped == best:
        why = ("no candidate beat the base by more than the tie margin" if best == BASE
               else f"lowest held-out wagon error (coverage breaks ties within {tie:g} "
                    "MAPE points)")
        reason = f"shipped {best}: {why}; held-out {figures}"
    else:
        verdict = ("; NOT RECOMMENDED: worse than the base on the held-out folds" if worse
                   else "")
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
