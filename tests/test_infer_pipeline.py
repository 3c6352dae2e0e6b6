"""End-to-end inference on tiny planted GeoTIFFs with a stand-in model.

The stand-in "detects" bright rectangles in each tile image exactly as a model would see
them (partial cars at tile edges included), so these tests check everything around the
model: reading, resampling, band maps, nodata, tile offsets, seams, coordinates, counting,
outputs and bad input.
"""

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from rasterio.crs import CRS

from detector.bundle import default_card
from detector.geometry import obb_corners, pixel_to_map, polygon_iou
from detector.infer.api import config, run_config
from detector.infer.model import Bundle, TileDetections
from detector.labels import LabelledPolygon, read_geojson, write_geojson
from detector.raster import write_geotiff
from tests.helpers import CLASSES, UTM, car_string

BRIGHT = {"freight_car": 250, "covered_car": 170}


def fake_predictor(images: np.ndarray) -> list[TileDetections]:
    """Bright 4-connected blobs → rotated boxes; class by brightness; score 0.9."""
    out = []
    for image in images:
        band = image[0]
        n, labels = cv2.connectedComponents((band > 140).astype(np.uint8), connectivity=4)
        corners, cls = [], []
        for k in range(1, n):
            rows, cols = np.nonzero(labels == k)
            if rows.size < 12:
                continue
            pts = np.column_stack([cols + 0.5, rows + 0.5]).astype(np.float32)
            (cx, cy), (w, h), a = cv2.minAreaRect(pts)
            corners.append(cv2.boxPoints(((cx, cy), (w + 1, h + 1), a)))
            cls.append(0 if band[rows, cols].mean() > 215 else 1)
        out.append(TileDetections(np.array(corners, dtype=float).reshape(-1, 4, 2),
                                  np.full(len(cls), 0.9), np.array(cls, dtype=int)))
    return out


def fake_bundle(m_per_px=0.5, imgsz=128) -> Bundle:
    card = default_card("obb", CLASSES, imgsz, m_per_px=m_per_px, candidate_conf=0.05,
                        operating_threshold=0.5)
    return Bundle(Path("stand-in.pt"), "0" * 64, card, None, torch.device("cpu"), False)


def planted_scene(path, size=(420, 320), px=1.0, m_per_px=0.5, dtype=np.uint8, bands=3,
                  crs=UTM, nodata_margin=0, tiled=True, seed=0):
    """A scene with coupled-car strings at 30° and 45° plus loose cars; returns truth.

    ``px`` scales car sizes in pixels (2.0 for a 0.25 m scene of the same cars).
    """
    rng = np.random.default_rng(seed)
    w, h = size
    length, width, gap = 30 * px, 6 * px, 4 * px
    cars = [(c, "freight_car") for c in car_string(30 * px, 40 * px, 30, 6, length, width, gap)]
    cars += [(c, "covered_car") for c in car_string(40 * px, 150 * px, 45, 4, length, width, gap)]
    cars += [(obb_corners(330 * px, 60 * px, length, width, 1.2), "covered_car"),
             (obb_corners(300 * px, 250 * px, length, width, 0.1), "freight_car")]
    scale = 256 if dtype == np.uint16 else 1
    img = rng.integers(30, 80, size=(h, w)).astype(np.float64)
    for corners, cls in cars:
        canvas = np.zeros((h, w), np.uint8)
        cv2.fillPoly(canvas, [np.round((corners - 0.5) * 16).astype(np.int32)], 1,
                     cv2.LINE_8, 4)
        img[canvas > 0] = BRIGHT[cls]
    data = np.repeat((img * scale)[None], bands, axis=0).astype(dtype)
    nodata = None
    if nodata_margin:
        data[:, :, :nodata_margin] = 0
        data[:, :nodata_margin, :] = 0
        nodata = 0
    transform = Affine(m_per_px, 0, 500000, 0, -m_per_px, 4700000) if crs else Affine.identity()
    write_geotiff(path, data, transform, crs, nodata=nodata, tiled=tiled)
    return cars, transform


def infer(tmp_path, source, bundle=None, **overrides):
    overrides = {"out": str(tmp_path / "out"), "progress": False, **overrides}
    cfg = config(source, None, **overrides)
    return run_config(cfg, bundle or fake_bundle(), fake_predictor)


def test_infer_cfg_fixture_composes_a_quiet_run(infer_cfg, tiny_scene, tmp_path):
    scene = tiny_scene(size=(96, 64))
    [res] = run_config(infer_cfg(scene, quicklook=False), fake_bundle(), fake_predictor)
    assert res.ok and res.outputs["counts"].parent == tmp_path / "out"


def assert_matches(truth, detections):
    iou = np.array([[polygon_iou(t, d.corners_px) for d in detections] for t, _ in truth])
    assert len(detections) == len(truth)
    assert ((iou > 0.5).sum(axis=1) == 1).all() and ((iou > 0.5).sum(axis=0) == 1).all()
    for k, (_, cls) in enumerate(truth):
        assert detections[int(iou[k].argmax())].cls == cls


def test_scene_counts_each_car_once_across_seams(tmp_path):
    scene = tmp_path / "yard.tif"
    truth, transform = planted_scene(scene)
    [res] = infer(tmp_path, scene)
    assert res.ok, res.error
    assert_matches(truth, res.detections)
    counts = res.counts
    assert counts["classes"]["freight_car"]["count"] == 7
    assert counts["classes"]["covered_car"]["count"] == 5
    assert counts["wagons"]["count"] == 12
    lo, hi = counts["wagons"]["ci95"]
    assert lo <= 12 * 0.9 <= hi and counts["wagons"]["expected"] == pytest.approx(12 * 0.9)
    assert counts["tiles"] > 4  # the strings really cross seams
    assert {"scene", "model", "m_per_px", "classes", "wagons", "area_km2", "seconds"} <= set(counts)
    assert counts["area_km2"] == pytest.approx(420 * 320 * 0.25 / 1e6)
    for d in res.detections:
        assert np.allclose(d.corners_map, pixel_to_map(d.corners_px, transform))
        assert d.tile.startswith("r") and "c" in d.tile
    # files: GeoJSON in the scene CRS, counts JSON, quicklook
    polys, crs = read_geojson(res.outputs["geojson"])
    assert crs == UTM and len(polys) == 12
    assert set(polys[0].properties) == {"score", "p", "tile", "review"}
    assert counts["shift"] is None and counts["shift_note"]  # stand-in card: no reference
    assert json.loads(res.outputs["counts"].read_text())["wagons"]["count"] == 12
    assert res.outputs["quicklook"].stat().st_size > 10_000
    assert not list((tmp_path / "out").glob(".*partial*"))


def test_counts_record_the_settings_actually_used(tmp_path):
    scene = tmp_path / "yard.tif"
    planted_scene(scene)
    [res] = infer(tmp_path, scene, conf=0.3, **{"tiling.overlap_m": 30,
                                                 "merge.method": "ownership"})
    settings = json.loads(res.outputs["counts"].read_text())["settings"]
    assert settings["candidate_conf"] == 0.3  # the run's, not the card's 0.05
    assert settings["nms"] == {"iou": 0.5, "agnostic": True, "max_det": 1000}
    assert settings["tiling"]["overlap_m"] == 30 and settings["merge"]["method"] == "ownership"
    # The planted predictor is not one of ours: the backend that ran is recorded as such.
    assert settings["backend"] == "custom" and settings["device"] == "cpu"
    assert settings["model_m_per_px"] == 0.5 and settings["bands"] == [1, 2, 3]


def test_rerun_skips_a_finished_scene_unless_overwrite(tmp_path):
    scene = tmp_path / "yard.tif"
    planted_scene(scene)
    [first] = infer(tmp_path, scene, quicklook=False)
    mtime = first.outputs["counts"].stat().st_mtime_ns
    [again] = infer(tmp_path, scene, quicklook=False)
    assert again.skipped and again.counts["wagons"] == first.counts["wagons"]
    assert len(again.detections) == 12
    assert first.outputs["counts"].stat().st_mtime_ns == mtime
    [redo] = infer(tmp_path, scene, quicklook=False, overwrite=True)
    assert not redo.skipped and redo.outputs["counts"].stat().st_mtime_ns != mtime


def test_finer_16bit_4band_strip_scene_with_nodata_is_resampled(tmp_path):
    # the same cars at 0.25 m/px: tiles are 256 source px read down to 128 model px
    scene = tmp_path / "fine.tif"
    truth, _ = planted_scene(scene, size=(840, 640), px=2.0, m_per_px=0.25, dtype=np.uint16,
                             bands=4, nodata_margin=20, tiled=False)
    [res] = infer(tmp_path, scene, quicklook=False)
    assert res.ok, res.error
    assert_matches(truth, res.detections)
    assert res.counts["m_per_px"] == pytest.approx(0.25)


def test_scene_smaller_than_one_tile(tmp_path):
    scene = tmp_path / "small.tif"
    data = np.full((3, 50, 70), 50, np.uint8)
    car = obb_corners(35, 25, 30, 6, 0.3)
    canvas = np.zeros((50, 70), np.uint8)
    cv2.fillPoly(canvas, [np.round((car - 0.5) * 16).astype(np.int32)], 1, cv2.LINE_8, 4)
    data[:, canvas > 0] = 250
    write_geotiff(scene, data, Affine(0.5, 0, 500000, 0, -0.5, 4700000), UTM)
    [res] = infer(tmp_path, scene, quicklook=False)
    assert res.ok and len(res.detections) == 1
    assert polygon_iou(car, res.detections[0].corners_px) > 0.6


def test_aoi_counts_only_cars_inside_and_is_reprojected(tmp_path):
    scene = tmp_path / "yard.tif"
    truth, transform = planted_scene(scene)
    # left half of the scene, written in WGS84
    left = pixel_to_map(np.array([[0, 0], [200, 0], [200, 320], [0, 320]], float), transform)
    from rasterio.warp import transform as warp

    xs, ys = warp(UTM, CRS.from_epsg(4326), left[:, 0], left[:, 1])
    aoi = tmp_path / "aoi.geojson"
    write_geojson(aoi, [LabelledPolygon(np.column_stack([xs, ys]), "station")],
                  CRS.from_epsg(4326))
    [res] = infer(tmp_path, scene, aoi=str(aoi), quicklook=False)
    expected = sum(1 for c, _ in truth if c.mean(axis=0)[0] < 200)
    assert 0 < expected < len(truth)
    assert res.counts["wagons"]["count"] == expected
    assert all(d.corners_px.mean(axis=0)[0] < 200 for d in res.detections)
    far = tmp_path / "far.geojson"
    write_geojson(far, [LabelledPolygon(left + 10_000, "station")], UTM)
    [bad] = infer(tmp_path, scene, aoi=str(far), overwrite=True)
    assert not bad.ok and "does not overlap" in bad.error


# rasterio warns that a scene without CRS has no geotransform: this test makes one on purpose.
@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_no_crs_needs_m_per_px_then_works_in_pixel_coordinates(tmp_path):
    scene = tmp_path / "plain.tif"
    truth, _ = planted_scene(scene, crs=None)
    [res] = infer(tmp_path, scene)
    assert not res.ok and "m_per_px=" in res.error and "plain.tif" in res.error
    # only the failure marker, with the reason; no half-written output
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["plain.error.json"]
    assert "m_per_px=" in json.loads((tmp_path / "out" / "plain.error.json").read_text())["error"]
    [res] = infer(tmp_path, scene, m_per_px=0.5, quicklook=False)
    assert res.ok and res.counts["wagons"]["count"] == len(truth)
    assert all(np.allclose(d.corners_map, d.corners_px) for d in res.detections)


def test_bad_scenes_fail_alone_and_are_listed_in_the_summary(tmp_path):
    folder = tmp_path / "scenes"
    folder.mkdir()
    planted_scene(folder / "a_good.tif")
    (folder / "b_text.tif").write_text("not a raster")
    write_geotiff(folder / "c_empty.tif", np.zeros((3, 100, 100), np.uint8),
                  Affine(0.5, 0, 500000, 0, -0.5, 4700000), UTM, nodata=0)
    results = infer(tmp_path, folder, quicklook=False)
    assert [r.ok for r in results] == [True, False, False]
    assert "not a readable raster" in results[1].error
    assert "nodata" in results[2].error
    rows = list(csv.DictReader((tmp_path / "out" / "summary.csv").open()))
    assert [r["status"] for r in rows] == ["ok", "failed", "failed"]
    assert rows[0]["wagons"] == "12" and "nodata" in rows[2]["error"]
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["a_good.counts.json", "a_good.geojson", "b_text.error.json",
                     "c_empty.error.json", "summary.csv", "summary.json"]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (summary["done"], summary["failed"], summary["missing"]) == (1, 2, 0)
    assert "nodata" in summary["failed_scenes"][1]["error"]


def test_sources_glob_and_list(tmp_path):
    for name in ("x1.tif", "x2.tif"):
        planted_scene(tmp_path / name, size=(200, 150))
    listing = tmp_path / "scenes.txt"
    listing.write_text("x2.tif\n# a comment\n\nx1.tif\n")
    results = infer(tmp_path, listing, quicklook=False)
    assert [r.scene.name for r in results] == ["x2.tif", "x1.tif"] and all(r.ok for r in results)
    results = infer(tmp_path, str(tmp_path / "x*.tif"), quicklook=False, overwrite=True)
    assert [r.scene.name for r in results] == ["x1.tif", "x2.tif"]


def test_band_map_override_is_checked(tmp_path):
    scene = tmp_path / "yard.tif"
    planted_scene(scene)
    [res] = infer(tmp_path, scene, bands=[1, 2, 5])
    assert not res.ok and "bands" in res.error


def test_reader_output_matches_direct_stretch(tmp_path):
    # a tile read by the streaming reader equals the same window read whole and stretched
    from detector.infer.reader import Stretch, read_tile
    from detector.infer.tiling import tile_grid
    from detector.raster import to_uint8

    scene = tmp_path / "yard.tif"
    planted_scene(scene)
    with rasterio.open(scene) as src:
        tile = tile_grid(src.width, src.height, 128, 48)[1]
        stretch = Stretch([1, 2, 3], np.array([30.0] * 3), np.array([250.0] * 3), 114)
        image = read_tile(src, tile, 128, stretch)
        window = src.read([1, 2, 3], window=tile.window)
    assert np.array_equal(image, to_uint8(window, stretch.low, stretch.high))
