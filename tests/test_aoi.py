"""Every valid GeoJSON polygon form is one AOI: holes, MultiPolygons, Features, bare
geometries, lon/lat by default (RFC 7946), a ``crs`` member honoured, bowties repaired."""

import json
import logging

import numpy as np
import pytest
import rasterio
from rasterio.warp import transform as warp

from detector.errors import DetectorError
from detector.geometry import pixel_to_map
from detector.infer.aoi import aoi_pixels, load_aoi, read_aoi
from detector.infer.api import config
from detector.infer.scene import plan_scene
from tests.helpers import UTM
from tests.test_infer_pipeline import fake_bundle, infer, planted_scene


def lonlat(ring_px, transform):
    """A pixel ring → [[lon, lat], ...] closed, as GeoJSON writes it."""
    xy = pixel_to_map(np.asarray(ring_px, float), transform)
    lon, lat = warp(UTM, "EPSG:4326", xy[:, 0], xy[:, 1])
    pts = [[float(a), float(b)] for a, b in zip(lon, lat, strict=True)]
    return pts + pts[:1]


def utm(ring_px, transform):
    xy = pixel_to_map(np.asarray(ring_px, float), transform)
    pts = [[float(a), float(b)] for a, b in xy]
    return pts + pts[:1]


def rect(x0, y0, x1, y1):
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


def write(path, doc):
    path.write_text(json.dumps(doc))
    return path


def feature_collection(geometry, crs=None):
    doc = {"type": "FeatureCollection",
           "features": [{"type": "Feature", "properties": {"name": "station"},
                         "geometry": geometry}]}
    if crs:
        doc["crs"] = {"type": "name", "properties": {"name": crs}}
    return doc


def centres(truth):
    return np.array([c.mean(axis=0) for c, _ in truth])


@pytest.fixture
def yard(tmp_path):
    scene = tmp_path / "yard.tif"
    truth, transform = planted_scene(scene)
    return scene, truth, transform


def test_hole_excludes_cars_and_area_and_tiles(tmp_path, yard):
    scene, truth, transform = yard
    # whole scene, with a hole over the covered-car string (x 40-150, y 150-260 px)
    outer, hole = rect(-5, -5, 425, 325), rect(20, 130, 170, 290)
    aoi = write(tmp_path / "holed.geojson",
                {"type": "Polygon", "coordinates": [lonlat(outer, transform),
                                                    lonlat(hole, transform)]})
    c = centres(truth)
    in_hole = (c[:, 0] > 20) & (c[:, 0] < 170) & (c[:, 1] > 130) & (c[:, 1] < 290)
    assert 0 < in_hole.sum() < len(truth)
    [res] = infer(tmp_path, scene, aoi=str(aoi), quicklook=False)
    assert res.ok, res.error
    assert res.counts["wagons"]["count"] == len(truth) - in_hole.sum()
    full_km2 = 420 * 320 * 0.25 / 1e6
    assert res.counts["area_km2"] == pytest.approx(full_km2 - 150 * 160 * 0.25 / 1e6, rel=0.02)


def test_tiles_wholly_inside_a_hole_are_not_read(tmp_path):
    scene = tmp_path / "big.tif"
    _, transform = planted_scene(scene, size=(640, 640))
    aoi = write(tmp_path / "ring.geojson", {"type": "Polygon", "coordinates": [
        lonlat(rect(0, 0, 640, 640), transform), lonlat(rect(20, 20, 620, 620), transform)]})
    card = fake_bundle().card
    with rasterio.open(scene) as src:
        plan = plan_scene(src, scene, card, config(scene, aoi=str(aoi)))
        no_aoi = plan_scene(src, scene, card, config(scene))
    assert len(plan.tiles) < len(no_aoi.tiles)
    assert plan.area.area == pytest.approx(640 ** 2 - 600 ** 2, rel=0.01)


@pytest.mark.parametrize("form", ["multipolygon_one_part", "feature", "bare_polygon",
                                  "geometry_collection", "multipolygon_two_parts"])
def test_every_polygon_form_counts_the_same_cars(tmp_path, yard, form):
    scene, truth, transform = yard
    left, right = lonlat(rect(0, 0, 200, 320), transform), lonlat(rect(200, 0, 420, 320),
                                                                    transform)
    poly = {"type": "Polygon", "coordinates": [left]}
    doc = {"multipolygon_one_part": feature_collection(
               {"type": "MultiPolygon", "coordinates": [[left]]}),
           "feature": {"type": "Feature", "properties": {}, "geometry": poly},
           "bare_polygon": poly,
           "geometry_collection": {"type": "GeometryCollection", "geometries": [poly]},
           "multipolygon_two_parts": {"type": "MultiPolygon",
                                      "coordinates": [[left], [right]]}}[form]
    aoi = write(tmp_path / f"{form}.geojson", doc)
    [res] = infer(tmp_path, scene, aoi=str(aoi), quicklook=False)
    assert res.ok, res.error
    expected = (len(truth) if form == "multipolygon_two_parts"
                else int((centres(truth)[:, 0] < 200).sum()))
    assert expected > 0
    assert res.counts["wagons"]["count"] == expected


def test_qgis_multipolygon_with_urn_crs_member_in_the_scene_crs(tmp_path, yard):
    scene, truth, transform = yard
    aoi = write(tmp_path / "qgis.geojson", feature_collection(
        {"type": "MultiPolygon", "coordinates": [[utm(rect(0, 0, 200, 320), transform)]]},
        crs="urn:ogc:def:crs:EPSG::32652"))
    [res] = infer(tmp_path, scene, aoi=str(aoi), quicklook=False)
    assert res.ok, res.error
    assert res.counts["wagons"]["count"] == int((centres(truth)[:, 0] < 200).sum())


def test_bowtie_is_repaired_with_a_warning_not_halved(tmp_path, yard, caplog):
    scene, truth, transform = yard
    # a ring crossing itself at x=210: both triangles together cover the left and right ends
    bowtie = [[0, 0], [420, 320], [420, 0], [0, 320]]
    aoi = write(tmp_path / "bowtie.geojson",
                feature_collection({"type": "Polygon", "coordinates": [lonlat(bowtie,
                                                                              transform)]}))
    with caplog.at_level(logging.WARNING):
        area = aoi_pixels(aoi, UTM, transform)
    assert "invalid" in caplog.text and "make_valid" in caplog.text
    assert area.area == pytest.approx(420 * 320 / 2, rel=0.01)  # both halves
    c = centres(truth)
    x, y = c[:, 0], c[:, 1]
    # inside the bowtie: between the two diagonals, on the left or right side
    d1, d2 = y - x * 320 / 420, y - (320 - x * 320 / 420)
    expected = int(((d1 * d2) < 0).sum())
    assert 0 < expected < len(truth)
    [res] = infer(tmp_path, scene, aoi=str(aoi), quicklook=False)
    assert res.counts["wagons"]["count"] == expected


def test_lonlat_is_the_default_and_projected_coordinates_without_crs_are_refused(
        tmp_path, yard):
    scene, truth, transform = yard
    aoi = write(tmp_path / "utm_no_crs.geojson",
                {"type": "Polygon", "coordinates": [utm(rect(0, 0, 200, 320), transform)]})
    with pytest.raises(DetectorError, match="longitude/latitude.*RFC 7946.*EPSG:32652"):
        load_aoi(aoi, UTM, transform, 420, 320)
    # the same numbers with the crs member: read in UTM
    doc = json.loads(aoi.read_text()) | {"crs": {"type": "name",
                                                 "properties": {"name": "EPSG:32652"}}}
    area = load_aoi(write(tmp_path / "utm.geojson", doc), UTM, transform, 420, 320)
    assert area.area == pytest.approx(200 * 320, rel=1e-6)


def test_scene_without_crs_reads_the_aoi_in_pixels(tmp_path):
    aoi = write(tmp_path / "px.geojson", {"type": "Polygon", "coordinates": [
        rect(10, 10, 60, 40) + [[10, 10]]]})
    area = load_aoi(aoi, None, rasterio.Affine.identity(), 100, 50)
    assert area.area == pytest.approx(50 * 30)


@pytest.mark.parametrize("doc, message", [
    ({"type": "LineString", "coordinates": [[0, 0], [1, 1]]}, "LineString; an AOI is a Polygon"),
    ({"type": "FeatureCollection", "features": []}, "no polygon"),
    ({"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [2, 2], [0, 0]]]}, "no polygon"),
    ([1, 2], "not a GeoJSON object"),
    ({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]],
      "crs": {"type": "name", "properties": {"name": "EPSG:nope"}}}, "'crs' member"),
])
def test_bad_aoi_is_one_clear_line(tmp_path, doc, message):
    path = write(tmp_path / "bad.geojson", doc)
    with pytest.raises(DetectorError, match=message) as err:
        read_aoi(path) and aoi_pixels(path, UTM, rasterio.Affine(0.5, 0, 0, 0, -0.5, 0))
    assert "\n" not in str(err.value) and "bad.geojson" in str(err.value)


def test_missing_aoi_is_refused_before_any_scene(tmp_path, yard):
    scene, _, _ = yard
    with pytest.raises(DetectorError, match="nope.geojson: AOI file not found"):
        infer(tmp_path, scene, aoi=str(tmp_path / "nope.geojson"))
    assert not (tmp_path / "out").exists()
