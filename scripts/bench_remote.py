"""Benchmark counting a COG over HTTP against the same file on disk, in one run.

The dense generated scene of ``scripts/bench_infer.py`` (``--size`` px square, default
8000) is written as a Cloud-Optimized GeoTIFF and served on 127.0.0.1 by
``detector.serve`` (HTTP Range requests; ``--latency-ms`` delays every request, as a
distant server would). ``detector.infer`` then counts it four ways with one loaded model
(the bundled one): the local file and the URL, each whole and with an AOI of 10% of the
scene. Printed: wall time, bytes fetched over HTTP and their share of the file, and the
ratios remote/local.

    python scripts/bench_remote.py --size 8000 --workdir /tmp/bench    # the full benchmark
    python scripts/bench_remote.py --quick                            # 2000 px, seconds

Run it on a quiet machine: wall times are wall-clock.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import rasterio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_infer import generate  # noqa: E402 - the dense scene, one copy

from detector.infer.api import config, run_config  # noqa: E402
from detector.infer.model import load_bundle  # noqa: E402
from detector.infer.scene import make_predictor  # noqa: E402
from detector.publish import write_cog  # noqa: E402
from detector.serve import RangeServer  # noqa: E402


def centre_aoi(path: Path, tif: Path, share: float = 0.1) -> Path:
    """A square AOI of ``share`` of the scene's area at its centre, in the scene's CRS."""
    with rasterio.open(tif) as src:
        (left, bottom, right, top), crs = src.bounds, src.crs
    cx, cy = (left + right) / 2, (bottom + top) / 2
    half = (right - left) * share ** 0.5 / 2
    ring = [[cx - half, cy - half], [cx + half, cy - half], [cx + half, cy + half],
            [cx - half, cy + half], [cx - half, cy - half]]
    path.write_text(json.dumps({
        "type": "FeatureCollection", "crs": {"type": "name",
                                             "properties": {"name": crs.to_string()}},
        "features": [{"type": "Feature", "properties": {},
                      "geometry": {"type": "Polygon", "coordinates": [ring]}}]}))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8000)
    parser.add_argument("--quick", action="store_true", help="a 2000 px scene")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--m-per-px", type=float, default=0.3)
    parser.add_argument("--latency-ms", type=float, default=0.0,
                        help="delay added to every HTTP request")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    size = 2000 if args.quick else args.size
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_remote_"))
    workdir.mkdir(parents=True, exist_ok=True)

    tif, truth = generate(workdir, "dense", size, args.m_per_px, seed=0)
    served = workdir / f"cog_{size}"
    served.mkdir(exist_ok=True)
    cog = served / "dense.tif"
    if not cog.exists():
        write_cog(tif, cog, blocksize=512)
    aoi = centre_aoi(workdir / "aoi_10pct.geojson", cog)
    file_bytes = cog.stat().st_size

    server = RangeServer(served).start()
    if args.latency_ms:
        server.fault = lambda path, sent: time.sleep(args.latency_ms / 1000) or None
    bundle = load_bundle(None, args.device)
    base = config(str(cog), None, out=str(workdir / "out"), progress=False, quicklook=True,
                  overwrite=True, device=args.device)
    predictor = make_predictor(bundle, base)
    runs = {}
    for label, source, area in [("local whole", str(cog), None),
                                ("remote whole", f"{server.url}/dense.tif", None),
                                ("local AOI 10%", str(cog), str(aoi)),
                                ("remote AOI 10%", f"{server.url}/dense.tif", str(aoi))]:
        cfg = config(source, None, out=str(workdir / "out" / label.replace(" ", "_")),
                     progress=False, quicklook=True, overwrite=True, device=args.device,
                     aoi=area)
        server.reset()
        start = time.perf_counter()
        [res] = run_config(cfg, bundle, predictor)
        wall = time.perf_counter() - start
        if not res.ok:
            raise SystemExit(f"{label}: {res.error}")
        fetched = server.bytes_sent if source.startswith("http") else 0
        runs[label] = (wall, fetched, res.counts["wagons"]["count"], res.counts["tiles"],
                       server.requests)
    server.stop()

    print(f"scene {size}x{size} px dense ({truth} wagons drawn), COG {file_bytes / 1e6:.1f} MB "
          f"(512 px blocks, overviews), loopback latency +{args.latency_ms:g} ms/request")
    print(f"{'run':16} {'wall s':>8} {'MB fetched':>11} {'of file':>8} {'requests':>9} "
          f"{'tiles':>6} {'wagons':>7}")
    for label, (wall, fetched, wagons, tiles, requests) in runs.items():
        remote = label.startswith("remote")
        print(f"{label:16} {wall:8.2f} {fetched / 1e6 if remote else 0:11.2f} "
              f"{fetched / file_bytes if remote else 0:8.1%} "
              f"{requests if remote else '':>9} {tiles:6d} {wagons:7d}")
    for what in ("whole", "AOI 10%"):
        local, remote = runs[f"local {what}"], runs[f"remote {what}"]
        print(f"{what}: remote/local wall {remote[0] / local[0]:.2f}x, "
              f"same count: {remote[2] == local[2]}")
    print(f"AOI 10% fetched {runs['remote AOI 10%'][1] / runs['remote whole'][1]:.1%} of the "
          "bytes of the whole-scene run")


if __name__ == "__main__":
    main()
