"""Benchmark of `python -m detector.adapt` on styles the base never saw, and on real imagery.

For each style (synth overrides, dotted keys of conf/synth.yaml that REPLACE the training
scene settings of the bundled model's experiment): generate --train-scenes labelled scenes to
adapt on and --test-scenes other scenes of that style; adapt; evaluate the base and the
shipped bundle on the test scenes. Per style: what adapt shipped (base, base recalibrated or
fine-tuned recalibrated) and whether it is recommended, every candidate's held-out-fold MAPE
and coverage, and on the test scenes wagon MAPE, 95% coverage and covered_car F1 before and
after, with the minutes adaptation took. With --real-parts N (default 3) the real north
scene (../shared/real/muttenz_north.tif, 78 railcars; ``railcar`` mapped to freight_car) is
cut into N strips that are the adapt scenes (no other real labelled scene exists to test on,
so its figures are the held-out folds').

    python scripts/bench_adapt.py [--weights BASE.pt] [--styles tarp_colours desert ...]
        [--style-json '{"name": {"style.haze": [0.4, 0.6]}}'] [--minutes 15]
        [--train-scenes 3] [--test-scenes 8] [--size 2000] [--real-parts 3]
        [--adapt-override KEY=VALUE ...] [--precision auto] [--out outputs/bench_adapt]

The shift alarm has its own benchmark: scripts/bench_shift.py. Writes OUT/bench_adapt.{json,md}.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

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

REAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "real" / "muttenz_north.tif"

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
    parser.add_argument("--real-parts", type=int, default=3,
                        help="also adapt on the real north scene cut into this many parts "
                             "(railcar mapped to freight_car); 0: not")
    parser.add_argument("--adapt-override", nargs="*", default=[],
                        help="extra conf/adapt.yaml overrides, e.g. budget.min_train_s=10")
    parser.add_argument("--size", type=int, default=2000, help="scene side in pixels")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "int8"],
                        help="inference precision of the test-scene counts (conf/infer.yaml)")
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


def real_parts(image: Path, out: Path, parts: int, cls: str = "freight_car",
               margin_m: float = 10.0) -> Path:
    """The real scene's labelled stretch cut into ``parts`` strips, as NAME.tif + .geojson.

    The strips span the labelled cars (plus ``margin_m``) along the scene's long side, cut
    at equal car counts (the tracks run along it, so a cut crosses some cars). Labels: every
    polygon touching a strip (evaluation counts a car where at least half of it lies; chips
    keep it by the min-visible rule), class ``railcar`` mapped to ``cls`` (the real labels
    do not tell wagon kinds apart). ``parts`` = 1 writes the whole scene relabelled.
    """
    import rasterio
    from rasterio.windows import Window
    from rasterio.windows import transform as window_transform
    from shapely.geometry import Polygon, box

    out.mkdir(parents=True, exist_ok=True)
    collection = json.loads(image.with_suffix(".geojson").read_text())
    feats = collection["features"]
    with rasterio.open(image) as src:
        if parts == 1:
            windows = [Window(0, 0, src.width, src.height)]
        else:
            inv = ~src.transform
            wide = src.width >= src.height
            spans = []
            for f in feats:
                px = [inv * tuple(c[:2]) for c in f["geometry"]["coordinates"][0]]
                along = [p[0] if wide else p[1] for p in px]
                spans.append((min(along), max(along)))
            centres = np.sort([(a + b) / 2 for a, b in spans])
            pad = margin_m / src.res[0]
            length = src.width if wide else src.height
            lo = max(0, int(min(a for a, _ in spans) - pad))
            hi = min(length, int(max(b for _, b in spans) + pad) + 1)
            cuts = [lo]
            cuts += [int(round(centres[int(len(centres) * k / parts)])) for k in range(1, parts)]
            cuts.append(hi)
            windows = [(Window(a, 0, b - a, src.height) if wide
                        else Window(0, a, src.width, b - a))
                       for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
        for k, win in enumerate(windows):
            name = image.stem if parts == 1 else f"{image.stem}_part{k + 1}"
            profile = {**src.profile, "width": int(win.width), "height": int(win.height),
                       "transform": window_transform(win, src.transform), "tiled": False}
            profile.pop("blockxsize", None)
            profile.pop("blockysize", None)
            with rasterio.open(out / f"{name}.tif", "w", **profile) as dst:
                dst.write(src.read(window=win))
            x0, y0, x1, y1 = rasterio.windows.bounds(win, src.transform)
            strip = box(x0, y0, x1, y1)
            mine = [{**f, "properties": {**f["properties"], "class": cls}} for f in feats
                    if Polygon(np.asarray(f["geometry"]["coordinates"][0])[:, :2]
                               ).intersects(strip)]
            (out / f"{name}.geojson").write_text(json.dumps({**collection, "features": mine}))
    return out


def adapt_row(name: str, result: Any, before: dict | None, after: dict | None
              ) -> dict[str, Any]:
    """One table row: what adapt shipped, its held-out candidates, and the test figures."""
    info = result.card.adapted_from
    cands = info["held_out"]["candidates"]
    row = {"style": name, "shipped": info["shipped"], "recommended": info["recommended"],
           "minutes": info["minutes"], "budget": info["budget_minutes"],
           **{f"folds_mape_{k.split()[0]}{'_recal' if 'recal' in k else ''}":
              v.get("wagon_mape") for k, v in cands.items()},
           **{f"folds_cov_{k.split()[0]}{'_recal' if 'recal' in k else ''}":
              v.get("coverage") for k, v in cands.items()}}
    if before is not None and after is not None:
        b, a = headline(before), headline(after)
        row.update({"truth": after["counting"]["wagons"]["truth_total"],
                    "base_mape": b["wagon_mape"], "adapted_mape": a["wagon_mape"],
                    "base_coverage": b["coverage"], "adapted_coverage": a["coverage"],
                    "base_covered_f1": b["covered_f1"],
                    "adapted_covered_f1": a["covered_f1"]})
    return row


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from detector.adapt import adapt

    args = parse_args(argv)
    styles = styles_from(args)
    in_style = training_scene_settings()
    size = {"size": [args.size, args.size]}
    base = str(resolve_weights(args.weights))
    rows = []
    overrides = [f"minutes={args.minutes}", "overwrite=true", *args.adapt_override]
    for i, (name, settings) in enumerate(styles.items()):
        seed = args.seed + 100 * (i + 1)
        settings = {**in_style, **settings, **size}
        train = make_scenes(args.out / "scenes" / name / "adapt", args.train_scenes, seed,
                            settings)
        test = make_scenes(args.out / "scenes" / name / "test", args.test_scenes, seed + 50,
                           settings)
        infer = {"precision": args.precision}
        before = evaluate_condition(test, base, args.out / "runs" / name / "base", infer)
        result = adapt(compose("adapt", [f"scenes={train}", f"weights={base}", *overrides,
                                         f"out={args.out / 'models' / name}"]))
        after = evaluate_condition(test, result.weights, args.out / "runs" / name / "adapted",
                                   infer)
        rows.append(adapt_row(name, result, before, after))
        print(result.table, "\n", result.reason, flush=True)
    if args.real_parts:
        scenes = real_parts(REAL, args.out / "scenes" / "real_north", args.real_parts)
        result = adapt(compose("adapt", [f"scenes={scenes}", f"weights={base}", *overrides,
                                         f"out={args.out / 'models' / 'real_north'}"]))
        rows.append(adapt_row(f"real_north ({args.real_parts} parts)", result, None, None))
        print(result.table, "\n", result.reason, flush=True)
    meta = {"benchmark": "adapt", "args": {k: str(v) for k, v in vars(args).items()},
            "styles": styles}
    save_results(args.out, "bench_adapt", rows, meta)
    columns = list(dict.fromkeys(k for r in rows for k in r))
    print(format_table(rows, columns))
    return {"rows": rows}


if __name__ == "__main__":
    guarded(main)
