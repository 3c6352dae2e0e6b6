"""INT8 vs FP32 on OpenVINO: do counts, interval coverage and recall stay within noise?

The same bundled model, exported twice (``precision=fp32`` and ``precision=int8``: NNCF
post-training quantisation calibrated on generated tiles), scored the same way through
``detector.evaluate``:

- generated in-style scenes (the bundled model's training settings, new seeds): wagon MAE,
  bias, 95% interval coverage, mAP50, covered_car F1;
- held-out sensor family (blur, banding, halos): the same figures;
- the real north scene ``../shared/real/muttenz_north.tif`` (one real scene, 78 cars):
  class-agnostic recall and precision of the counted vehicles at oriented IoU >= 0.3, the
  wagon count and its 95% interval, and the shift score (the INT8 graph's features feed the
  alarm);
- the forward time per tile of each precision over the same tiles.

    python scripts/exp_int8.py [--scenes 4] [--size 1024] [--out outputs/exp_int8]

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
    headline,
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
    parser.add_argument("--out", type=Path, default=Path("outputs/exp_int8"))
    args = parser.parse_args(argv)
    import bench_style_shift as bss  # scripts/ is on sys.path when run as a script

    base = {**training_scene_settings(), "size": [args.size, args.size]}
    sets = {"in_style": make_scenes(args.out / "scenes" / "in_style", args.scenes, args.seed,
                                    base),
            "sensor": make_scenes(args.out / "scenes" / "sensor", args.scenes, args.seed + 1,
                                  {**base, **bss.FAMILIES["heldout_sensor"]})}
    rows = []
    for precision in PRECISIONS:
        row: dict[str, Any] = {"precision": precision,
                               "ms_per_tile": round(forward_ms(sets["in_style"], precision), 1)}
        for name, scenes in sets.items():
            report = evaluate_condition(scenes, None, args.out / precision / name,
                                        {"backend": "openvino", "precision": precision})
            row |= {f"{name}_{k}": v for k, v in headline(report).items()
                    if k in ("wagon_mae", "wagon_bias", "coverage", "map50", "covered_f1")}
        if args.real.exists():
            row |= real_row(args.out / precision / "real", precision, args.real)
        rows.append(row)
        print(json.dumps(row), flush=True)
    write_text(args.out / "exp_int8.json", json.dumps(rows, indent=2))
    print(format_table(rows, list(rows[0])))


if __name__ == "__main__":
    guarded(main)
