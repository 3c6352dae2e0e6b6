"""Benchmark of `python -m detector.adapt` and of the shift alarm, on styles the base never saw.

For each style (synth overrides, dotted keys of conf/synth.yaml that REPLACE the training
scene settings of conf/experiment/synthetic_default.yaml): generate --train-scenes labelled
scenes to adapt on and --test-scenes other scenes of that style; evaluate the base and the
adapted bundle on the test scenes; print wagon MAPE, bias, 95% coverage and covered_car F1
side by side with the minutes adaptation took.

Shift validation: the base weights are first recalibrated on --cal-scenes in-style scenes
(that records the shift reference); in-style held-out scenes (--in-style) and every style's
test scenes are scored. Reported: the AUROC of the shift score (in-style vs off-style), the
alarm rates, and how often an alarmed vs a quiet scene's wagon interval misses the truth.

    python scripts/bench_adapt.py [--weights BASE.pt] [--styles tarp_colours desert ...]
        [--style-json '{"name": {"style.haze": [0.4, 0.6]}}'] [--minutes 15]
        [--train-scenes 3] [--test-scenes 8] [--size 2000] [--out outputs/bench_adapt]

Tiny check (minutes): --minutes 1 --size 600 --train-scenes 3 --test-scenes 2 --cal-scenes 2
--in-style 2 --styles tarp_colours. Writes OUT/bench_adapt.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

from detector.bundle import resolve_weights
from detector.config import compose
from detector.errors import guarded
from detector.evaluate.experiments import (
    evaluate_condition,
    format_table,
    headline,
    make_scenes,
    save_results,
    training_scene_settings,
)
from detector.shift import auroc

# Styles the bundled model never saw (each replaces keys of the training scene settings).
# Others come from --style-json, e.g. the generator's named styles as config overrides.
STYLES: dict[str, dict[str, Any]] = {
    "tarp_colours": {  # tarps in colours the training palette never had
        "style.tarp_colors": {"red": [150, 58, 48], "orange": [196, 120, 52],
                              "white": [212, 212, 206], "black": [32, 32, 34],
                              "tan": [182, 160, 120]},
        "covered_string_prob": 0.7,
    },
    "desert": {  # pale sand and grey ballast instead of grass and soil, warm cast
        "style.grass": [[176, 160, 120], [200, 184, 140]],
        "style.soil": [[190, 170, 130], [215, 195, 155]],
        "style.ballast": [[95, 90, 85], [120, 115, 108]],
        "style.color_cast": 0.15,
    },
    "murky": {  # heavy haze, blur and noise together
        "style.haze": [0.4, 0.6], "style.blur_sigma_px": [1.3, 1.9],
        "style.noise_sigma": [6.0, 9.0], "style.jpeg_quality": [30, 50], "style.jpeg_prob": 1.0,
    },
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=None, help="base bundle (default: bundled model)")
    parser.add_argument("--styles", nargs="+", default=list(STYLES))
    parser.add_argument("--style-json", default=None,
                        help="extra styles: JSON (or a .json file) {name: {synth key: value}}")
    parser.add_argument("--minutes", type=float, default=15.0, help="adaptation budget")
    parser.add_argument("--train-scenes", type=int, default=3)
    parser.add_argument("--test-scenes", type=int, default=8)
    parser.add_argument("--cal-scenes", type=int, default=8,
                        help="in-style scenes the base is recalibrated on (shift reference)")
    parser.add_argument("--in-style", type=int, default=8,
                        help="in-style held-out scenes for the shift AUROC")
    parser.add_argument("--size", type=int, default=2000, help="scene side in pixels")
    parser.add_argument("--seed", type=int, default=8800)
    parser.add_argument("--out", type=Path, default=Path("outputs/bench_adapt"))
    return parser.parse_args(argv)


def styles_from(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    styles = dict(STYLES)
    if args.style_json:
        text = args.style_json
        if Path(text).suffix == ".json" and Path(text).is_file():
            text = Path(text).read_text()
        styles.update(json.loads(text))
    missing = [s for s in args.styles if s not in styles]
    if missing:
        raise SystemExit(f"unknown style(s) {missing}; known: {sorted(styles)} "
                         "(add more with --style-json)")
    return {name: styles[name] for name in args.styles}


def reference_base(args: argparse.Namespace, in_style: dict[str, Any]) -> Path:
    """A copy of the base recalibrated on in-style scenes (its card gets the shift reference)."""
    from detector.train.recalibrate import recalibrate

    base = resolve_weights(args.weights)
    cal = make_scenes(args.out / "scenes" / "calibration", args.cal_scenes, args.seed,
                      {**in_style, "size": [args.size, args.size]})
    copy = args.out / "base" / base.name
    copy.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(base, copy)
    shutil.copy(base.with_suffix(".json"), copy.with_suffix(".json"))
    recalibrate(copy, compose("recalibrate").calibration, scenes=cal)
    return copy


def scene_shifts(report: dict[str, Any], run_dir: Path) -> list[dict[str, Any]]:
    """Per scene: shift score, alarm, and whether the wagon interval held the truth."""
    rows = []
    for row in report["scenes"]:
        counts = json.loads((run_dir / "predictions" / f"{row['scene']}.counts.json").read_text())
        shift = counts.get("shift") or {}
        rows.append({"scene": row["scene"], "score": shift.get("score"),
                     "alarm": shift.get("alarm"), "covered": row["wagons"]["covered"]})
    return rows


def miss_rate(rows: list[dict[str, Any]]) -> float | None:
    return round(sum(not r["covered"] for r in rows) / len(rows), 3) if rows else None


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from detector.adapt import adapt

    args = parse_args(argv)
    styles = styles_from(args)
    in_style = training_scene_settings()
    size = {"size": [args.size, args.size]}
    base = reference_base(args, in_style)
    in_scenes = make_scenes(args.out / "scenes" / "in_style", args.in_style, args.seed + 50,
                            {**in_style, **size})
    in_report = evaluate_condition(in_scenes, base, args.out / "runs" / "in_style")
    negatives = scene_shifts(in_report, args.out / "runs" / "in_style")
    rows, positives, adapted_shift = [], [], []
    for i, (name, overrides) in enumerate(styles.items()):
        seed = args.seed + 100 * (i + 1)
        settings = {**in_style, **overrides, **size}
        train = make_scenes(args.out / "scenes" / name / "adapt", args.train_scenes, seed,
                            settings)
        test = make_scenes(args.out / "scenes" / name / "test", args.test_scenes, seed + 50,
                           settings)
        before = evaluate_condition(test, base, args.out / "runs" / name / "base")
        positives += scene_shifts(before, args.out / "runs" / name / "base")
        result = adapt(compose("adapt", [f"scenes={train}", f"weights={base}",
                                         f"minutes={args.minutes}", "overwrite=true",
                                         f"out={args.out / 'models' / name}"]))
        after = evaluate_condition(test, result.weights, args.out / "runs" / name / "adapted")
        adapted_shift += scene_shifts(after, args.out / "runs" / name / "adapted")
        b, a = headline(before), headline(after)
        rows.append({"style": name, "truth": after["counting"]["wagons"]["truth_total"],
                     "base_mape": b["wagon_mape"], "adapted_mape": a["wagon_mape"],
                     "base_bias": b["wagon_bias"], "adapted_bias": a["wagon_bias"],
                     "base_coverage": b["coverage"], "adapted_coverage": a["coverage"],
                     "base_covered_f1": b["covered_f1"], "adapted_covered_f1": a["covered_f1"],
                     "minutes": result.card.adapted_from["minutes"],
                     "held_out_folds_after_mape":
                         result.card.adapted_from["held_out"]["after"]["wagon_mape"]})
    scored = [r for r in negatives + positives if r["score"] is not None]
    alarmed = [r for r in scored if r["alarm"]]
    quiet = [r for r in scored if not r["alarm"]]
    shift = {
        "auroc": auroc([r["score"] for r in negatives if r["score"] is not None],
                       [r["score"] for r in positives if r["score"] is not None]),
        "alarm_rate_in_style": _rate(negatives), "alarm_rate_off_style": _rate(positives),
        "alarm_rate_adapted_on_own_style": _rate(adapted_shift),
        "miss_rate_alarmed": miss_rate(alarmed), "miss_rate_quiet": miss_rate(quiet),
        "n_alarmed": len(alarmed), "n_quiet": len(quiet),
        "threshold": json.loads(base.with_suffix(".json").read_text())["shift"]["threshold"]
        if json.loads(base.with_suffix(".json").read_text()).get("shift") else None,
    }
    meta = {"benchmark": "adapt", "args": {k: str(v) for k, v in vars(args).items()},
            "styles": styles, "shift": shift, "in_style_scenes": negatives,
            "off_style_scenes": positives, "adapted_scenes": adapted_shift}
    save_results(args.out, "bench_adapt", rows, meta)
    with open(args.out / "bench_adapt.md", "a") as md:
        md.write("\nshift alarm: " + ", ".join(f"{k} {v}" for k, v in shift.items()) + "\n")
    print(format_table(rows, list(rows[0]) if rows else ["style"]))
    print("shift alarm:", json.dumps(shift))
    return {"rows": rows, "shift": shift}


def _rate(rows: list[dict[str, Any]]) -> float | None:
    scored = [r for r in rows if r["alarm"] is not None]
    return round(sum(bool(r["alarm"]) for r in scored) / len(scored), 3) if scored else None


if __name__ == "__main__":
    guarded(main)
