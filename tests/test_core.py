"""Shared building blocks: geometry, atomic writes, labels GeoJSON round trip."""

import numpy as np
import pytest
from affine import Affine
from rasterio.crs import CRS

from detector.atomic import atomic_path
from detector.geometry import (
    corners_to_obb,
    map_to_pixel,
    obb_corners,
    pixel_to_map,
    polygon_iou,
    visible_fraction,
)
from detector.labels import LabelledPolygon, read_geojson, to_pixel, write_geojson


def test_obb_round_trip():
    corners = obb_corners(10.0, 20.0, 28.0, 6.0, np.deg2rad(30))
    cx, cy, length, width, angle = corners_to_obb(corners)
    assert (cx, cy) == pytest.approx((10.0, 20.0))
    assert (length, width) == pytest.approx((28.0, 6.0))
    assert angle == pytest.approx(np.deg2rad(30))


def test_iou_and_visible_fraction():
    a = obb_corners(0, 0, 10, 2, 0)
    b = obb_corners(5, 0, 10, 2, 0)
    assert polygon_iou(a, a) == pytest.approx(1.0)
    assert polygon_iou(a, b) == pytest.approx(1 / 3)
    assert visible_fraction(a, (0, -5, 10, 5)) == pytest.approx(0.5)


def test_pixel_map_round_trip():
    transform = Affine(0.5, 0, 500000, 0, -0.5, 4700000)
    pts = np.array([[0.0, 0.0], [100.5, 7.25]])
    assert np.allclose(map_to_pixel(pixel_to_map(pts, transform), transform), pts)


def test_atomic_path_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_labels_geojson_round_trip_with_reprojection(tmp_path):
    utm = CRS.from_epsg(32652)
    transform = Affine(0.5, 0, 500000, 0, -0.5, 4700000)
    corners = pixel_to_map(obb_corners(100, 50, 28, 6, 0.3), transform)
    write_geojson(tmp_path / "l.geojson", [LabelledPolygon(corners, "covered_car")], utm)
    polys, crs = read_geojson(tmp_path / "l.geojson", ["covered_car"])
    assert crs == utm and polys[0].cls == "covered_car"
    px = to_pixel(polys, crs, utm, transform)[0].corners
    assert np.allclose(px, obb_corners(100, 50, 28, 6, 0.3), atol=0.01)
