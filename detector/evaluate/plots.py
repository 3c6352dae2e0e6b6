"""Evaluation plots from the report dict: counts vs truth, reliability, PR curves.

Figures are built with matplotlib's object API on the Agg canvas, so importing this module
never changes the pyplot backend (a notebook keeps its inline display).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from detector.atomic import atomic_path
from detector.quicklook import class_color


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    return path


def _colour(cls: str) -> tuple[float, float, float]:
    r, g, b = class_color(cls)
    if (r, g, b) == (255, 255, 255):
        return (0.2, 0.2, 0.2)
    return (r / 255 * 0.85, g / 255 * 0.85, b / 255 * 0.85)


def plot_counts(report: dict[str, Any], path: Path) -> Path:
    """Predicted count with its 95% interval vs the true count, per scene: wagons + classes."""
    # Classes never present nor predicted in any scene would only add empty panels.
    groups = ["wagons"] + [c for c in report["classes"]
                           if any(r["classes"][c]["truth"] or r["classes"][c]["count"]
                                  for r in report["scenes"])]
    fig = Figure(figsize=(3.2 * len(groups), 3.4))
    for i, group in enumerate(groups):
        ax = fig.add_subplot(1, len(groups), i + 1)
        rows = [r["wagons"] if group == "wagons" else r["classes"][group]
                for r in report["scenes"]]
        truth = np.array([r["truth"] for r in rows], float)
        count = np.array([r["count"] for r in rows], float)
        lo = np.array([r["ci95"][0] for r in rows], float)
        hi = np.array([r["ci95"][1] for r in rows], float)
        covered = np.array([r["covered"] for r in rows], bool)
        top = max(1.0, *(hi.tolist() or [0]), *(truth.tolist() or [0])) * 1.08
        ax.plot([0, top], [0, top], color="0.6", lw=0.8, zorder=0)
        for mask, colour, label in ((covered, "tab:blue", "interval holds truth"),
                                    (~covered, "tab:red", "interval misses truth")):
            if mask.any():
                # The count need not lie inside its interval (the interval comes from the
                # calibrated probabilities), so draw the two separately.
                ax.vlines(truth[mask], lo[mask], hi[mask], color=colour, lw=1.2, alpha=0.7)
                ax.plot(truth[mask], count[mask], "o", ms=3.5, color=colour, label=label)
        ax.set_xlim(0, top)
        ax.set_ylim(0, top)
        ax.set_title(group, fontsize=10)
        ax.set_xlabel("true count")
        if i == 0:
            ax.set_ylabel("predicted count (95% interval)")
            ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return _save(fig, path)


def plot_reliability(report: dict[str, Any], path: Path) -> Path:
    """Reliability diagram of the calibrated probabilities of all candidates."""
    cal = report["calibration"]
    bins = [b for b in cal["bins"] if b["n"]]
    fig = Figure(figsize=(4.2, 4.2))
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls="--", label="perfect")
    if bins:
        centres = [(b["low"] + b["high"]) / 2 for b in bins]
        ax.bar(centres, [b["accuracy"] for b in bins], width=0.09, alpha=0.35,
               color="tab:blue", label="share correct")
        ax.plot([b["mean_p"] for b in bins], [b["accuracy"] for b in bins], "o-",
                color="tab:blue", ms=4)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("calibrated probability p")
    ax.set_ylabel("share of candidates matching a car")
    ax.set_title(f"Reliability (ECE {cal['ece']:.3f}, n={cal['n']})", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    return _save(fig, path)


def plot_pr_curves(report: dict[str, Any], path: Path) -> Path:
    """Precision-recall curves per class at the report's IoU, operating points marked."""
    det = report["detection"]
    fig = Figure(figsize=(4.8, 4.2))
    ax = fig.add_subplot(1, 1, 1)
    for cls, curve in det["pr_curves"].items():
        stats = det["classes"][cls]
        if not stats["n_truth"]:
            continue
        colour = _colour(cls)
        ap = stats["ap50"]
        precision = np.asarray(curve["precision"])
        end = int(np.flatnonzero(precision)[-1]) + 1 if precision.any() else 0
        ax.plot(curve["recall"][:end], precision[:end], color=colour, lw=1.5,
                label=f"{cls} (AP{round(det['iou'] * 100)} {ap:.2f})")
        if stats["precision"] is not None and stats["recall"] is not None:
            ax.plot(stats["recall"], stats["precision"], "o", color=colour, ms=6, mec="k")
    ax.set_xlim(0, 1.01)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title("PR curves (dot: operating threshold)", fontsize=10)
    ax.legend(fontsize=8, loc="lower left")
    return _save(fig, path)


def write_plots(report: dict[str, Any], out: str | Path) -> dict[str, str]:
    """Write the three plots into ``out``; returns {name: file name}."""
    out = Path(out)
    files = {"counts": "counts_vs_truth.png", "reliability": "reliability.png",
             "pr_curves": "pr_curves.png"}
    plot_counts(report, out / files["counts"])
    plot_reliability(report, out / files["reliability"])
    plot_pr_curves(report, out / files["pr_curves"])
    return files
