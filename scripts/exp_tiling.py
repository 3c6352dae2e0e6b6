"""Experiment 2: tile overlap sweep and seam merge method: seam duplicates and count error.

Merge methods (detector.infer tiles a scene; a car near a seam is seen by several tiles):
  ownership_nms  a detection belongs to the tile whose core holds its centre, then a
                 cross-tile rotated suppression for what remains (the default)
  ownership      ownership only
  plain_nms      no ownership: every tile keeps everything, then cross-tile rotated NMS
                 at IoU 0.5 (what SAHI-style slicing does)
  none           no ownership, no suppression: plain concatenation (the failure to avoid)

    python scripts/exp_tiling.py [--weights W.pt] [--overlaps 0 8 16 24 40]
        [--merges ownership_nms ownership plain_nms none] [--scenes 4] [--size 2000]

Writes OUT/tiling.{json,md,png} and one evaluation folder per condition.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from detector.atomic import atomic_path
from detector.errors import guarded
from detector.evaluate.experiments import (
    evaluate_condition,
    format_table,
    headline,
    make_scenes,
    save_results,
    training_scene_settings,
)

# A core margin larger than any tile switches ownership off: every tile keeps everything.
NO_OWNERSHIP = 1e6
MERGES: dict[str, dict[str, Any]] = {
    "ownership_nms": {"merge.method": "ownership_nms"},
    "ownership": {"merge.method": "ownership"},
    "plain_nms": {"merge.method": "ownership_nms", "merge.metric": "iou",
                  "merge.threshold": 0.5, "tiling.core_margin_m": NO_OWNERSHIP},
    "none": {"merge.method": "ownership", "tiling.core_margin_m": NO_OWNERSHIP},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=None, help="bundle (default: the bundled model)")
    parser.add_argument("--overlaps", type=float, nargs="+", default=[0, 8, 16, 24, 40],
                        help="tile overlaps in metres")
    parser.add_argument("--merges", nargs="+", default=list(MERGES), choices=list(MERGES))
    parser.add_argument("--scenes", type=int, default=4)
    parser.add_argument("--size", type=int, default=2000, help="scene side in pixels")
    parser.add_argument("--seed", type=int, default=7200)
    parser.add_argument("--out", type=Path, default=Path("outputs/exp_tiling"))
    return parser.parse_args(argv)


def line_plot(path: Path, rows: list[dict], merges: list[str]) -> None:
    """Seam duplicates and wagon MAE against overlap, one line per merge method."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.6))
    FigureCanvasAgg(fig)
    for i, (metric, title) in enumerate((("duplicates", "seam duplicates (all scenes)"),
                                         ("wagon_mae", "wagon count MAE per scene"))):
        ax = fig.add_subplot(1, 2, i + 1)
        for merge in merges:
            mine = [r for r in rows if r["merge"] == merge]
            ax.plot([r["overlap_m"] for r in mine],
                    [np.nan if r[metric] is None else r[metric] for r in mine], "o-",
                    label=merge)
        ax.set_xlabel("tile overlap (m)")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    scenes = make_scenes(args.out / "scenes", args.scenes, args.seed,
                         {**training_scene_settings(), "size": [args.size, args.size]})
    rows = []
    for merge in args.merges:
        for overlap in args.overlaps:
            infer = {"tiling.overlap_m": overlap, **MERGES[merge]}
            report = evaluate_condition(scenes, args.weights,
                                        args.out / "runs" / f"{merge}_{overlap:g}m", infer)
            rows.append({"merge": merge, "overlap_m": overlap, **headline(report)})
    save_results(args.out, "tiling", rows,
                 {"experiment": "tiling", "args": vars(args), "merges": MERGES})
    line_plot(args.out / "tiling.png", rows, args.merges)
    print(format_table(rows, ["merge", "overlap_m", "duplicates", "wagon_mae", "wagon_bias",
                              "wagon_mape", "coverage", "map50"]))
    return rows


if __name__ == "__main__":
    guarded(main)
