"""Experiment 4: held-out styles: scenes from seeds and style settings never used in
training (other tarp colours, haze, low sun, blur/noise, density): count error, interval
coverage and covered_car F1 per condition.

    python scripts/exp_heldout_style.py [--weights W.pt] [--conditions ...] [--scenes 4]
        [--size 1500]

Writes OUT/heldout_style.{json,md,png} and one evaluation folder per condition.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from detector.errors import guarded
from detector.evaluate.experiments import (
    bar_plot,
    evaluate_condition,
    format_table,
    headline,
    make_scenes,
    save_results,
    training_scene_settings,
)

# Settings replace conf/synth.yaml values (dicts are replaced, not merged), on top of the
# scene settings of the training experiment (conf/experiment/synthetic_default.yaml: seed
# 2024, its density, tarp share and distractors); "in_style" is those settings, new seeds.
CONDITIONS: dict[str, dict[str, Any]] = {
    "in_style": {},
    "tarp_colours": {  # tarps in colours the generator never used for training
        "style.tarp_colors": {"red": [150, 58, 48], "orange": [196, 120, 52],
                              "white": [212, 212, 206], "black": [32, 32, 34],
                              "tan": [182, 160, 120]},
        "covered_string_prob": 0.7,
    },
    "haze": {"style.haze": [0.35, 0.55]},
    "low_sun": {"style.sun_elevation_deg": [10, 22], "style.shadow_strength": [0.65, 0.8]},
    "blur_noise": {"style.blur_sigma_px": [1.2, 1.8], "style.noise_sigma": [5.0, 8.0],
                   "style.jpeg_quality": [35, 55], "style.jpeg_prob": 1.0},
    "very_dense": {"vehicles.min": 220, "vehicles.max": 320, "vehicles.empty_prob": 0.0},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=None, help="bundle (default: the bundled model)")
    parser.add_argument("--conditions", nargs="+", default=list(CONDITIONS),
                        choices=list(CONDITIONS))
    parser.add_argument("--scenes", type=int, default=4, help="scenes per condition")
    parser.add_argument("--size", type=int, default=1500, help="scene side in pixels")
    parser.add_argument("--seed", type=int, default=7400,
                        help="base seed; condition i uses seed + 100 * i")
    parser.add_argument("--out", type=Path, default=Path("outputs/exp_heldout_style"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    rows = []
    in_style = training_scene_settings()
    for name in args.conditions:
        seed = args.seed + 100 * list(CONDITIONS).index(name)
        settings = {**in_style, **CONDITIONS[name], "size": [args.size, args.size]}
        scenes = make_scenes(args.out / "scenes" / name, args.scenes, seed, settings)
        report = evaluate_condition(scenes, args.weights, args.out / "runs" / name)
        cov = report["confusion"].get("covered_vs_others") or {}
        rows.append({"condition": name, "seed": seed, **headline(report),
                     "tarp_confusion": cov.get("tarp_confusion_rate"),
                     "truth": report["counting"]["wagons"]["truth_total"]})
    save_results(args.out, "heldout_style", rows,
                 {"experiment": "heldout_style", "args": vars(args),
                  "conditions": {c: CONDITIONS[c] for c in args.conditions}})
    bar_plot(args.out / "heldout_style.png", rows, "condition",
             ["wagon_mape", "coverage", "covered_f1"], "held-out styles")
    print(format_table(rows, ["condition", "truth", "wagon_mae", "wagon_mape", "wagon_bias",
                              "coverage", "width", "covered_f1", "map50"]))
    return rows


if __name__ == "__main__":
    guarded(main)
