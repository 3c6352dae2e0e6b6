"""Experiment 3: resolution mismatch: scenes at 0.3, 0.5 and 0.8 m/px on the 0.5 m model,
with resampling to the model's resolution (what detector.infer does) and without.

"Without" feeds native pixels: inference is told the scene is at the model's m/px, so
windows are not resampled (tile overlap is scaled to keep the same ground overlap).
Scenes cover the same ground extent at every resolution.

    python scripts/exp_resolution.py [--weights W.pt] [--resolutions 0.3 0.5 0.8]
        [--scenes 3] [--extent-m 800]

Writes OUT/resolution.{json,md,png} and one evaluation folder per condition.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from detector.config import compose
from detector.errors import guarded
from detector.evaluate.api import model_card
from detector.evaluate.experiments import (
    bar_plot,
    evaluate_condition,
    format_table,
    headline,
    make_scenes,
    save_results,
    training_scene_settings,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=None, help="bundle (default: the bundled model)")
    parser.add_argument("--resolutions", type=float, nargs="+", default=[0.3, 0.5, 0.8])
    parser.add_argument("--scenes", type=int, default=3, help="scenes per resolution")
    parser.add_argument("--extent-m", type=float, default=800.0, help="scene side in metres")
    parser.add_argument("--seed", type=int, default=7300)
    parser.add_argument("--out", type=Path, default=Path("outputs/exp_resolution"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    _, card = model_card(args.weights)
    model_mpp = card.m_per_px
    overlap_m = float(compose("infer").tiling.overlap_m)
    rows = []
    in_style = training_scene_settings()
    for mpp in args.resolutions:
        side = round(args.extent_m / mpp)
        scenes = make_scenes(args.out / "scenes" / f"{mpp:g}m", args.scenes, args.seed,
                             {**in_style, "m_per_px": mpp, "size": [side, side]})
        for mode in ("resampled", "native"):
            if mode == "native" and mpp == model_mpp:
                continue  # identical to resampled
            infer = {} if mode == "resampled" else {
                "m_per_px": model_mpp, "tiling.overlap_m": overlap_m * model_mpp / mpp}
            report = evaluate_condition(scenes, args.weights,
                                        args.out / "runs" / f"{mpp:g}m_{mode}", infer)
            rows.append({"m_per_px": mpp, "mode": mode, **headline(report),
                         "truth": report["counting"]["wagons"]["truth_total"]})
    save_results(args.out, "resolution", rows,
                 {"experiment": "resolution", "args": vars(args), "model_m_per_px": model_mpp})
    for row in rows:
        row["label"] = f"{row['m_per_px']:g} m {row['mode']}"
    bar_plot(args.out / "resolution.png", rows, "label", ["wagon_mape", "wagon_bias", "map50"],
             f"scene resolution vs a {model_mpp:g} m/px model")
    print(format_table(rows, ["m_per_px", "mode", "truth", "wagon_mae", "wagon_mape",
                              "wagon_bias", "coverage", "map50"]))
    return rows


if __name__ == "__main__":
    guarded(main)
