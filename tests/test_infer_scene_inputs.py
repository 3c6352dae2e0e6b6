"""Any GeoTIFF gives the right count or one clear line (issue 19, part A).

Each situation rewrites the same planted scene (tests/test_infer_pipeline.py: 12 cars at
0.5 m/px) with another geotransform, CRS, dtype or mask, and runs the stand-in model: the
expected count is the count of the plain north-up scene; the expected area is the ground
area of the pixels that hold data.
"""

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS

from detector.geometry import pixel_to_map
from detector.infer import backends
from detector.infer.reader import read_tile
from detector.infer.scene import plan_scene
from detector.labels import LabelledPolygon, write_geojson
from detector.raster import (
    COARSER_REFUSE,
    ground_resolution,
    metres_per_degree,
    valid_mask,
    write_geotiff,
)
from tests.helpers import UTM
from tests.test_infer_pipeline import fake_bundle, fake_predictor, infer, planted_scene

W, H = 420, 320  # planted scene size
ORIGIN = (500000.0, 4700000.0)
NORTH_UP = Affine(0.5, 0, ORIGIN[0], 0, -0.5, ORIGIN[1])


def rewrite(src: Path, dst: Path, transform: Affine, crs=UTM, data=None, nodata=None,
            **profile) -> Path:
    """``src``'s pixels (or ``data``) written to ``dst`` with another georeferencing."""
    with rasterio.open(src) as ds:
        data = ds.read() if data is None else data
    if not profile:
        write_geotiff(dst, data, transform, crs, nodata=nodata)
        return dst
    meta = {"driver": "GTiff", "width": data.shape[2], "height": data.shape[1],
            "count": data.shape[0], "dtype": data.dtype.name, "transform": transform,
            "crs": crs, "nodata": nodata, **profile}
    with rasterio.open(dst, "w", **meta) as out:
        out.write(data)
    return dst


def rotated(angle_deg: float, m_per_px: float = 0.5) -> Affine:
    """A geotransform of ``m_per_px`` square pixels whose grid is rotated by ``angle_deg``."""
    return (Affine.translation(*ORIGIN) @ Affine.rotation(angle_deg)
            @ Affine.scale(m_per_px, -m_per_px))


@pytest.fixture
def yard(tmp_path):
    """The planted north-up scene, its truth, and its count with the stand-in model."""
    scene = tmp_path / "yard.tif"
    truth, _ = planted_scene(scene)
    [res] = infer(tmp_path / "north_up", scene, quicklook=False)
    assert res.ok and res.counts["wagons"]["count"] == len(truth) == 12
    return scene, truth, res


# --- one ground resolution: rotation, shear, non-square pixels, geographic CRSs -------------

@pytest.mark.parametrize("transform, crs, expected", [
    (NORTH_UP, UTM, (0.5, 0.5, 0.25)),
    (rotated(30), UTM, (0.5, 0.5, 0.25)),  # a north-up reading: 0.433 m
    (rotated(90), UTM, (0.5, 0.5, 0.25)),  # a north-up reading: 0 m
    (Affine(0.5, 0, ORIGIN[0], 0, 0.5, ORIGIN[1]), UTM, (0.5, 0.5, 0.25)),  # south-up
    (Affine(0.5, 0.2, ORIGIN[0], 0, -0.5, ORIGIN[1]), UTM,  # sheared: row step (0.2, -0.5)
     (0.5, float(np.hypot(0.2, 0.5)), 0.25)),
    (Affine(0.5, 0, ORIGIN[0], 0, -1.0, ORIGIN[1]), UTM, (0.5, 1.0, 0.5)),  # non-square
    (Affine(1.5, 0, 980000, 0, -1.5, 200000), CRS.from_epsg(2263),  # US survey feet
     (1.5 * 1200 / 3937, 1.5 * 1200 / 3937, (1.5 * 1200 / 3937) ** 2)),
])
def test_ground_resolution_is_the_length_of_each_pixel_step(transform, crs, expected):
    res = ground_resolution(transform, crs, W, H)
    assert (res.x, res.y, res.pixel_area) == pytest.approx(expected, rel=1e-6)


def test_geographic_and_web_mercator_scenes_are_measured_on_the_ground():
    east, north = metres_per_degree(60.0)
    # at 60°N a degree of latitude is 111.4 km, one of longitude 55.8 km (cos 60° of 111.6)
    assert north == pytest.approx(111_412, abs=2) and east == pytest.approx(55_800, abs=2)
    deg = Affine(0.5 / east, 0, 10.0, 0, -0.5 / north, 60.0 + H / 2 * 0.5 / north)
    res = ground_resolution(deg, CRS.from_epsg(4326), W, H)
    assert (res.x, res.y) == pytest.approx((0.5, 0.5), rel=1e-4)
    # Web Mercator at 60°N: 1 map unit is 0.5 m on the ground (scale 1/cos 60° = 2, within
    # e² sin² φ / 2 = 0.25%: the projection is spherical, the ground ellipsoidal)
    from rasterio.warp import transform as warp

    xs, ys = warp("EPSG:4326", "EPSG:3857", [10.0], [60.0])
    merc = Affine(1.0, 0, xs[0], 0, -1.0, ys[0])
    res = ground_resolution(merc, CRS.from_epsg(3857), W, H)
    assert (res.x, res.y) == pytest.approx((0.5, 0.5), rel=3e-3)
    # UTM keeps its map units (its scale is within 0.1% of 1): 0.5 m stays 0.5 m
    assert ground_resolution(Affine(0.5, 0, 700000, 0, -0.5, 4700000), UTM, W, H).x == 0.5


def test_degenerate_geotransform_is_one_line(tmp_path):
    with pytest.raises(ValueError, match="no pixel area"):
        ground_resolution(Affine(0.5, 0.5, 0, 0.5, 0.5, 0), UTM, W, H)


@pytest.mark.parametrize("angle", [30, 90, 180, -45])
def test_rotated_geotransform_counts_as_north_up(yard, tmp_path, angle):
    scene, truth, north_up = yard
    turned = rewrite(scene, tmp_path / f"rot{angle}.tif", rotated(angle))
    [res] = infer(tmp_path, turned, quicklook=False)
    assert res.ok, res.error
    assert res.counts["m_per_px"] == pytest.approx(0.5)
    assert res.counts["area_km2"] == pytest.approx(north_up.counts["area_km2"])
    assert res.counts["area_km2"] == pytest.approx(W * H * 0.25 / 1e6)
    assert res.counts["wagons"] == north_up.counts["wagons"]
    # detections are the same pixels, placed on the map through the rotated transform
    px = np.array(sorted(d.corners_px.mean(axis=0).tolist() for d in res.detections))
    ref = np.array(sorted(d.corners_px.mean(axis=0).tolist() for d in north_up.detections))
    assert np.allclose(px, ref)
    det = res.detections[0]
    assert np.allclose(det.corners_map, pixel_to_map(det.corners_px, rotated(angle)))


def test_scene_in_lon_lat_at_60n_counts_as_utm(yard, tmp_path):
    scene, truth, north_up = yard
    east, north = metres_per_degree(60.0)
    transform = Affine(0.5 / east, 0, 10.0, 0, -0.5 / north, 60.0 + H / 2 * 0.5 / north)
    geo = rewrite(scene, tmp_path / "lonlat.tif", transform, CRS.from_epsg(4326))
    [res] = infer(tmp_path, geo, quicklook=False)
    assert res.ok, res.error
    assert res.counts["m_per_px"] == pytest.approx(0.5, rel=1e-3)
    assert res.counts["area_km2"] == pytest.approx(W * H * 0.25 / 1e6, rel=2e-3)
    assert res.counts["wagons"]["count"] == len(truth)
    lon, lat = res.detections[0].corners_map.mean(axis=0)
    assert 10 < lon < 10.01 and 59.99 < lat < 60.01


def test_non_square_pixels_are_read_at_the_model_resolution_on_each_axis(yard, tmp_path):
    # the same ground at 0.5 m across and 1.0 m down: every other row pair averaged
    scene, truth, north_up = yard
    with rasterio.open(scene) as ds:
        data = ds.read().astype(np.float32)
    halved = ((data[:, 0::2] + data[:, 1::2]) / 2).round().astype(np.uint8)
    tall = rewrite(scene, tmp_path / "tall.tif",
                   Affine(0.5, 0, ORIGIN[0], 0, -1.0, ORIGIN[1]), data=halved)
    from detector.infer.api import config

    cfg = config(tall, None, out=str(tmp_path / "o"), progress=False)
    card = fake_bundle().card
    with rasterio.open(scene) as square_src, rasterio.open(tall) as tall_src:
        square, flat = plan_scene(square_src, scene, card, cfg), plan_scene(tall_src, tall, card,
                                                                              cfg)
        # a tile spans 64 m both ways: 128 columns, 64 rows of the tall-pixel scene
        assert (flat.tiles[0].size, flat.tiles[0].height) == (128, 64)
        a = read_tile(square_src, square.tiles[0], 128, square.stretch)[0] > 140
        b = read_tile(tall_src, flat.tiles[0], 128, flat.stretch)[0] > 140
    # the same cars in the same places (read as square, 128 x 64 px, they would be squashed)
    assert (a & b).sum() / (a | b).sum() > 0.8
    [res] = infer(tmp_path, tall, quicklook=False)
    assert res.ok, res.error
    assert res.counts["m_per_px"] == pytest.approx(np.sqrt(0.5), abs=1e-4)
    assert res.counts["area_km2"] == pytest.approx(W * H * 0.25 / 1e6)
    assert res.counts["wagons"]["count"] == len(truth)


# --- invalid pixels: NaN, ±inf, nodata, internal masks, alpha -------------------------------

def _footprint(shape: tuple[int, int]) -> np.ndarray:
    """Valid (H, W): all but a 10 px frame on the left and top and a 30 x 40 corner block."""
    valid = np.ones(shape, dtype=bool)
    valid[:, :10] = valid[:10, :] = False
    valid[-30:, -40:] = False
    return valid


def _masked_scene(src: Path, dst: Path, kind: str) -> Path:
    with rasterio.open(src) as ds:
        data, transform = ds.read(), ds.transform
    valid = _footprint(data.shape[1:])
    if kind.startswith(("nan", "inf")):  # float32 reflectance 0-1
        data = (data / 255.0).astype(np.float32)
        data[:, ~valid] = np.nan
        if kind == "inf":  # +inf in the frame, -inf in one band of the corner block
            data[:, ~valid] = 0.5
            data[:, :, :10] = data[:, :10, :] = np.inf
            data[2, -30:, -40:] = -np.inf
        return rewrite(src, dst, transform, data=data,
                       nodata=np.nan if kind == "nan_tagged" else None)
    if kind == "nodata":
        data[:, ~valid] = 0
        return rewrite(src, dst, transform, data=data, nodata=0)
    if kind == "alpha":
        alpha = np.where(valid, 255, 0).astype(np.uint8)[None]
        return rewrite(src, dst, transform, data=np.concatenate([data, alpha]),
                       photometric="RGB", alpha="YES")
    assert kind == "mask"
    write_geotiff(dst, data, transform, UTM)
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(dst, "r+") as out:
        out.write_mask(np.where(valid, 255, 0).astype(np.uint8))
    return dst


@pytest.mark.parametrize("kind", ["nan", "nan_tagged", "inf", "nodata", "alpha", "mask"])
def test_invalid_pixels_are_excluded_from_stretch_tiles_and_area(yard, tmp_path, kind):
    scene, truth, north_up = yard
    masked = _masked_scene(scene, tmp_path / f"{kind}.tif", kind)
    [res] = infer(tmp_path, masked, quicklook=True)
    assert res.ok, res.error
    assert res.counts["wagons"]["count"] == len(truth)
    expected_km2 = _footprint((H, W)).sum() * 0.25 / 1e6
    assert res.counts["area_km2"] == pytest.approx(expected_km2, rel=1e-3)
    with rasterio.open(masked) as src:
        assert (valid_mask(src, rasterio.windows.Window(0, 0, W, H))
                == _footprint((H, W))).all()


def test_area_counts_valid_pixels_inside_the_aoi(yard, tmp_path):
    scene, truth, north_up = yard
    masked = _masked_scene(scene, tmp_path / "nan.tif", "nan")
    left = pixel_to_map(np.array([[0, 0], [200, 0], [200, 320], [0, 320]], float),
                        NORTH_UP)
    aoi = tmp_path / "aoi.geojson"
    write_geojson(aoi, [LabelledPolygon(left, "station")], UTM)
    [res] = infer(tmp_path, masked, aoi=str(aoi), quicklook=False)
    assert res.ok, res.error
    assert res.counts["area_km2"] == pytest.approx(_footprint((H, W))[:, :200].sum() * 0.25
                                                   / 1e6, rel=1e-3)
    assert res.counts["wagons"]["count"] == sum(1 for c, _ in truth if c.mean(axis=0)[0] < 200)


def test_all_nan_scene_without_a_tag_is_one_line(tmp_path):
    scene = tmp_path / "empty.tif"
    write_geotiff(scene, np.full((3, 64, 64), np.nan, np.float32),
                  NORTH_UP, UTM)
    [res] = infer(tmp_path, scene, quicklook=False)
    assert not res.ok and "every pixel is nodata" in res.error


# --- resolutions far from the model's ------------------------------------------------------

def test_far_coarser_scene_is_refused_and_a_coarse_one_warned(tmp_path, caplog):
    coarse = tmp_path / "coarse.tif"
    planted_scene(coarse, size=(200, 150), m_per_px=10.0)
    [res] = infer(tmp_path, coarse, quicklook=False)
    assert not res.ok and "\n" not in res.error
    assert "coarse.tif: 10 m/px is 20.0x coarser than the model's 0.5 m/px" in res.error
    assert f"at most {0.5 * COARSER_REFUSE:g} m/px" in res.error
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["coarse.error.json"]
    blurry = tmp_path / "blurry.tif"
    planted_scene(blurry, size=(200, 150), m_per_px=1.0)
    with caplog.at_level(logging.WARNING):
        [res] = infer(tmp_path, blurry, quicklook=False)
    assert res.ok and "2.0x coarser than the model's" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        [res] = infer(tmp_path, blurry, quicklook=False, overwrite=True, m_per_px=0.5)
    assert res.ok and "coarser" not in caplog.text  # m_per_px= says what the pixels are


def test_cli_refuses_a_10m_scene_with_one_line_and_exit_2(tmp_path, cli_env, untrained_models):
    coarse = tmp_path / "coarse.tif"
    planted_scene(coarse, size=(100, 80), m_per_px=10.0)
    proc = subprocess.run([sys.executable, "-m", "detector.infer", f"source={coarse}",
                           f"weights={untrained_models['obb']}", f"out={tmp_path / 'out'}",
                           "progress=false", "backend=torch", "device=cpu"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env=cli_env)
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "coarser than the model" in line]
    assert errors and errors[-1].startswith("error: ") and "m/px" in errors[-1]


# --- band maps: the suggested fix is one the scene has --------------------------------------

@pytest.mark.parametrize("count, hint", [(1, "bands=[1]"), (2, "bands=[1]"),
                                         (4, "bands=[1,2,3]")])
def test_band_error_suggests_a_band_map_the_scene_has(yard, tmp_path, count, hint):
    scene, truth, _ = yard
    with rasterio.open(scene) as ds:
        data = ds.read()
    data = np.concatenate([data] * 2)[:count]
    pan = rewrite(scene, tmp_path / f"b{count}.tif", NORTH_UP, data=data)
    asked = [1, 2, 5] if count == 4 else None
    [res] = infer(tmp_path, pan, quicklook=False, **({"bands": asked} if asked else {}))
    assert not res.ok and f"set {hint}" in res.error
    assert f"has {count} band(s)" in res.error
    fix = [int(b) for b in hint.split("[")[1].rstrip("]").split(",")]
    [res] = infer(tmp_path, pan, quicklook=False, bands=fix)  # the suggested fix works
    assert res.ok, res.error
    assert res.counts["wagons"]["count"] == len(truth)


def test_wrong_number_of_bands_suggests_one_that_works(yard, tmp_path):
    scene, _, _ = yard
    [res] = infer(tmp_path, scene, quicklook=False, bands=[1, 2])
    assert not res.ok and "set bands=[1,2,3]" in res.error


# --- tile sizes the network cannot take ------------------------------------------------------

def test_any_tile_px_runs_padded_to_the_network_stride(yard, tmp_path):
    scene, truth, _ = yard
    seen = []

    def predictor(images):
        seen.append(images.shape[-2:])
        return fake_predictor(images)

    from detector.infer.api import config, run_config

    cfg = config(scene, None, out=str(tmp_path / "o"), progress=False, quicklook=False,
                 **{"tiling.tile_px": 100})
    [res] = run_config(cfg, fake_bundle(), predictor)
    assert res.ok, res.error
    assert set(seen) == {(128, 128)}  # 100 px tiles padded to the next multiple of 32
    assert res.counts["wagons"]["count"] == len(truth)


def test_untrained_network_runs_with_a_tile_px_off_its_stride(tmp_path, untrained_models):
    scene = tmp_path / "yard.tif"
    planted_scene(scene, size=(200, 150))
    from detector.infer.api import run

    [res] = run(scene, untrained_models["obb"], out=str(tmp_path / "o"), progress=False,
                quicklook=False, backend="torch", device="cpu", **{"tiling.tile_px": 100})
    assert res.ok, res.error


def test_export_cache_is_named_after_the_size_exported(tmp_path, monkeypatch,
                                                       untrained_models):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    from detector.infer.model import load_bundle

    bundle = load_bundle(untrained_models["obb"], "cpu")
    asked = []

    def fake_export_graph(net, backend, imgsz, batch, folder, layer, calib=None):
        asked.append(imgsz)
        (folder / "model.xml").write_text("<net/>")
        return folder / "model.xml"

    from detector.infer import export

    monkeypatch.setattr(export, "export_graph", fake_export_graph)
    path = backends.export_model(bundle, "openvino", 100, 2)
    assert asked == [128] and path.parent.name.startswith("openvino-fp32-128px-b2")
    info = json.loads((path.parent / "export.json").read_text())
    assert info["imgsz"] == 128
    assert backends.export_model(bundle, "openvino", 128, 2) == path  # cached, not redone
    assert asked == [128]


def test_tiling_the_model_cannot_take_is_refused_at_start_up(yard, tmp_path):
    from detector.errors import DetectorError
    from detector.infer.api import config, run_config

    scene, _, _ = yard
    cfg = config(scene, None, out=str(tmp_path / "o"), progress=False,
                 **{"tiling.tile_px": 64})  # 32 m tiles, 24 m overlap
    with pytest.raises(DetectorError, match=r"^tiling.overlap_m=24 is more than half a tile "
                                            r"\(32 m = 64 px"):
        run_config(cfg, fake_bundle(), fake_predictor)
    assert not (tmp_path / "o").exists()  # nothing written
