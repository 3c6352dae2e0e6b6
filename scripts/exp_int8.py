"""INT8 vs FP32 on OpenVINO: do counts, interval coverage and recall stay within noise?

The same bundled model, exported twice (``precision=fp32`` and ``precision=int8``: NNCF
post-training quantisation calibrated on generated tiles), scored the same way through
``detector.evaluate``:

- generated scenes of each style-shift family (``scripts/bench_style_shift.py``: in style,
  held-out texture, sensor and colour families, empty yards; new seeds): wagon MAE, MAPE,
  bias, 95% interval coverage, mAP50, covered_car F1;
- the real north scene ``../shared/real/muttenz_north.tif`` (one real scene, 78 cars):
  class-agnostic recall and precision of the counted vehicles at oriented IoU >= 0.3, the
  wagon count and its 95% interval, and the shift score (the INT8 graph's features feed the
  alarm);
- the forward time per tile of each precision over the same tiles.

    python scripts/exp_int8.py [--scenes 4] [--size 1024] [--families in_style ...]
        [--out outputs/exp_int8]

Writes OUT/exp_int8.json and prints the table. Run on a quiet machine for the timings.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from detector.atomic import write_text
from detector.errors import guarded
from detector.evaluate.experiments import (
    evaluate_condition,
    format_table,
    make_scenes,
    training_scene_settings,
)

REAL_SCENE = Path(__file__).resolve().parents[2] / "shared" / "real" / "muttenz_north.tif"
PRECISIONS = ("fp32", "int8")


def forward_ms(scenes: Path, precision: str, n_tiles: int = 32) -> float:
    """Milliseconds per tile of the OpenVINO forward at ``precision`` over generated tiles."""
    from detector.infer.api import config
    from detector.infer.model import load_bundle
    from detector.infer.reader import read_tile
    from detector.infer.scene import make_predictor, plan_scene
    from detector.raster import open_raster

    cfg = config(None, None, device="cpu", backend="openvino", precision=precision)
    bundle = load_bundle(None, "cpu", lazy=True)
    predictor = make_predictor(bundle, cfg)
    tiles = []
    for tif in sorted(scenes.glob("*.tif")):
        with open_raster(tif) as src:
            plan = plan_scene(src, tif, bundle.card, cfg)
            tiles += [img for t in plan.tiles
                      if (img := read_tile(src, t, bundle.imgsz, plan.stretch)) is not None]
        if len(tiles) >= n_tiles:
            break
    images = np.stack(tiles[:n_tiles])
    predictor.forward(images[:8])  # warm-up
    start = time.perf_counter()
    for k in range(0, len(images), 8):
        predictor.forward(images[k:k + 8])
    return 1000 * (time.perf_counter() - start) / len(images)


def real_row(out: Path, precision: str, real: Path) -> dict[str, Any]:
    """Class-agnostic recall and precision (oriented IoU >= 0.3) of the counted vehicles on
    the real scene (its labels are one class, ``railcar``: wagons and locomotives alike), the
    wagon count with its interval, and the shift score."""
    from detector.infer import run
    from detector.infer.model import load_bundle
    from detector.labels import read_geojson, to_pixel
    from detector.matching import greedy_match, iou_matrix
    from detector.raster import open_raster

    card = load_bundle(None, "cpu", lazy=True).card
    [res] = run(real, out=out, backend="openvino", precision=precision, device="cpu",
                progress=False, overwrite=True, quicklook=False)
    if not res.ok:
        raise SystemExit(res.error)
    counted = [d for d in res.detections if d.score >= card.threshold(d.cls)]
    polys, crs = read_geojson(real.with_suffix(".geojson"))
    with open_raster(real) as src:
        truth = [p.corners for p in to_pixel(polys, crs, src.crs, src.transform, real)]
    match = greedy_match(iou_matrix([d.corners_px for d in counted], truth),
                         np.array([d.score for d in counted]), 0.3)
    hits = int((match >= 0).sum())
    return {"real_recall": round(hits / max(1, len(truth)), 3),
            "real_precision": round(hits / max(1, len(counted)), 3),
            "real_vehicles": len(counted), "real_truth": len(truth),
            "real_wagons": res.counts["wagons"]["count"],
            "real_ci95": res.counts["wagons"]["ci95"],
            "real_shift": (res.counts.get("shift") or {}).get("score")}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=4)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=900)
    parser.add_argument("--real", type=Path, default=REAL_SCENE)
    parser.add_argument("--families", nargs="+", default=None,
                        help="style-shift families (default: all but 'classic')")
    parser.add_argument("--out", type=Path, default=Path("outputs/exp_int8"))
    args = parser.parse_args(argv)
    import bench_style_shift as bss  # scripts/ is on sys.path when run as a script

    families = args.families or [f for f in bss.FAMILIES if f != "classic"]
    base = {**training_scene_settings(), "size": [args.size, args.size]}
    sets = {name: make_scenes(args.out / "scenes" / name, args.scenes, args.seed + k,
                              {**base, **bss.FAMILIES[name]})
            for k, name in enumerate(families)}
    rows, real_rows = [], []
    for precision in PRECISIONS:
        ms = round(forward_ms(next(iter(sets.values())), precision), 1)
        for name, scenes in sets.items():
            report = evaluate_condition(scenes, None, args.out / precision / name,
                                        {"backend": "openvino", "precision": precision})
            rows.append({**bss.family_row(precision, name, report), "ms_per_tile": ms})
            print(json.dumps(rows[-1], default=str), flush=True)
        if args.real.exists():
            real_rows.append({"precision": precision, "ms_per_tile": ms,
                              **real_row(args.out / precision / "real", precision, args.real)})
            print(json.dumps(real_rows[-1]), flush=True)
    write_text(args.out / "exp_int8.json", json.dumps({"families": rows, "real": real_rows},
                                                      indent=2, default=str))
    columns = ["model", "family", "truth", "wagon_mae", "wagon_mape", "wagon_bias", "coverage",
               "rel_width", "map50", "covered_f1", "false_wagons", "ms_per_tile"]
    print(format_table(rows, columns).replace("model", "precision", 1))
    if real_rows:
        print(format_table(real_rows, list(real_rows[0])))


if __name__ == "__main__":
    guarded(main)
