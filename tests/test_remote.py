"""Remote imagery on loopback: COGs over HTTP (``detector.serve``, a Range server the
fixtures start on 127.0.0.1), a real STAC API (``rustac serve``, in-memory backend) and
STAC files, through ``detector.infer`` and ``detector.monitor`` with the stand-in model.

Marked ``slow`` and ``remote`` (servers and GDAL's network stack); each test takes seconds.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
from affine import Affine
from test_infer_pipeline import fake_bundle, fake_predictor, planted_scene

from detector.errors import DetectorError
from detector.infer.api import config, run_config
from detector.infer.model import TileDetections
from detector.publish import publish, write_cog
from detector.serve import RangeServer
from tests.helpers import UTM

pytestmark = [pytest.mark.slow, pytest.mark.remote]
TOKEN = "X-Amz-Signature=SECRET123"


@pytest.fixture
def fast_retries(monkeypatch):
    """GDAL's retry settings from the environment (scene_env leaves them alone): one quick
    retry, so a failing server fails a test in well under a second."""
    monkeypatch.setenv("GDAL_HTTP_MAX_RETRY", "1")
    monkeypatch.setenv("GDAL_HTTP_RETRY_DELAY", "0.05")
    monkeypatch.setenv("GDAL_HTTP_TIMEOUT", "10")


@pytest.fixture
def server(tmp_path, fast_retries):
    """A Range-capable file server over ``tmp_path/www`` on 127.0.0.1, stopped after."""
    root = tmp_path / "www"
    root.mkdir()
    srv = RangeServer(root).start()
    yield srv
    srv.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def stac_api():
    """Factory: ``stac_api(collection.json)`` starts a STAC API (rustac's server, in-memory
    backend) loaded with the collection and its items; returns its URL. Stopped after."""
    procs = []

    def start(collection: Path) -> str:
        exe = shutil.which("rustac") or str(Path(sys.executable).parent / "rustac")
        port = free_port()
        # rustac resolves item links against its working folder: run it in the catalog's.
        proc = subprocess.Popen([exe, "serve", collection.name, "--load-collection-items",
                                 "--addr", f"127.0.0.1:{port}"], cwd=collection.parent,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(url + "/collections", timeout=1).read()
                return url
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"rustac serve did not start: "
                                       f"{proc.stderr.read().decode()[-500:]}") from None
                time.sleep(0.05)

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=10)


def infer(out, source=None, predictor=fake_predictor, **overrides):
    cfg = config(source, None, out=str(out), progress=False, **overrides)
    return run_config(cfg, fake_bundle(), predictor)


def blind_predictor(images: np.ndarray) -> list[TileDetections]:
    """Finds nothing, at once: for tests about what is read, not what is found."""
    return [TileDetections(np.zeros((0, 4, 2)), np.zeros(0), np.zeros(0, int)) for _ in images]


def same_counts(a: dict, b: dict) -> bool:
    keep = set(a) - {"scene", "seconds", "stac", "inputs"}  # inputs: the scene's own identity
    return {k: a[k] for k in keep} == {k: b[k] for k in keep}


def cog(path: Path, **kwargs) -> Path:
    """A planted scene (cars of known places) written as a COG at ``path``."""
    raw = path.with_name(path.stem + ".raw.tif")
    planted_scene(raw, **kwargs)
    write_cog(raw, path, blocksize=128)
    raw.unlink()
    return path


def aoi_file(path: Path, x0: float, y0: float, x1: float, y1: float, crs: str = "EPSG:32652"
             ) -> Path:
    ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
    path.write_text(json.dumps({
        "type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": crs}},
        "features": [{"type": "Feature", "properties": {},
                      "geometry": {"type": "Polygon", "coordinates": [ring]}}]}))
    return path


# --- the server ------------------------------------------------------------------------

def test_server_answers_single_and_multi_range_requests(server):
    data = bytes(range(256)) * 40
    (server.root / "f.bin").write_bytes(data)
    req = urllib.request.Request(server.url + "/f.bin", headers={"Range": "bytes=10-19"})
    with urllib.request.urlopen(req) as resp:
        assert resp.status == 206 and resp.read() == data[10:20]
    req = urllib.request.Request(server.url + "/f.bin",
                                 headers={"Range": "bytes=0-3,100-103"})
    with urllib.request.urlopen(req) as resp:
        body = resp.read()
        assert "multipart/byteranges" in resp.headers["Content-Type"]
        assert int(resp.headers["Content-Length"]) == len(body)
    assert data[0:4] in body and data[100:104] in body
    # the handler thread counts a part after writing it: the client can finish reading first
    import time

    deadline = time.monotonic() + 5
    while server.bytes_sent < 18 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.bytes_sent == 18


# --- COGs over HTTP ------------------------------------------------------------------------

def test_counts_over_http_equal_counts_on_disk_and_record_no_token(tmp_path, server):
    scene = cog(server.root / "yard.tif", size=(700, 520))
    [local] = infer(tmp_path / "local", scene)
    [remote] = infer(tmp_path / "remote", f"{server.url}/yard.tif?{TOKEN}")
    assert local.ok and remote.ok, remote.error
    assert local.counts["wagons"]["count"] > 0 and same_counts(local.counts, remote.counts)
    assert remote.counts["scene"] == f"{server.url}/yard.tif"
    assert remote.name.startswith("yard_")
    for path in (tmp_path / "remote").iterdir():
        assert "SECRET" not in path.read_text(errors="ignore")
    assert (json.loads(local.outputs["geojson"].read_text())["features"]
            == json.loads(remote.outputs["geojson"].read_text())["features"])


def test_aoi_of_a_tenth_fetches_a_small_fraction_of_the_file(tmp_path, server):
    rng = np.random.default_rng(0)
    side = 4096  # noise: every block costs its full size, so bytes follow area
    profile = {"driver": "COG", "width": side, "height": side, "count": 1, "dtype": "uint8",
               "crs": UTM, "transform": Affine(0.5, 0, 500000, 0, -0.5, 4700000),
               "compress": "deflate", "blocksize": 256}
    path = server.root / "big.tif"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(rng.integers(0, 255, (1, side, side), np.uint8))
    with rasterio.open(path) as src:  # bytes of the full-resolution blocks
        full = sum(int(src.get_tag_item(f"BLOCK_SIZE_{x}_{y}", "TIFF", bidx=1))
                   for x in range(side // 256) for y in range(side // 256))
    # 0.1 of the scene's area: a 1295 x 1295 px square in the middle, in map metres.
    half = 0.5 * side * 0.5 * np.sqrt(0.1)
    cx, cy = 500000 + side * 0.25, 4700000 - side * 0.25
    aoi = aoi_file(tmp_path / "aoi.geojson", cx - half, cy - half, cx + half, cy + half)
    server.reset()
    [res] = infer(tmp_path / "out", f"{server.url}/big.tif", blind_predictor, aoi=str(aoi),
                  bands=[1], quicklook=False)
    assert res.ok, res.error
    fetched = server.bytes_sent
    # The AOI's blocks (10% plus the overlap margin, to 256 px blocks: ~14%) and the 4x
    # overview for the stretch; measured 25.5%.
    assert 0.1 * full < fetched < 0.3 * full, f"fetched {fetched / full:.1%} of the scene"
    server.reset()
    # Another query string: GDAL's cache of what it fetched is keyed by the whole URL.
    [whole] = infer(tmp_path / "whole", f"{server.url}/big.tif?run=2", blind_predictor,
                    bands=[1], quicklook=False)
    assert whole.counts["tiles"] > 8 * res.counts["tiles"]
    # Every full-resolution block once (and the overview), not twice.
    assert full < server.bytes_sent < 1.15 * full, f"{server.bytes_sent / full:.2f}x"


def test_unreachable_missing_forbidden_and_striped_fail_with_one_line(tmp_path, server):
    planted_scene(server.root / "striped.tif", size=(900, 300), tiled=False)
    cog(server.root / "ok.tif")
    bad = {"missing.tif": "not found (HTTP 404)",
           "striped.tif": "striped GeoTIFF (no internal tiles, blocks 900x"}
    for name, words in bad.items():
        [res] = infer(tmp_path / "out", f"{server.url}/{name}?{TOKEN}")
        assert not res.ok and words in res.error and "\n" not in res.error
        assert res.error.startswith(f"{server.url}/{name}:") and "SECRET" not in res.error
        assert not list((tmp_path / "out").glob(f"{Path(name).stem}_*.counts.json"))
    assert "gdal_translate -of COG" in res.error  # the fix for the striped file
    server.fault = lambda path, sent: 403
    [res] = infer(tmp_path / "out", f"{server.url}/ok.tif?sig=1")
    assert not res.ok and "access denied (HTTP 403)" in res.error and "netrc" in res.error
    server.fault = None
    [res] = infer(tmp_path / "out", f"http://127.0.0.1:{free_port()}/ok.tif")
    assert not res.ok and "connection failed or dropped" in res.error


def test_a_connection_dropped_mid_scene_fails_cleanly_and_a_rerun_resumes(tmp_path, server):
    for name in ("a", "b"):
        cog(server.root / f"{name}.tif", size=(800, 600), seed=ord(name))
    listing = tmp_path / "scenes.txt"
    listing.write_text(f"{server.url}/a.tif?{TOKEN}\n{server.url}/b.tif?{TOKEN}\n")
    state = {"b_requests": 0}

    def drop_b_midway(path: str, sent: int) -> str | None:
        if "/b.tif" not in path:
            return None
        state["b_requests"] += 1
        return "drop" if state["b_requests"] > 2 else None  # the header and overview, then gone

    server.fault = drop_b_midway
    out = tmp_path / "out"
    first = infer(out, listing)
    assert [r.ok for r in first] == [True, False]
    error = first[1].error
    assert error.startswith(f"{server.url}/b.tif: the connection failed or dropped")
    assert "rerun the same command" in error and "SECRET" not in error and "\n" not in error
    name_b = first[1].name
    assert not (out / f"{name_b}.counts.json").exists()
    assert not list(out.glob(".*partial*"))  # nothing half-written
    summary = json.loads((out / "summary.json").read_text())
    assert summary["done"] == 1 and summary["failed"] == 1
    server.fault = None  # the server comes back
    second = infer(out, listing)
    assert [r.status for r in second] == ["skipped", "ok"]
    [local] = infer(tmp_path / "local", server.root / "b.tif")
    assert same_counts(second[1].counts, local.counts)
    assert json.loads((out / "summary.json").read_text())["done"] == 2


def test_cli_exits_2_with_one_line_for_a_missing_url(tmp_path, server, cli_env,
                                                     untrained_models):
    out = tmp_path / "out"
    proc = subprocess.run(
        # A URL with '=' in its query string is quoted for Hydra's override grammar.
        [sys.executable, "-m", "detector.infer", f"source='{server.url}/nope.tif?{TOKEN}'",
         f"weights={untrained_models['obb']}", f"out={out}", "progress=false",
         "hydra.run.dir=" + str(tmp_path / "hydra"), "backend=torch"],
        capture_output=True, text=True, env={**cli_env, "GDAL_HTTP_MAX_RETRY": "0"},
        cwd=tmp_path, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and f"{server.url}/nope.tif: not found" in lines[0]
    assert "SECRET" not in proc.stderr + proc.stdout
    assert not list(out.glob("*.counts.json"))


# --- STAC ----------------------------------------------------------------------------------

PASSES = {  # item id: (date, seed, cloud cover %, off-nadir degrees)
    "pass-2019": ("2019-05-01", 1, 5.0, 8.0),
    "pass-2020": ("2020-05-01", 2, 60.0, 8.0),
    "pass-2021": ("2021-05-01", 3, 10.0, 35.0),
    "pass-2022": ("2022-05-01", 4, 0.0, 12.0),
}


@pytest.fixture
def stac_site(tmp_path, server):
    """Four dated planted scenes published as COGs on ``server`` with a STAC collection
    (cloud cover and off-nadir set per item); returns (collection.json, AOI in UTM)."""
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    for item_id, (_day, seed, _, _) in PASSES.items():
        planted_scene(scenes / f"{item_id}.tif", size=(420, 320), seed=seed)
    (scenes / "dates.csv").write_text("scene,date\n" + "".join(
        f"{k}.tif,{v[0]}\n" for k, v in PASSES.items()))
    collection = publish([scenes], server.root, server.url, collection="yard")
    for path in server.root.glob("pass-*/pass-*.json"):
        item = json.loads(path.read_text())
        _, _, cloud, off_nadir = PASSES[item["id"]]
        item["properties"].update({"eo:cloud_cover": cloud, "view:off_nadir": off_nadir})
        path.write_text(json.dumps(item))
    # An AOI over the yard's cars, inside every scene (0.5 m/px from 500000, 4700000).
    aoi = aoi_file(tmp_path / "yard.geojson", 500010, 4699850, 500190, 4699980)
    return collection, aoi


def test_stac_api_search_counts_items_with_their_metadata(tmp_path, server, stac_site,
                                                          stac_api):
    collection, aoi = stac_site
    api = stac_api(collection)
    results = infer(tmp_path / "out", None, aoi=str(aoi), **{
        "stac.url": api, "stac.collections": ["yard"],
        "stac.datetime": "2019-01-01/2021-12-31", "stac.max_cloud_cover": 20})
    assert [r.name for r in results] == ["pass-2019", "pass-2021"]  # 2020: cloudy, 2022: late
    [local] = infer(tmp_path / "local", tmp_path / "scenes" / "pass-2019.tif", aoi=str(aoi))
    first = results[0].counts
    assert same_counts(first, local.counts) and first["wagons"]["count"] > 0
    assert first["scene"] == f"{server.url}/pass-2019.tif"
    stac = first["stac"]
    assert stac["item"] == "pass-2019" and stac["collection"] == "yard"
    assert stac["datetime"].startswith("2019-05-01") and stac["gsd"] == 0.5
    assert stac["proj:epsg"] == 32652 and stac["view:off_nadir"] == 8.0
    assert stac["asset"] == "visual" and 0.99 < stac["aoi_share"] <= 1.0


def test_stac_files_filters_and_dry_run(tmp_path, server, stac_site, capsys):
    collection, aoi = stac_site
    out = tmp_path / "out"
    listed = infer(out, str(collection), aoi=str(aoi), dry_run=True,
                   **{"stac.max_off_nadir": 30})
    text = capsys.readouterr().out
    assert listed == [] and not out.exists()
    assert "3 of 4 items would be counted" in text
    assert "cloud cover" not in text and "skip: off-nadir 35° > 30° (stac.max_off_nadir)" in text
    for item_id, (day, *_rest) in PASSES.items():
        assert item_id in text and day in text
    # A static collection read over HTTP, one Item file, and an ItemCollection.
    results = infer(out, f"{server.url}/collection.json", aoi=str(aoi),
                    **{"stac.max_cloud_cover": 50, "stac.max_off_nadir": 30})
    assert [r.name for r in results] == ["pass-2019", "pass-2022"]
    [one] = infer(tmp_path / "one", str(server.root / "pass-2020" / "pass-2020.json"))
    assert one.name == "pass-2020" and one.counts["stac"]["eo:cloud_cover"] == 60.0
    items = [pystac.Item.from_file(str(p)) for p in sorted(server.root.glob("pass-*/*.json"))]
    coll = tmp_path / "items.json"
    coll.write_text(json.dumps(pystac.ItemCollection(items).to_dict()))
    far = aoi_file(tmp_path / "far.geojson", 500150, 4699850, 500400, 4699980)
    with pytest.raises(DetectorError, match="every one of the 4 STAC items was left out"):
        infer(tmp_path / "far", str(coll), aoi=str(far), **{"stac.min_aoi_share": 0.9})
    with pytest.raises(DetectorError, match=r"item pass-2019: has no asset 'pan'"):
        infer(tmp_path / "pan", str(coll), **{"stac.asset": "pan"})


def test_monitor_over_a_stac_search_uses_item_dates(tmp_path, server, stac_site, stac_api):
    from detector.infer.api import run_config as infer_run
    from detector.monitor.api import config as monitor_config
    from detector.monitor.api import monitor
    from detector.monitor.inference import model_identity

    collection, aoi = stac_site
    api = stac_api(collection)

    def runner(sources, weights=None, scenes=None, **overrides):
        cfg = config(sources, weights, **overrides)
        bundle = fake_bundle()  # as if it were the bundled model, so its counts are reused
        bundle.sha256 = model_identity(None)["sha256"]
        return infer_run(cfg, bundle, fake_predictor, scenes=scenes)

    dates = tmp_path / "dates.csv"
    dates.write_text("scene,date\npass-2022,2022-06-30\n")
    cfg = monitor_config(**{"stac.url": api, "stac.collections": ["yard"],
                            "stac.max_cloud_cover": 50, "aoi": str(aoi), "dates": str(dates),
                            "out": str(tmp_path / "mon"), "progress": False})
    result = monitor(cfg, runner=runner)
    assert [(e.scene.name, str(e.date.day), e.date.source) for e in result.series] == [
        ("pass-2019", "2019-05-01", "STAC datetime"),
        ("pass-2021", "2021-05-01", "STAC datetime"),
        ("pass-2022", "2022-06-30", "dates.csv")]
    assert [e.scene.name for e in result.left_out] == ["pass-2020"]
    assert "cloud cover 60% > 50%" in result.left_out[0].left_out
    assert all(e.counts["wagons"]["count"] > 0 for e in result.series)
    again = monitor(cfg, runner=runner)
    assert again.reused == 3


# --- s3:// on an S3-compatible server ------------------------------------------------------

@pytest.fixture
def s3(monkeypatch, fast_retries):
    """A moto S3 server on 127.0.0.1 (stopped after), GDAL pointed at it through the usual
    AWS variables; returns a boto3 client."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    for key, value in {"AWS_S3_ENDPOINT": f"127.0.0.1:{port}", "AWS_HTTPS": "NO",
                       "AWS_VIRTUAL_HOSTING": "FALSE", "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    yield boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    server.stop()


def test_s3_urls_count_as_the_file_on_disk(tmp_path, s3):
    scene = cog(tmp_path / "yard.tif", size=(500, 400))
    s3.create_bucket(Bucket="imagery")
    s3.upload_file(str(scene), "imagery", "site/2023/yard.tif")
    [local] = infer(tmp_path / "local", scene)
    [remote] = infer(tmp_path / "s3", "s3://imagery/site/2023/yard.tif")
    assert remote.ok, remote.error
    assert same_counts(local.counts, remote.counts) and local.counts["wagons"]["count"] > 0
    assert remote.counts["scene"] == "s3://imagery/site/2023/yard.tif"
    [missing] = infer(tmp_path / "s3", "s3://imagery/site/2024/yard.tif")
    assert not missing.ok and missing.error.startswith("s3://imagery/site/2024/yard.tif: ")
    assert "not found" in missing.error
