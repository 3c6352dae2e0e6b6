"""Benchmark ``detector.infer`` on a generated scene, in one run, side by side with:

* SAHI ``get_sliced_prediction`` (same weights, slice size, overlap; best of several batch
  sizes) — throughput ratio and wagon counts against the generator's truth;
* the pure model forward pass over the very same tiles — detector.infer's overhead;
* peak RSS of detector.infer on a scene 4x larger (2x2 copies of the scene) vs the scene.

    python scripts/bench_infer.py --size 8000 [--weights BUNDLE.pt] [--device cpu|cuda:0]
    python scripts/bench_infer.py --size 1500 --sahi-batches 1,8   # a quick small try

SAHI gets the scene already decoded and stretched in memory (its reading is not timed);
detector.infer is timed from the file on disk through to its GeoJSON and counts JSON (no
quicklook). Both models are loaded before timing.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

from detector.config import compose
from detector.infer.api import config, run_config
from detector.infer.model import all_cores, load_bundle
from detector.infer.reader import read_tile
from detector.infer.scene import make_predictor, plan_scene
from detector.labels import read_geojson
from detector.raster import gdal_cache, to_uint8


def generate(workdir: Path, size: int, m_per_px: float, seed: int) -> tuple[Path, int]:
    """A synthetic scene of ``size`` px square and its true wagon count."""
    from detector.synth import write_scenes

    out = workdir / f"synth_{size}"
    tif = out / "scene_000.tif"
    if not tif.exists():
        write_scenes(compose("synth", [f"out={out}", "n_scenes=1", f"seed={seed}",
                                       f"size=[{size},{size}]", f"m_per_px={m_per_px}",
                                       "supersample=1", "vehicles.min=150",
                                       "vehicles.max=400", "vehicles.empty_prob=0"]))
    labels, _ = read_geojson(tif.with_suffix(".geojson"))
    return tif, sum(1 for p in labels if p.cls != "locomotive")


def tile_2x2(src_path: Path, dst_path: Path, rows: int = 1024) -> None:
    """Write a scene twice as wide and high (four copies), streaming strips of ``rows``."""
    if dst_path.exists():
        return
    with rasterio.open(src_path) as src:
        profile = src.profile | {"width": src.width * 2, "height": src.height * 2,
                                 "tiled": True, "blockxsize": 256, "blockysize": 256,
                                 "compress": "deflate"}
        with rasterio.open(dst_path, "w", **profile) as dst:
            for y in range(0, src.height, rows):
                h = min(rows, src.height - y)
                data = src.read(window=Window(0, y, src.width, h))
                for oy in (0, src.height):
                    for ox in (0, src.width):
                        dst.write(data, window=Window(ox, oy + y, src.width, h))


def time_detector(scene: Path, weights: str | None, device: str, out: Path) -> tuple[float, int]:
    """Seconds and wagon count of detector.infer on ``scene`` (model loaded beforehand)."""
    cfg = config(scene, weights, out=str(out), quicklook=False, progress=False, overwrite=True,
                 device=device)
    bundle = load_bundle(cfg.weights, cfg.device, cfg.half)
    predictor = make_predictor(bundle, cfg)
    predictor(np.zeros((1, 3, bundle.imgsz, bundle.imgsz), np.uint8))  # warm-up
    start = time.perf_counter()
    [res] = run_config(cfg, bundle, predictor)
    seconds = time.perf_counter() - start
    if not res.ok:
        raise SystemExit(f"detector.infer failed: {res.error}")
    return seconds, int(res.counts["wagons"]["count"])


def time_forward(scene: Path, weights: str | None, device: str) -> tuple[float, int, dict]:
    """Seconds of the bare model forward over the same tiles detector.infer reads."""
    cfg = config(scene, weights, device=device)
    bundle = load_bundle(cfg.weights, cfg.device, cfg.half)
    predictor = make_predictor(bundle, cfg)
    batch = int(cfg.batch or (32 if bundle.device.type == "cuda" else 8))
    with rasterio.open(scene) as src:
        plan = plan_scene(src, scene, bundle.card, cfg)
        tiles = [img for t in plan.tiles
                 if (img := read_tile(src, t, bundle.imgsz, plan.stretch)) is not None]
    images = np.stack(tiles)
    with all_cores(bundle.device), gdal_cache():  # as detector.infer runs it
        predictor.forward(images[:1])  # warm-up
        _sync(bundle.device)
        start = time.perf_counter()
        for k in range(0, len(images), batch):
            predictor.forward(images[k:k + batch])
        _sync(bundle.device)
    info = {"imgsz": bundle.imgsz, "tile_size": plan.tile_size, "overlap": plan.overlap,
            "card": bundle.card, "weights": str(bundle.weights), "stretch": plan.stretch}
    return time.perf_counter() - start, len(images), info


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def time_sahi(scene: Path, info: dict, device: str, batches: list[int]
              ) -> tuple[float, int, int, dict[int, float]]:
    """Best seconds over batch sizes, that batch, its wagon count, and all timings."""
    from sahi import AutoDetectionModel
    from sahi.predict import get_sliced_prediction

    card, stretch = info["card"], info["stretch"]
    with rasterio.open(scene) as src:
        data = src.read(stretch.bands)
        valid = src.read_masks(1) > 0
    image = np.ascontiguousarray(np.transpose(
        to_uint8(data, stretch.low, stretch.high, valid, stretch.fill), (1, 2, 0)))
    del data, valid
    model = AutoDetectionModel.from_pretrained(
        model_type="ultralytics", model_path=info["weights"],
        confidence_threshold=card.candidate_conf, device=device,
        image_size=info["imgsz"])
    size, overlap = info["tile_size"], info["overlap"]
    op = card.operating_threshold
    timings, counts = {}, {}
    for b in batches:
        start = time.perf_counter()
        result = get_sliced_prediction(
            image, model, slice_height=size, slice_width=size,
            overlap_height_ratio=overlap / size, overlap_width_ratio=overlap / size,
            perform_standard_pred=False, batch_size=b, verbose=0)
        timings[b] = time.perf_counter() - start
        counts[b] = sum(1 for p in result.object_prediction_list
                        if p.category.name != "locomotive"
                        and p.score.value >= _threshold(op, p.category.name))
    best = min(timings, key=timings.get)
    return timings[best], best, counts[best], timings


def _threshold(op, cls: str) -> float:
    if isinstance(op, dict):
        return float(op.get(cls, op.get("default", 0.5)))
    return float(op)


def peak_rss_mb(scene: Path, weights: str | None, device: str, out: Path) -> float:
    """Peak RSS (MB) of a fresh process running detector.infer on ``scene``."""
    # VmHWM, not ru_maxrss: a forked child's ru_maxrss starts at the parent's RSS (here the
    # SAHI run's decoded scene), while VmHWM belongs to the exec'd process alone.
    code = (
        "import json, re, sys\n"
        "from detector.infer import run\n"
        f"[r] = run({str(scene)!r}, {weights!r}, out={str(out)!r}, quicklook=False, "
        f"progress=False, overwrite=True, device={device!r})\n"
        "assert r.ok, r.error\n"
        "hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)\n"
        "print(json.dumps({'rss_mb': int(hwm) / 1024}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    return float(json.loads(proc.stdout.strip().splitlines()[-1])["rss_mb"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8000, help="scene side in pixels")
    parser.add_argument("--m-per-px", type=float, default=0.5)
    parser.add_argument("--weights", default=None, help="bundle .pt (default: bundled model)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--sahi-batches", default="1,4,8,16")
    parser.add_argument("--skip-sahi", action="store_true")
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keeps generated scenes between runs (default: a temp folder)")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_infer_"))
    workdir.mkdir(parents=True, exist_ok=True)
    device = args.device

    scene, truth = generate(workdir, args.size, args.m_per_px, args.seed)
    print(f"scene {scene} ({args.size}x{args.size} px at {args.m_per_px} m), "
          f"true wagons {truth}")
    t_infer, n_infer = time_detector(scene, args.weights, device, workdir / "out")
    t_fwd, n_tiles, info = time_forward(scene, args.weights, device)
    print(f"tiles with data: {n_tiles} of {info['imgsz']} px, overlap {info['overlap']} px")
    rows = [("detector.infer", t_infer, n_infer)]
    print(f"detector.infer      {t_infer:8.2f} s  {n_tiles / t_infer:7.2f} tiles/s  "
          f"wagons {n_infer} (truth {truth})")
    print(f"model forward only  {t_fwd:8.2f} s  overhead of detector.infer "
          f"{100 * (t_infer / t_fwd - 1):+.1f}%  (target <= +25%)")
    if not args.skip_sahi:
        batches = [int(b) for b in args.sahi_batches.split(",")]
        t_sahi, best, n_sahi, timings = time_sahi(scene, info, device, batches)
        rows.append(("sahi", t_sahi, n_sahi))
        print("sahi get_sliced_prediction  " + "  ".join(
            f"batch {b}: {t:.2f} s" for b, t in timings.items()))
        print(f"sahi (batch {best:>2})       {t_sahi:8.2f} s  {n_tiles / t_sahi:7.2f} tiles/s  "
              f"wagons {n_sahi} (truth {truth})")
        print(f"throughput detector.infer / sahi: {t_sahi / t_infer:.2f}x  (target >= 2x)")
    if not args.skip_rss:
        big = workdir / f"scene_{2 * args.size}.tif"
        tile_2x2(scene, big)
        rss_small = peak_rss_mb(scene, args.weights, device, workdir / "rss")
        rss_big = peak_rss_mb(big, args.weights, device, workdir / "rss")
        print(f"peak RSS {args.size}^2: {rss_small:.0f} MB, {2 * args.size}^2 (4x area): "
              f"{rss_big:.0f} MB, ratio {rss_big / rss_small:.2f}x  (target <= 1.2x)")
    print("wagons vs truth: " + ", ".join(f"{name} {n} ({n - truth:+d})"
                                          for name, _, n in rows) + f", truth {truth}")


if __name__ == "__main__":
    main()
