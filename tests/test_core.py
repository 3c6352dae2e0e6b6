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
    window_starts,
)
from detector.labels import LabelledPolygon, read_geojson, to_pixel, write_geojson
from detector.tables import text_table


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


@pytest.mark.parametrize(("start", "stop", "side", "stride"),
                         [(0, 1000, 128, 112), (64, 300, 128, 100), (0, 128, 128, 112),
                          (0, 50, 128, 112)])
def test_window_starts_cover_the_range_without_leaving_it(start, stop, side, stride):
    starts = window_starts(start, stop, side, stride)
    assert starts[0] == start
    if stop - start >= side:
        assert starts[-1] + side == stop
        assert all(b - a <= stride for a, b in zip(starts, starts[1:], strict=False))
        assert all(start <= s and s + side <= stop for s in starts)


def test_text_table_pads_columns_in_both_layouts():
    md = text_table(["a", "long"], [["xyz", "1"], ["", "22"]])
    assert md.splitlines() == ["| a   | long |", "|-----|------|", "| xyz | 1    |",
                               "|     | 22   |"]
    assert text_table(["a", "b"], [["xyz", "1"]], markdown=False).splitlines() == [
        "a    b", "xyz  1"]
    assert text_table(["a"], []) == "| a |\n|---|"
