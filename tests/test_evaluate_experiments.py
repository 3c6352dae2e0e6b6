"""Experiment helpers: synth settings replace (not merge), scene rotation keeps labels on
their pixels, headline rows and tables."""

import json

import numpy as np
import pytest
from affine import Affine
from rasterio.crs import CRS

from detector.evaluate.experiments import (
    dominant_angle,
    format_table,
    headline,
    rotate_scene,
    save_results,
    synth_config,
)
from detector.geometry import corners_to_obb, obb_corners, pixel_to_map
from detector.labels import LabelledPolygon, read_geojson, to_pixel, write_geojson
from detector.raster import open_raster, write_geotiff

UTM = CRS.from_epsg(32652)
TRANSFORM = Affine(0.5, 0, 500000, 0, -0.5, 4700000)


def test_synth_settings_replace_dicts():
    cfg = synth_config("/tmp/x", 2, 5, {"style.tarp_colors": {"red": [150, 58, 48]},
                                        "style.haze": [0.4, 0.5], "size": [300, 300]})
    assert dict(cfg.style.tarp_colors) == {"red": [150, 58, 48]}
    assert list(cfg.style.haze) == [0.4, 0.5] and cfg.n_scenes == 2 and cfg.seed == 5


def _striped_scene(tmp_path, angle_deg):
    """Bright car bodies along a track at ``angle_deg`` on a dark ground."""
    import cv2

    image = np.full((200, 200), 40, np.uint8)
    cars = [obb_corners(100 + d * np.cos(np.radians(angle_deg)),
                        100 + d * np.sin(np.radians(angle_deg)), 28, 6, np.radians(angle_deg))
            for d in (-60, -30, 0, 30, 60)]
    for c in cars:
        cv2.fillPoly(image, [np.round(c).astype(np.int32)], 220)
    path = tmp_path / "s.tif"
    write_geotiff(path, np.stack([image] * 3), TRANSFORM, UTM)
    write_geojson(path.with_suffix(".geojson"),
                  [LabelledPolygon(pixel_to_map(c, TRANSFORM), "freight_car") for c in cars], UTM)
    return path


def test_rotate_scene_moves_pixels_and_labels_together(tmp_path):
    src = _striped_scene(tmp_path, 10)
    out = rotate_scene(src, src.with_suffix(".geojson"), 45, tmp_path / "r" / "s.tif")
    polys, crs = read_geojson(out.with_suffix(".geojson"))
    with open_raster(out) as ds:
        px = to_pixel(polys, crs, ds.crs, ds.transform)
        band = ds.read(1)
        assert ds.transform == TRANSFORM and ds.crs == UTM
    assert len(px) == 5
    assert dominant_angle(px) == pytest.approx(45, abs=1)
    for poly in px:
        cx, cy, *_ = corners_to_obb(poly.corners)
        assert band[round(cy), round(cx)] > 180  # the label's centre sits on a bright body
        assert np.degrees(corners_to_obb(poly.corners)[4]) == pytest.approx(45, abs=0.5)


def test_headline_and_tables(tmp_path):
    report = {"counting": {"wagons": {"mae": 1.5, "mape": 2.0, "bias": -1.0, "coverage": 0.9,
                                      "mean_width": 4.0}},
              "detection": {"map50": 0.8, "classes": {"covered_car": {"f1": 0.95}}},
              "seam_duplicates": {"total": 3}}
    row = headline(report)
    assert row["wagon_mae"] == 1.5 and row["covered_f1"] == 0.95 and row["duplicates"] == 3
    assert headline({})["wagon_mae"] is None
    rows = [{"condition": "a", **row}, {"condition": "b", **headline({})}]
    table = format_table(rows, ["condition", "wagon_mae", "coverage"])
    assert table.splitlines()[2].split("|")[2].strip() == "1.500"
    assert "–" in table.splitlines()[3]
    save_results(tmp_path, "exp", rows, {"seed": 1})
    assert json.loads((tmp_path / "exp.json").read_text())["rows"][0]["condition"] == "a"
    assert (tmp_path / "exp.md").read_text().startswith("| condition")
