"""Benchmark ``detector.infer`` at the hardware limit, in one run, and print the ratios.

On a generated dense scene and a sparse one (``--size`` px square, default 8000):

* ``python -m detector.infer`` as a whole process (start-up and quicklook included, exports
  cached by a warm-up run), at the default precision (``auto``: INT8 on OpenVINO where NNCF
  is installed) and at FP32, vs SAHI ``get_sliced_prediction`` predict-only (scene already
  decoded and stretched in memory) as shipped (its defaults: batch 1, torch's default
  threads) and with every core (all cores, best of ``--sahi-batches``); same weights, slice
  size and overlap;
* the pure forward pass of each installed backend (torch, ONNX Runtime, OpenVINO FP32 and
  INT8) over the very same tiles: the whole process should take at most 1.25x the forward of
  its backend; and the parts around it: stretch, overview, quicklook (target < 0.3 s);
* start-up: ``python -m detector.infer`` on a tiny scene (target < 1.5 s with OpenVINO), its
  import time, and whether torch or matplotlib were imported (they must not be);
* counting time vs number of candidates (1k, 5k, 20k; target under 1 s at 20k);
* peak RSS of detector.infer on the dense scene and on a 2x2 copy (4x the area; target
  at most 1.2x).

    python scripts/bench_infer.py --size 8000 --workdir /tmp/bench   # the full benchmark
    python scripts/bench_infer.py --quick                           # a 1500 px smoke run

SAHI comes with ``pip install -e '.[bench]'``; INT8 needs ``nncf`` (also in ``bench``).

Run it on a quiet machine: every figure is wall-clock time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

from detector.bundle import ModelCard, threshold_for
from detector.config import compose
from detector.infer.api import config
from detector.infer.backends import BACKENDS, installed, resolve_backend
from detector.infer.counting import summarize_counts
from detector.infer.model import all_cores, load_bundle, pick_device
from detector.infer.reader import read_tile
from detector.infer.scene import make_predictor, plan_scene
from detector.labels import read_geojson, to_pixel
from detector.raster import gdal_cache, to_uint8

# Vehicles drawn per 8000² px scene (min, max); scaled with the area for other sizes.
SCENES = {"dense": (600, 900), "sparse": (20, 60)}


def generate(workdir: Path, kind: str, size: int, m_per_px: float, seed: int
             ) -> tuple[Path, int]:
    """A synthetic ``kind`` scene of ``size`` px square and its true wagon count."""
    from detector.synth import write_scenes

    out = workdir / f"synth_{kind}_{size}"
    tif = out / "scene_000.tif"
    if not tif.exists():
        lo, hi = (max(1, round(n * (size / 8000) ** 2)) for n in SCENES[kind])
        write_scenes(compose("synth", [f"out={out}", "n_scenes=1", f"seed={seed}",
                                       f"size=[{size},{size}]", f"m_per_px={m_per_px}",
                                       "supersample=1", f"vehicles.min={lo}",
                                       f"vehicles.max={hi}", "vehicles.empty_prob=0"]))
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


def whole_process(scene: Path, weights: str | None, device: str, backend: str, out: Path,
                  precision: str = "auto") -> tuple[float, dict]:
    """Wall seconds of ``python -m detector.infer`` on ``scene`` and its counts JSON."""
    cmd = [sys.executable, "-m", "detector.infer", f"source={scene}", f"out={out}",
           "progress=false", "overwrite=true", f"device={device}", f"precision={precision}",
           f"backend={backend}", *([f"weights={weights}"] if weights else [])]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"detector.infer failed: {proc.stderr.strip().splitlines()[-1:]}")
    return seconds, json.loads((out / f"{scene.stem}.counts.json").read_text())


def scene_tiles(scene: Path, weights: str | None, device: str) -> tuple[np.ndarray, dict]:
    """The tiles detector.infer feeds the model (with data), and what SAHI needs to match."""
    cfg = config(scene, weights, device=device, backend="torch")
    bundle = load_bundle(cfg.weights, cfg.device, cfg.half)
    with rasterio.open(scene) as src:
        plan = plan_scene(src, scene, bundle.card, cfg)
        tiles = [img for t in plan.tiles
                 if (img := read_tile(src, t, bundle.imgsz, plan.stretch)) is not None]
    info = {"imgsz": bundle.imgsz, "tile_size": plan.tile_size, "overlap": plan.overlap,
            "card": bundle.card, "weights": str(bundle.weights), "stretch": plan.stretch}
    return np.stack(tiles), info


def time_forward(images: np.ndarray, weights: str | None, device: str, backend: str,
                 precision: str = "fp32") -> float:
    """Seconds of the bare forward pass of ``backend`` over ``images`` (export cached)."""
    cfg = config(None, weights, device=device, backend=backend, precision=precision)
    bundle = load_bundle(cfg.weights, cfg.device, cfg.half)
    predictor = make_predictor(bundle, cfg)
    batch = int(cfg.batch or (32 if bundle.device.type == "cuda" else 8))
    with all_cores(bundle.device), gdal_cache():  # as detector.infer runs it
        predictor.forward(images[:batch])  # warm-up
        _sync(bundle.device)
        start = time.perf_counter()
        for k in range(0, len(images), batch):
            predictor.forward(images[k:k + batch])
        _sync(bundle.device)
    return time.perf_counter() - start


def installed_nncf() -> bool:
    import importlib.util

    return importlib.util.find_spec("nncf") is not None


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def time_sahi(scene: Path, info: dict, device: str, batches: list[int], every_core: bool
              ) -> tuple[float, int, int]:
    """Best seconds over ``batches`` (None: SAHI's default), that batch, its wagon count."""
    import torch
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
    threads = torch.get_num_threads()
    if every_core:
        torch.set_num_threads(len(os.sched_getaffinity(0)))
    size, overlap = info["tile_size"], info["overlap"]
    op = card.operating_threshold
    timings, counts = {}, {}
    for b in batches:
        start = time.perf_counter()
        result = get_sliced_prediction(
            image, model, slice_height=size, slice_width=size,
            overlap_height_ratio=overlap / size, overlap_width_ratio=overlap / size,
            perform_standard_pred=False, verbose=0, **({"batch_size": b} if b else {}))
        timings[b] = time.perf_counter() - start
        counts[b] = sum(1 for p in result.object_prediction_list
                        if p.category.name != "locomotive"
                        and p.score.value >= threshold_for(op, p.category.name))
    torch.set_num_threads(threads)
    best = min(timings, key=timings.get)
    return timings[best], best or 1, counts[best]


def time_counting(card: ModelCard, n: int, seed: int = 0) -> float:
    """Seconds to count ``n`` candidates with the card's recall, its posterior and dispersion."""
    rng = np.random.default_rng(seed)
    classes = list(card.classes)
    scores = rng.uniform(float(card.candidate_conf), 1.0, n)
    cls = rng.choice(classes, n)
    start = time.perf_counter()
    summarize_counts(classes, cls, scores, scores, card.operating_threshold,
                     card.recall_at_candidate_conf, tuple(card.not_wagons),
                     recall_evidence=card.recall_counts, dispersion=card.dispersion)
    return time.perf_counter() - start


def peak_rss_mb(scene: Path, weights: str | None, device: str, backend: str, out: Path
                ) -> float:
    """Peak RSS (MB) of a fresh process running detector.infer on ``scene``."""
    # VmHWM, not ru_maxrss: a forked child's ru_maxrss starts at the parent's RSS (here the
    # SAHI run's decoded scene), while VmHWM belongs to the exec'd process alone.
    code = (
        "import json, re, sys\n"
        "from detector.infer import run\n"
        f"[r] = run({str(scene)!r}, {weights!r}, out={str(out)!r}, quicklook=False, "
        f"progress=False, overwrite=True, device={device!r}, backend={backend!r})\n"
        "assert r.ok, r.error\n"
        "hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)\n"
        "print(json.dumps({'rss_mb': int(hwm) / 1024}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    return float(json.loads(proc.stdout.strip().splitlines()[-1])["rss_mb"])


def time_parts(scene: Path, weights: str | None, images: np.ndarray, info: dict,
               backend: str) -> dict[str, float]:
    """Seconds of the parts around the forward: stretch, overview, quicklook, postprocess."""
    from detector.infer.quicklook import Overview, render_quicklook
    from detector.raster import scene_stretch

    card = info["card"]
    parts: dict[str, float] = {}
    with rasterio.open(scene) as src:
        start = time.perf_counter()
        scene_stretch(src, dict(card.normalization))
        parts["stretch"] = time.perf_counter() - start
        cfg = config(scene, weights, device="cpu", backend="torch")
        overview = Overview(src.width, src.height, int(cfg.quicklook_max_side))
        plan = plan_scene(src, scene, card, cfg)
        start = time.perf_counter()  # tiles and images pair up only roughly: a timing
        for tile, image in zip(plan.tiles, images, strict=False):
            overview.paste(tile, image)
        parts["overview (reader thread)"] = time.perf_counter() - start
        labels, crs = read_geojson(scene.with_suffix(".geojson"))  # as many boxes as cars
        corners = [p.corners for p in to_pixel(labels, crs, src.crs, src.transform, scene)]
        names = [card.classes[0]] * len(corners)
        fake = {"scene": str(scene), "wagons": {"count": len(corners), "ci95": [0, 0]},
                "classes": {card.classes[0]: {"count": len(corners), "ci95": [0, 0]}}}
        start = time.perf_counter()
        render_quicklook(scene.parent / "bench_quicklook.png", overview, src, plan.stretch,
                         corners, names, fake, list(card.classes),
                         float(cfg.quicklook_inset_m) / plan.m_per_px)
        parts["quicklook render"] = time.perf_counter() - start
    return parts


def startup(workdir: Path, weights: str | None, device: str, backend: str, runs: int = 3
            ) -> tuple[float, float, list[str]]:
    """Best wall seconds of ``python -m detector.infer`` on a tiny scene, the import time of
    its modules, and which of torch/ultralytics/matplotlib it imported."""
    from detector.raster import write_geotiff

    scene = workdir / "tiny" / "tiny.tif"
    if not scene.exists():
        from affine import Affine

        data = np.random.default_rng(0).integers(0, 255, (3, 300, 300), np.uint8)
        write_geotiff(scene, data, Affine(0.5, 0, 600000, 0, -0.5, 5200000), "EPSG:32632")
    cmd = [sys.executable, "-X", "importtime", "-m", "detector.infer", f"source={scene}",
           f"out={workdir / 'tiny' / 'out'}", "progress=false", "overwrite=true",
           f"device={device}", f"backend={backend}", *([f"weights={weights}"] if weights else [])]
    best, imports, heavy = float("inf"), 0.0, set()
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"detector.infer failed: {proc.stderr.strip().splitlines()[-1:]}")
        lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("import time:")]
        total = sum(int(ln.split("|")[0].split(":")[1]) for ln in lines if "|" in ln
                    and ln.split("|")[0].split(":")[1].strip().isdigit()) / 1e6
        names = {ln.rsplit("|", 1)[-1].strip().split(".")[0] for ln in lines}
        heavy |= names & {"torch", "ultralytics", "matplotlib"}
        if seconds < best:
            best, imports = seconds, total
    return best, imports, sorted(heavy)


def bench_scene(kind: str, args: argparse.Namespace, workdir: Path, backend: str
                ) -> dict[str, float]:
    """Every timing of one scene; prints them and returns the ratios."""
    scene, truth = generate(workdir, kind, args.size, args.m_per_px, args.seed)
    out = workdir / f"out_{kind}"
    whole: dict[str, tuple[float, dict]] = {}
    for precision in ("fp32", "auto"):  # auto: the default (INT8 on OpenVINO with NNCF;
        # on a GPU both run torch, fp16 where half is on)
        whole_process(scene, args.weights, args.device, backend, out, precision)  # warm-up
        whole[precision] = whole_process(scene, args.weights, args.device, backend, out,
                                         precision)
    t_whole, counts = whole["auto"]
    images, info = scene_tiles(scene, args.weights, args.device)
    print(f"\n[{kind}] {scene} ({args.size}x{args.size} px at {args.m_per_px} m), "
          f"{len(images)} tiles with data, true wagons {truth}")
    for precision, (seconds, c) in whole.items():
        print(f"  detector.infer whole process ({c['backend']} {c.get('precision')}"
              f"{', the default' if precision == 'auto' else ''}) {seconds:8.2f} s  "
              f"wagons {c['wagons']['count']} ci95 {c['wagons']['ci95']}")
    forwards = {}
    runs = [(name, "fp32") for name in BACKENDS
            if installed(name) and (name == "torch" or pick_device(args.device).type == "cpu")]
    if ("openvino", "fp32") in runs and not args.skip_int8 and installed_nncf():
        runs.append(("openvino", "int8"))
    for name, precision in runs:
        key = name if precision == "fp32" else f"{name}-{precision}"
        forwards[key] = time_forward(images, args.weights, args.device, name, precision)
        print(f"  forward only, {key:<14}    {forwards[key]:8.2f} s  "
              f"({1000 * forwards[key] / len(images):.1f} ms/tile)")
    for part, seconds in time_parts(scene, args.weights, images, info, backend).items():
        print(f"  {part:<36} {seconds:8.3f} s")
    used = f"{backend}-int8" if counts.get("precision") == "int8" else backend
    if used not in forwards:  # --skip-int8 while the default ran INT8
        forwards[used] = time_forward(images, args.weights, args.device, backend, "int8")
    ratios = {f"{kind}: whole / forward({used})": t_whole / forwards[used],
              f"{kind}: whole fp32 / forward({backend})": whole["fp32"][0] / forwards[backend]}
    if "openvino-int8" in forwards:
        ratios[f"{kind}: forward fp32 / int8 (openvino)"] = (forwards["openvino"]
                                                            / forwards["openvino-int8"])
    if not args.skip_sahi:
        shipped, _, n_shipped = time_sahi(scene, info, args.device, [0], False)
        batches = [int(b) for b in args.sahi_batches.split(",")]
        cores, best, n_cores = time_sahi(scene, info, args.device, batches, True)
        print(f"  SAHI as shipped (batch 1)            {shipped:8.2f} s  wagons {n_shipped}")
        print(f"  SAHI every core (batch {best:>2})          {cores:8.2f} s  wagons {n_cores}")
        ratios[f"{kind}: SAHI shipped / whole"] = shipped / t_whole
        ratios[f"{kind}: SAHI every core / whole"] = cores / t_whole
        ratios[f"{kind}: SAHI shipped / whole fp32"] = shipped / whole["fp32"][0]
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8000, help="scene side in pixels")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 1500 px scenes, SAHI at batch 8 only")
    parser.add_argument("--m-per-px", type=float, default=0.5)
    parser.add_argument("--weights", default=None, help="bundle .pt (default: bundled model)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--backend", default="auto", help="backend of the whole-process runs")
    parser.add_argument("--sahi-batches", default="1,4,8,16")
    parser.add_argument("--skip-sahi", action="store_true")
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument("--skip-int8", action="store_true",
                        help="no OpenVINO INT8 forward timing (its export takes 30-50 s "
                             "the first time)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keeps generated scenes between runs (default: a temp folder)")
    args = parser.parse_args()
    if args.quick:
        args.size, args.sahi_batches = min(args.size, 1500), "8"
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_infer_"))
    workdir.mkdir(parents=True, exist_ok=True)
    backend = resolve_backend(args.backend, pick_device(args.device))
    print(f"{os.cpu_count()} CPUs, device {args.device}, backend {backend}")

    ratios: dict[str, float] = {}
    seconds, imports, heavy = startup(workdir, args.weights, args.device, backend)
    print(f"start-up on a 300x300 px scene ({backend}): {seconds:.2f} s, imports "
          f"{imports:.2f} s, heavy modules imported: {', '.join(heavy) or 'none'}")
    ratios["start-up on a tiny scene, s"] = seconds
    for kind in SCENES:
        ratios |= bench_scene(kind, args, workdir, backend)

    card = load_bundle(args.weights, "cpu").card
    print("\ncounting (per-class intervals, recall posterior, wagons total):")
    for n in (1000, 5000, 20000):
        seconds = time_counting(card, n)
        print(f"  {n:>6} candidates  {seconds:6.3f} s")
    ratios["counting 20k candidates, s"] = seconds

    if not args.skip_rss:
        scene, _ = generate(workdir, "dense", args.size, args.m_per_px, args.seed)
        big = workdir / f"dense_{2 * args.size}.tif"
        tile_2x2(scene, big)
        small = peak_rss_mb(scene, args.weights, args.device, backend, workdir / "rss")
        large = peak_rss_mb(big, args.weights, args.device, backend, workdir / "rss")
        print(f"\npeak RSS {args.size}^2: {small:.0f} MB, {2 * args.size}^2: {large:.0f} MB")
        ratios[f"peak RSS {2 * args.size}^2 / {args.size}^2"] = large / small

    targets = {"whole / forward": "<= 1.25", "SAHI shipped / whole": ">= 2.5",
               "SAHI every core / whole": ">= 2", "counting": "< 1 s", "peak RSS": "<= 1.2",
               "start-up": "< 1.5 s"}
    print("\nratios (target):")
    for name, value in ratios.items():
        target = next((t for key, t in targets.items() if key in name), "")
        print(f"  {name:<42} {value:7.2f}  ({target})")


if __name__ == "__main__":
    main()
