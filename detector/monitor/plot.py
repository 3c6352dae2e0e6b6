"""``monitor.png``: wagons and covered cars over time with intervals, baseline and flags."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.dates as mdates
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from detector.atomic import atomic_path
from detector.monitor.baseline import fmt_p
from detector.quicklook import class_color

_STYLE = {"ok": ("tab:blue", "o"), "flagged": ("tab:red", "D"),
          "no history": ("0.45", "o"), "partial": ("0.6", "s")}


def _series(entries: list[Any], key: str) -> tuple[np.ndarray, ...]:
    stats = [e.counts["wagons"] if key == "wagons"
             else e.counts.get("classes", {}).get(key, {}) for e in entries]
    count = np.array([s.get("count", np.nan) for s in stats], float)
    lo = np.array([(s.get("ci95") or [np.nan, np.nan])[0] for s in stats], float)
    hi = np.array([(s.get("ci95") or [np.nan, np.nan])[1] for s in stats], float)
    return count, lo, hi


def _baseline_band(result: Any) -> tuple[list[Any], np.ndarray, np.ndarray]:
    """Per compared date: the lowest and highest point count among its baseline dates."""
    days, low, high = [], [], []
    for e in result.series:
        if e.verdict.status in ("ok", "flagged") and e.verdict.baseline:
            counts = [result.series[j].counts["wagons"]["count"] for j in e.verdict.baseline]
            days.append(e.date.day)
            low.append(min(counts))
            high.append(max(counts))
    return days, np.array(low, float), np.array(high, float)


def plot_series(result: Any, path: Path, note: str | None = None) -> Path:
    """Two panels over time: wagons (with the baseline band and flags) and covered_car."""
    series = result.series
    days = [e.date.day for e in series]
    status = [e.verdict.status for e in series]
    fig = Figure(figsize=(9.5, 6.2))
    ax_w, ax_c = fig.add_subplot(2, 1, 1), fig.add_subplot(2, 1, 2)
    ax_c.sharex(ax_w)
    band_days, band_lo, band_hi = _baseline_band(result)
    if band_days:
        ax_w.fill_between(band_days, band_lo, band_hi, step="mid", color="tab:blue",
                          alpha=0.13, lw=0, label="baseline: lowest–highest count")
    covered_rgb = tuple(v / 255 * 0.8 for v in class_color("covered_car"))
    for ax, key, colour_of in ((ax_w, "wagons", None), (ax_c, "covered_car", covered_rgb)):
        count, lo, hi = _series(series, key)
        ax.plot(days, count, color="0.75", lw=0.8, zorder=1)
        for name, (colour, marker) in _STYLE.items():
            idx = [i for i, s in enumerate(status) if s == name]
            if not idx:
                continue
            c = colour_of or colour
            x = [days[i] for i in idx]
            ax.vlines(x, lo[idx], hi[idx], color=c, lw=2.2, alpha=0.45, zorder=2)
            face = "white" if name in ("partial", "no history") else c
            ax.plot(x, count[idx], marker, ms=6, color=c, mfc=face, zorder=3,
                    label=f"{name} (count, 95% interval)" if ax is ax_w else None)
        ax.set_ylim(0, max(1.0, float(np.nanmax(hi, initial=0.0))) * 1.12)
        ax.grid(alpha=0.3)
    flagged = [e for e in series if e.verdict.status == "flagged"]
    for k, e in enumerate(flagged):
        p = e.verdict.p_above if e.verdict.p_above is not None else float("nan")
        ax_w.annotate(f"{e.date.day}: P(above all) {fmt_p(p)}",
                      (e.date.day, e.counts["wagons"]["count"]),
                      xytext=(-14, 10 - 13 * (len(flagged) - 1 - k)),
                      textcoords="offset points", ha="right", va="center", fontsize=8,
                      color="tab:red", arrowprops={"arrowstyle": "-", "color": "tab:red",
                                                   "lw": 0.6})
        for ax in (ax_w, ax_c):
            ax.axvline(e.date.day, color="tab:red", lw=0.8, alpha=0.4, zorder=0)
    ax_w.set_ylabel("wagons in the AOI")
    ax_c.set_ylabel("covered_car (tarps)")
    ax_w.set_title(f"{result.label}: wagons in the AOI per date "
                   f"({sum(s == 'flagged' for s in status)} flagged)", fontsize=11)
    ax_w.legend(loc="upper left", fontsize=8, frameon=False)
    ax_c.xaxis.set_major_formatter(mdates.ConciseDateFormatter(ax_c.xaxis.get_major_locator()))
    model = result.model or {}
    foot = note or (f"model {Path(str(model.get('path', '?'))).name} "
                    f"(sha256 {str(model.get('sha256', '?'))[:12]}); "
                    "python -m detector.monitor")
    fig.text(0.01, 0.005, foot, fontsize=7, color="0.4")
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    return path
