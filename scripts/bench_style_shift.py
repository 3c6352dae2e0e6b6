"""Style-shift benchmark: models side by side on scene families held out of training.

The bundled model's experiment (conf/experiment/synthetic_randomised.yaml) leaves families
out BY CONSTRUCTION; test scenes here are drawn only from them:

- ``heldout_texture``: the cellular ground texture (training: fractal, striped, speckle, weeds);
- ``heldout_sensor``: defocus blur, banding noise and sharpening halos on every scene
  (training: Gaussian/motion blur, Gaussian/Poisson noise);
- ``heldout_vivid``: vivid paints, tarps and containers (saturation 0.65-0.95; training <= 0.6);
- ``empty_yard``: 1 km2 yards with no freight vehicles at all but many look-alikes
  (passenger trains, trucks, trailers, car parks, containers on the ground);
- ``classic``: the fixed look of the first generator (what v0.1 was trained on);
- ``in_style``: the training settings with new seeds (the only family a model was trained on).

For every model and family: wagon MAPE, bias, 95% interval coverage, mean interval width
relative to the true count, false wagons per empty-yard scene, covered_car F1, scene mAP50.

    python scripts/bench_style_shift.py --models old=OLD.pt new=detector/assets/railcar_obb.pt
        [--families ...] [--scenes 8] [--size 1024] [--out outputs/bench_style_shift]

The v0.1 bundle: ``git show 1fefbcc:detector/assets/railcar_obb.pt > old.pt`` (and .json).
Writes OUT/style_shift.{json,md,png}; scenes are generated once and reused.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from detector.atomic import sha256_file, write_text
from detector.errors import guarded
from detector.evaluate.experiments import (
    BUNDLED_EXPERIMENT,
    evaluate_condition,
    format_table,
    headline,
    make_scenes,
    save_results,
    training_scene_settings,
)

VIVID = [0.65, 0.95]
# Settings replace the training experiment's scene settings (dotted conf/synth.yaml keys).
FAMILIES: dict[str, dict[str, Any]] = {
    "in_style": {},
    "heldout_texture": {"randomised.texture.families": ["cellular"],
                        "randomised.texture.strength": [0.08, 0.18]},
    "heldout_sensor": {"randomised.sensor.blur_kinds": ["defocus"],
                       "randomised.sensor.noise_kinds": ["banding"],
                       "randomised.sensor.sharpen_prob": 1.0},
    "heldout_vivid": {f"randomised.colors.{p}.saturation": VIVID
                      for p in ("car_colors", "loco_colors", "container_colors", "tarp_colors")},
    "empty_yard": {"vehicles.min": 0, "vehicles.max": 0, "vehicles.empty_prob": 1.0,
                   "size": [2000, 2000], "negatives.passenger_trains": [2, 4],
                   "negatives.parking_lots": [3, 6], "terrain.trucks": [20, 40],
                   "terrain.containers_on_ground": [40, 80]},
    "classic": {"appearance": "classic", "negatives.enabled": False},
}
HELD_OUT = ("heldout_texture", "heldout_sensor", "heldout_vivid")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["bundled=detector/assets/railcar_obb.pt"],
                        help="NAME=WEIGHTS.pt pairs, evaluated side by side")
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    parser.add_argument("--scenes", type=int, default=8, help="scenes per family")
    parser.add_argument("--size", type=int, default=1024, help="scene side in pixels "
                        "(empty yards are always 2000 px = 1 km2 at 0.5 m/px)")
    parser.add_argument("--seed", type=int, default=8100,
                        help="base seed; family i uses seed + 100 * i")
    parser.add_argument("--experiment", default=BUNDLED_EXPERIMENT,
                        help="training experiment whose scene settings the families build on")
    parser.add_argument("--out", type=Path, default=Path("outputs/bench_style_shift"))
    return parser.parse_args(argv)


def evaluate_once(scenes: Path, weights: str, out: Path) -> dict[str, Any]:
    """The evaluation report of ``weights`` on ``scenes``, reused when these weights made it."""
    stamp = out / "weights.sha256"
    digest = sha256_file(weights)
    if stamp.is_file() and stamp.read_text() == digest and (out / "report.json").is_file():
        return json.loads((out / "report.json").read_text())
    report = evaluate_condition(scenes, weights, out)
    write_text(stamp, digest)
    return report


def relative_width(report: dict[str, Any]) -> float | None:
    """Mean of (95% wagon interval width / true wagons) over scenes with wagons."""
    widths = [(r["wagons"]["ci95"][1] - r["wagons"]["ci95"][0]) / r["wagons"]["truth"]
              for r in report["scenes"] if r["wagons"]["truth"] > 0]
    return float(np.mean(widths)) if widths else None


def family_row(model: str, family: str, report: dict[str, Any]) -> dict[str, Any]:
    """One table row: the headline figures plus false wagons on empty yards."""
    row = {"model": model, "family": family, **headline(report),
           "truth": report["counting"]["wagons"]["truth_total"],
           "rel_width": relative_width(report)}
    if family == "empty_yard":
        counts = [r["wagons"]["count"] for r in report["scenes"]]
        row["false_wagons"] = float(np.mean(counts)) if counts else None
        for key in ("wagon_mape", "rel_width", "covered_f1", "map50"):
            row[key] = None  # undefined without vehicles
    return row


def pooled(rows: list[dict[str, Any]], model: str) -> dict[str, Any]:
    """Held-out families pooled per model (scene-weighted means of the family figures)."""
    mine = [r for r in rows if r["model"] == model and r["family"] in HELD_OUT]
    out: dict[str, Any] = {"model": model, "family": "HELD-OUT (pooled)"}
    for key in ("wagon_mape", "wagon_bias", "coverage", "rel_width", "covered_f1", "map50"):
        vals = [r[key] for r in mine if r.get(key) is not None]
        out[key] = float(np.mean(vals)) if vals else None
    out["truth"] = sum(r["truth"] for r in mine)
    return out


def plot(path: Path, rows: list[dict[str, Any]], models: list[str]) -> None:
    """Grouped bars per family: wagon MAPE, coverage, relative width, false wagons."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    metrics = [("wagon_mape", "wagon MAPE %"), ("coverage", "95% coverage"),
               ("rel_width", "interval width / truth"), ("false_wagons", "false wagons / km2"),
               ("covered_f1", "covered_car F1")]
    families = list(dict.fromkeys(r["family"] for r in rows))
    fig = Figure(figsize=(3.3 * len(metrics), 3.6))
    FigureCanvasAgg(fig)
    width = 0.8 / max(len(models), 1)
    for i, (key, title) in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), i + 1)
        for j, model in enumerate(models):
            vals = [next((r.get(key) for r in rows if r["model"] == model
                          and r["family"] == f), None) for f in families]
            ax.bar(np.arange(len(families)) + j * width,
                   [np.nan if v is None else v for v in vals], width, label=model)
        ax.set_xticks(np.arange(len(families)) + width * (len(models) - 1) / 2, families,
                      rotation=40, ha="right", fontsize=7)
        ax.set_title(title, fontsize=9)
        if i == 0:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    models = dict(m.split("=", 1) for m in args.models)
    base = training_scene_settings(args.experiment)
    rows: list[dict[str, Any]] = []
    for name in args.families:
        seed = args.seed + 100 * list(FAMILIES).index(name)
        settings = {**base, "size": [args.size, args.size], **FAMILIES[name]}
        scenes = make_scenes(args.out / "scenes" / name, args.scenes, seed, settings)
        for model, weights in models.items():
            report = evaluate_once(scenes, weights, args.out / "runs" / model / name)
            rows.append(family_row(model, name, report))
            print(f"{model:8s} {name:16s} MAPE {rows[-1]['wagon_mape']} "
                  f"coverage {rows[-1]['coverage']} false {rows[-1].get('false_wagons')}",
                  flush=True)
    if any(r["family"] in HELD_OUT for r in rows):
        rows += [pooled(rows, m) for m in models]
    columns = ["model", "family", "truth", "wagon_mape", "wagon_bias", "coverage", "rel_width",
               "false_wagons", "covered_f1", "map50"]
    save_results(args.out, "style_shift", rows,
                 {"benchmark": "style_shift", "args": {**vars(args), "out": str(args.out)},
                  "models": models, "families": {f: FAMILIES[f] for f in args.families}})
    plot(args.out / "style_shift.png", [r for r in rows if "pooled" not in r["family"]],
         list(models))
    print(format_table(rows, columns))
    return rows


if __name__ == "__main__":
    guarded(main)
