"""Shift-alarm benchmark: does the alarm fire when a count's 95% interval misses the truth?

For every model (NAME=WEIGHTS.pt, side by side): a copy is recalibrated on --cal-scenes
in-style scenes (that fits the card's shift reference and output-signal alarm rule,
detector/shift.py); then in-style held-out scenes, scenes of off-style families and, with
--real, the real north scene are counted and evaluated. Per scene: each signal's z, the
alarm, and whether the wagon interval missed the truth.

The rule's free choices (which signals, threshold_z) are FITTED on the --fit families (and
half of the in-style scenes) and VALIDATED on the --validate families (and the other half),
which the fit never saw: chosen as the setting with the highest alarm rate on misses whose
in-style false alarm rate is at most --max-fpr (threshold at least --min-z). Reported for
both sets: AUROC of the alarm score for "interval misses", alarm rate on misses and on
covered scenes, false alarm rate in style; the same for the rule as configured
(conf/calibration/default.yaml shift.alarm), and "as run": the alarm detector.infer raised.

    python scripts/bench_shift.py --models v03=detector/assets/railcar_obb.pt v02=old.pt
        [--fit heldout_texture heldout_vivid murky desert]
        [--validate heldout_sensor tarp_colours classic empty_yard]
        [--scenes 6] [--in-style 8] [--cal-scenes 6] [--size 1024] [--real] [--min-z 3]
        [--precision auto]
        [--out outputs/bench_shift]

The v0.2 bundle: ``git show dfa29bd:detector/assets/railcar_obb.pt > old.pt`` (and .json;
v0.1: commit 1fefbcc).
Writes OUT/bench_shift.{json,md}; scenes are generated once and reused.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

from detector.atomic import write_text
from detector.config import compose
from detector.errors import guarded
from detector.evaluate.experiments import evaluate_condition, make_scenes, training_scene_settings
from detector.shift import SIGNALS, auroc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_adapt import STYLES, real_parts  # noqa: E402
from bench_style_shift import FAMILIES  # noqa: E402

ALL_FAMILIES = {**{k: v for k, v in FAMILIES.items() if k != "in_style"}, **STYLES}
REAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "real" / "muttenz_north.tif"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["v03=detector/assets/railcar_obb.pt"],
                        help="NAME=WEIGHTS.pt pairs, side by side")
    parser.add_argument("--fit", nargs="+",
                        default=["heldout_texture", "heldout_vivid", "murky", "desert"],
                        choices=list(ALL_FAMILIES))
    parser.add_argument("--validate", nargs="+",
                        default=["heldout_sensor", "tarp_colours", "classic", "empty_yard"],
                        choices=list(ALL_FAMILIES))
    parser.add_argument("--scenes", type=int, default=6, help="scenes per off-style family")
    parser.add_argument("--in-style", type=int, default=8, help="in-style held-out scenes")
    parser.add_argument("--cal-scenes", type=int, default=6, help="in-style calibration scenes")
    parser.add_argument("--size", type=int, default=1024, help="scene side in pixels")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "int8"],
                        help="inference precision of the counted runs (conf/infer.yaml)")
    parser.add_argument("--max-fpr", type=float, default=0.10)
    parser.add_argument("--min-z", type=float, default=3.0,
                        help="lowest threshold the fit may choose (spreads)")
    parser.add_argument("--real", action="store_true",
                        help="also the real north scene (railcar mapped to freight_car)")
    parser.add_argument("--seed", type=int, default=9100)
    parser.add_argument("--out", type=Path, default=Path("outputs/bench_shift"))
    return parser.parse_args(argv)


def recalibrated(name: str, weights: str, cal: Path, out: Path) -> Path:
    """A copy of ``weights`` recalibrated on ``cal`` (fits the shift reference and rule)."""
    from detector.train.recalibrate import recalibrate

    copy = out / "models" / name / Path(weights).name
    copy.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(weights, copy)
    shutil.copy(Path(weights).with_suffix(".json"), copy.with_suffix(".json"))
    recalibrate(copy, compose("recalibrate").calibration, scenes=cal)
    return copy


def scene_rows(scenes: Path, weights: Path, run: Path, family: str, role: str,
               precision: str = "auto") -> list[dict[str, Any]]:
    """Per scene: signals' z, alarm, and whether the wagon interval held the truth."""
    report = evaluate_condition(scenes, weights, run, {"precision": precision})
    rows = []
    for row in report["scenes"]:
        counts = json.loads((run / "predictions" / f"{row['scene']}.counts.json").read_text())
        shift = counts.get("shift") or {}
        rows.append({"family": family, "role": role, "scene": row["scene"],
                     "truth": row["wagons"]["truth"], "count": row["wagons"]["count"],
                     "ci95": row["wagons"]["ci95"], "miss": not row["wagons"]["covered"],
                     "z": shift.get("z") or {}, "signals": shift.get("signals") or {},
                     "alarm": bool(shift.get("alarm")),
                     "feature_alarm": bool(shift.get("feature_alarm"))})
    return rows


def rule_score(row: dict[str, Any], use: tuple[str, ...]) -> float:
    zs = [row["z"][u] for u in use if row["z"].get(u) is not None]
    return max(zs) if zs else -np.inf


def evaluate_rule(rows: list[dict[str, Any]], use: tuple[str, ...], z: float,
                  as_run: bool = False) -> dict[str, Any]:
    """AUROC for misses, alarm rate on misses, in-style false alarm rate, of one rule.

    ``as_run``: the alarm ``detector.infer`` raised (the counts JSON: the card's rule plus
    the feature alarm of a blind model) instead of ``max z > z``; AUROC still of the score.
    """
    scores = [rule_score(r, use) for r in rows]
    flags = [r["alarm"] if as_run else s > z for s, r in zip(scores, rows, strict=True)]

    def pick(keep: Any, values: list) -> list:
        return [v for v, r in zip(values, rows, strict=True) if keep(r)]

    def is_miss(r: dict) -> bool:
        return r["miss"]

    def covered(r: dict) -> bool:
        return not r["miss"]

    def in_style(r: dict) -> bool:  # an in-style scene whose interval held: alarm is false
        return r["family"] == "in_style" and not r["miss"]

    finite = [np.nan_to_num(pick(k, scores), neginf=-1e9) for k in (covered, is_miss)]
    return {"use": list(use), "threshold_z": z, "as_run": as_run, "scenes": len(rows),
            "misses": sum(map(is_miss, rows)),
            "auroc_miss": (round(auroc(*finite), 3) if all(len(f) for f in finite)
                           else None),
            "alarm_on_misses": _rate(pick(is_miss, flags)),
            "alarm_on_covered": _rate(pick(covered, flags)),
            "false_alarm_in_style": _rate(pick(in_style, flags)),
            "in_style_scenes": sum(map(in_style, rows))}


def _rate(flags: list[bool]) -> float | None:
    return round(float(np.mean(flags)), 3) if flags else None


def fit_rule(rows: list[dict[str, Any]], max_fpr: float, min_z: float) -> dict[str, Any]:
    """The (signals, threshold_z) that alarms on most misses at in-style FPR <= max_fpr.

    Per set of signals, the threshold is the smallest z >= ``min_z`` (grid of 0.25) that
    keeps the in-style false alarm rate within ``max_fpr``; a handful of misses decides
    little, so ties go to the higher AUROC of the rule's score, then fewer signals.
    """
    best = None
    for k in range(1, len(SIGNALS) + 1):
        for use in itertools.combinations(SIGNALS, k):
            for z in np.arange(min_z, 8.01, 0.25):
                r = evaluate_rule(rows, use, float(z))
                if (r["false_alarm_in_style"] or 0) <= max_fpr:
                    break
            else:
                continue
            key = (r["alarm_on_misses"] or 0, r["auroc_miss"] or 0, -len(use))
            if best is None or key > best[0]:
                best = (key, r)
    return best[1] if best else {}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    models = dict(m.split("=", 1) for m in args.models)
    base = training_scene_settings()
    size = {"size": [args.size, args.size]}
    cal = make_scenes(args.out / "scenes" / "calibration", args.cal_scenes, args.seed,
                      {**base, **size})
    in_style = make_scenes(args.out / "scenes" / "in_style", args.in_style, args.seed + 50,
                           {**base, **size})
    families = {}
    for i, name in enumerate(dict.fromkeys([*args.fit, *args.validate])):
        settings = {**base, **size, **ALL_FAMILIES[name]}
        families[name] = make_scenes(args.out / "scenes" / name, args.scenes,
                                     args.seed + 100 * (i + 1), settings)
    if args.real:
        families["real_north"] = real_parts(REAL, args.out / "scenes" / "real_north", 1)
    configured = compose("recalibrate").calibration.shift.alarm
    result: dict[str, Any] = {"args": {**vars(args), "out": str(args.out)}, "models": {}}
    for model, weights in models.items():
        w = recalibrated(model, weights, cal, args.out)
        rows = scene_rows(in_style, w, args.out / "runs" / model / "in_style", "in_style", "",
                          args.precision)
        for k, row in enumerate(rows):  # half the in-style scenes fit, half validate
            row["role"] = "fit" if k % 2 == 0 else "validate"
        for name, scenes in families.items():
            role = "fit" if name in args.fit else "validate"
            rows += scene_rows(scenes, w, args.out / "runs" / model / name, name, role,
                               args.precision)
        fit_rows = [r for r in rows if r["role"] == "fit"]
        val_rows = [r for r in rows if r["role"] == "validate"]
        chosen = fit_rule(fit_rows, args.max_fpr, args.min_z)
        use, z = tuple(chosen.get("use") or configured.use), chosen.get("threshold_z", 3.0)
        as_configured = (tuple(configured.use), float(configured.threshold_z))
        result["models"][model] = {
            "weights": str(weights), "rows": rows, "fitted_rule": {"use": list(use), "z": z},
            "fit": evaluate_rule(fit_rows, use, z), "validate": evaluate_rule(val_rows, use, z),
            "configured_fit": evaluate_rule(fit_rows, *as_configured),
            "configured_validate": evaluate_rule(val_rows, *as_configured),
            "as_run_fit": evaluate_rule(fit_rows, *as_configured, as_run=True),
            "as_run_validate": evaluate_rule(val_rows, *as_configured, as_run=True),
            "per_signal_validate": {s: evaluate_rule(val_rows, (s,), z)["auroc_miss"]
                                    for s in SIGNALS},
            "real": [r for r in rows if r["family"] == "real_north"],
        }
    md = format_markdown(result)
    args.out.mkdir(parents=True, exist_ok=True)
    write_text(args.out / "bench_shift.json", json.dumps(result, indent=2, default=str))
    write_text(args.out / "bench_shift.md", md)
    print(md)
    return result


def format_markdown(result: dict[str, Any]) -> str:
    lines = ["| model | rule | set | scenes | misses | AUROC (miss) | alarm on misses | "
             "alarm on covered | false alarms in style (covered in-style scenes) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for model, r in result["models"].items():
        for label, key in (("fitted", "fit"), ("fitted", "validate"),
                           ("configured", "configured_fit"),
                           ("configured", "configured_validate"),
                           ("as run", "as_run_fit"), ("as run", "as_run_validate")):
            e = r[key]
            rule = f"{label}: {'+'.join(e['use'])} z>{e['threshold_z']:g}"
            if e["as_run"]:
                rule += " (+ feature alarm when blind)"
            lines.append(f"| {model} | {rule} | {key.split('_')[-1]} | {e['scenes']} | "
                         f"{e['misses']} | {e['auroc_miss']} | {e['alarm_on_misses']} | "
                         f"{e['alarm_on_covered']} | {e['false_alarm_in_style']} "
                         f"(of {e['in_style_scenes']}) |")
    lines.append("")
    for model, r in result["models"].items():
        lines.append(f"{model}: per-signal AUROC on the validation set "
                     f"{r['per_signal_validate']}")
        for row in r["real"]:
            lines.append(f"{model} real {row['scene']}: truth {row['truth']}, count "
                         f"{row['count']} {row['ci95']}, miss {row['miss']}, alarm "
                         f"{row['alarm']}, z {row['z']}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    guarded(main)
