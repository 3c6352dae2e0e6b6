"""Georeferencing, ground resolution, tile grids and AOIs against independent references:
rasterio/GDAL's own transforms and sampling, and values worked out by hand.

No expected value here is computed by the function under test or by its inverse.
"""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import rasterio
import rasterio.transform
from affine import Affine
from rasterio.crs import CRS
from rasterio.warp import reproject

from detector.bundle import default_card
from detector.geometry import (
    apply_affine,
    corners_to_obb,
    map_to_pixel,
    obb_corners,
    pixel_to_map,
    polygon_iou,
    visible_fraction,
    window_starts,
)
from detector.infer.aoi import aoi_pixels, inside, load_aoi
from detector.infer.scene import plan_scene, scene_counts
from detector.infer.tiling import core_bounds, tile_grid
from detector.raster import RESAMPLING, scene_m_per_px, write_geotiff
from tests.helpers import CLASSES

UTM33N = Affine(0.5, 0, 400000, 0, -0.5, 5000000)
# A rotated, sheared transform: every coefficient matters.
SKEWED = Affine(0.4, 0.1, 612345.5, 0.05, -0.6, 4200100.25)


# --- pixel <-> map --------------------------------------------------------------------------

@pytest.mark.parametrize("transform", [UTM33N, SKEWED, Affine(2.0, 0, -180.0, 0, 2.0, -90.0)])
def test_pixel_to_map_matches_rasterio_xy_at_corners_and_centres(transform):
    rows = np.array([0, 0, 7, 149, 3])
    cols = np.array([0, 5, 0, 419, 11])
    for offset, shift in (("ul", 0.0), ("center", 0.5), ("lr", 1.0)):
        xs, ys = rasterio.transform.xy(transform, rows, cols, offset=offset)
        ours = pixel_to_map(np.column_stack([cols + shift, rows + shift]), transform)
        assert np.allclose(ours, np.column_stack([xs, ys]), rtol=0, atol=1e-6), offset


@pytest.mark.parametrize("transform", [UTM33N, SKEWED])
def test_map_to_pixel_matches_rasterio_rowcol(transform):
    rng = np.random.default_rng(0)
    px = rng.uniform(0, 300, size=(50, 2))
    # map points from rasterio's own forward transform of pixel corners plus a fraction
    xs, ys = rasterio.transform.xy(transform, np.floor(px[:, 1]), np.floor(px[:, 0]),
                                   offset="ul")
    frac = px - np.floor(px)
    xs = np.asarray(xs) + transform.a * frac[:, 0] + transform.b * frac[:, 1]
    ys = np.asarray(ys) + transform.d * frac[:, 0] + transform.e * frac[:, 1]
    rows, cols = rasterio.transform.rowcol(transform, xs, ys)
    ours = map_to_pixel(np.column_stack([xs, ys]), transform)
    assert np.array_equal(np.floor(ours[:, 0] + 1e-9).astype(int), np.asarray(cols))
    assert np.array_equal(np.floor(ours[:, 1] + 1e-9).astype(int), np.asarray(rows))
    assert np.allclose(ours, px, atol=1e-6)


def test_pixel_to_map_by_hand_and_apply_affine_keeps_leading_shape():
    # 0.5 m pixels from (400000, 5000000): pixel (col 10, row 4) corner -> (400005, 4999998)
    assert pixel_to_map(np.array([[10.0, 4.0]]), UTM33N).tolist() == [[400005.0, 4999998.0]]
    assert map_to_pixel(np.array([[400005.0, 4999998.0]]), UTM33N).tolist() == [[10.0, 4.0]]
    corners = np.zeros((3, 4, 2))
    corners[1] = 2.0
    out = apply_affine(corners, SKEWED)
    assert out.shape == (3, 4, 2)
    assert out[1, 0].tolist() == pytest.approx([0.4 * 2 + 0.1 * 2 + 612345.5,
                                                0.05 * 2 - 0.6 * 2 + 4200100.25])


def test_gdal_samples_the_pixel_our_map_coordinates_name(tmp_path):
    """A pixel planted at (row 5, col 9): GDAL reads it back at the map position we give
    for its centre, and reprojection onto a grid shifted by 3.5 m puts it where we say."""
    data = np.zeros((1, 12, 16), np.uint16)
    data[0, 5, 9] = 1000
    path = tmp_path / "dot.tif"
    write_geotiff(path, data, UTM33N, CRS.from_epsg(32633))
    centre = pixel_to_map(np.array([[9.5, 5.5]]), UTM33N)[0]
    quarter = pixel_to_map(np.array([[9.2, 5.8]]), UTM33N)[0]
    with rasterio.open(path) as src:
        assert [v[0] for v in src.sample([tuple(centre), tuple(quarter)])] == [1000, 1000]
        assert src.index(*centre) == (5, 9)
        # a grid 7 px (3.5 m) east and 2 px north of the scene's
        dst_t = Affine(0.5, 0, 400003.5, 0, -0.5, 5000001.0)
        out = np.zeros((1, 20, 20), np.uint16)
        reproject(data, out, src_transform=UTM33N, src_crs=src.crs, dst_transform=dst_t,
                  dst_crs=src.crs, resampling=rasterio.enums.Resampling.nearest)
    row, col = np.argwhere(out[0] == 1000)[0]
    ours = map_to_pixel(centre[None], dst_t)[0]
    assert (int(ours[0]), int(ours[1])) == (col, row) == (2, 7)


# --- shapes by hand --------------------------------------------------------------------------

def test_obb_corners_and_back_by_hand():
    c = obb_corners(10.0, 20.0, 8.0, 2.0, 0.0)
    assert c.tolist() == [[6.0, 19.0], [14.0, 19.0], [14.0, 21.0], [6.0, 21.0]]
    c = obb_corners(0.0, 0.0, 4.0, 2.0, math.pi / 2)
    assert np.allclose(c, [[1, -2], [1, 2], [-1, 2], [-1, -2]])
    cx, cy, length, width, angle = corners_to_obb([[0, 0], [0, 6], [2, 6], [2, 0]])
    assert (cx, cy, length, width) == pytest.approx((1.0, 3.0, 6.0, 2.0))
    assert angle == pytest.approx(math.pi / 2)
    _, _, length, width, angle = corners_to_obb(obb_corners(0, 0, 10, 3, math.radians(150)))
    assert (length, width, angle) == pytest.approx((10.0, 3.0, math.radians(150)))
    # every direction, corners listed either way round: the angle is the long side's
    for deg in range(0, 180, 15):
        for order in (1, -1):
            c = obb_corners(3.0, 4.0, 10.0, 3.0, math.radians(deg))[::order]
            assert corners_to_obb(c) == pytest.approx((3.0, 4.0, 10.0, 3.0, math.radians(deg)),
                                                      abs=1e-9), (deg, order)


def test_iou_and_visible_fraction_by_hand():
    a = [[0, 0], [2, 0], [2, 2], [0, 2]]
    b = [[1, 1], [3, 1], [3, 3], [1, 3]]
    assert polygon_iou(a, b) == pytest.approx(1 / 7)  # 1 / (4 + 4 - 1)
    assert polygon_iou(a, [[5, 5], [6, 5], [6, 6], [5, 6]]) == 0.0
    # self-intersecting: repaired by buffer(0), which keeps one lobe (area 1) -> 1 / 4
    bowtie = [[0, 0], [2, 2], [2, 0], [0, 2]]
    assert polygon_iou(bowtie, a) == pytest.approx(0.25)
    assert polygon_iou(a, bowtie) == pytest.approx(0.25)
    # small polygons (union below 1) and degenerate ones (no area at all)
    tiny = [[0, 0], [0.5, 0], [0.5, 0.5], [0, 0.5]]
    assert polygon_iou(tiny, tiny) == pytest.approx(1.0)
    line = [[0, 0], [1, 1], [2, 2], [0, 0]]
    assert polygon_iou(line, line) == 0.0
    assert visible_fraction(a, (1, 0, 10, 10)) == pytest.approx(0.5)
    assert visible_fraction(a, (1, 1, 10, 10)) == pytest.approx(0.25)
    assert visible_fraction(tiny, (0, 0, 5, 5)) == pytest.approx(1.0)
    assert visible_fraction(tiny, (0.25, 0, 5, 5)) == pytest.approx(0.5)
    assert visible_fraction(line, (0, 0, 5, 5)) == 0.0


@pytest.mark.parametrize(("start", "stop", "side", "stride", "expected"), [
    (0, 420, 128, 96, [0, 96, 192, 288, 292]),
    (0, 150, 128, 96, [0, 22]),
    (0, 128, 128, 96, [0]),
    (0, 129, 128, 96, [0, 1]),
    (0, 1, 128, 96, [0]),
    (10, 30, 8, 8, [10, 18, 22]),
    (10, 15, 8, 4, [10]),   # shorter than a window, away from the origin
    (10, 18, 8, 4, [10]),
    (10, 19, 8, 4, [10, 11]),
    (0, 10, 4, 0, [0, 1, 2, 3, 4, 5, 6]),  # stride 0 is treated as 1
])
def test_window_starts_by_hand(start, stop, side, stride, expected):
    assert window_starts(start, stop, side, stride) == expected


# --- tile grids: tall, wide, one row, one column -------------------------------------------

@pytest.mark.parametrize(("width", "height", "xs", "ys"), [
    (150, 420, [0, 22], [0, 96, 192, 288, 292]),   # taller than wide
    (420, 150, [0, 96, 192, 288, 292], [0, 22]),   # wider than tall
    (1, 420, [0], [0, 96, 192, 288, 292]),          # one column
    (420, 1, [0, 96, 192, 288, 292], [0]),          # one row
    (1, 1, [0], [0]),
])
def test_tile_grid_covers_tall_wide_one_row_and_one_column_scenes(width, height, xs, ys):
    tiles = tile_grid(width, height, 128, 32)
    assert [t.x0 for t in tiles if t.row == 0] == xs
    assert [t.y0 for t in tiles if t.col == 0] == ys
    assert [(t.row, t.col) for t in tiles] == [(r, c) for r in range(len(ys))
                                               for c in range(len(xs))]
    assert all(t.size == 128 and t.name == f"r{t.row}c{t.col}" for t in tiles)
    # every pixel is read by a tile, and its centre is owned by exactly one core
    cols, rows = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    centres = np.column_stack([cols.ravel(), rows.ravel()])
    owners = np.sum([t.owns(centres) for t in tiles], axis=0)
    assert (owners == 1).all()
    read = np.zeros((height, width), bool)
    for t in tiles:
        w = t.window
        assert (w.col_off, w.row_off, w.width, w.height) == (t.x0, t.y0, 128, 128)
        read[t.y0:t.y0 + 128, t.x0:t.x0 + 128] = True
    assert read.all()


def test_core_bounds_by_hand_and_owns_edges():
    # starts 0, 96, 192 of 128-px tiles: cuts mid-overlap at (96 + 128) / 2 = 112, 208
    assert core_bounds([0, 96, 192], 128) == [(-math.inf, 112.0), (112.0, 208.0),
                                              (208.0, math.inf)]
    assert core_bounds([0], 128) == [(-math.inf, math.inf)]
    # 300 px, 128-px tiles, overlap 32: starts 0, 96, 172; cuts 112 and (172 + 96 + 128) / 2
    tiles = tile_grid(300, 300, 128, 32)
    t = tiles[4]
    assert (t.row, t.col, t.x0, t.y0) == (1, 1, 96, 96)
    assert t.core == (112.0, 112.0, 198.0, 198.0)
    xmin, ymin, xmax, ymax = t.core
    pts = np.array([[xmin, ymin], [xmax, 150], [150, ymax], [xmax - 1e-9, ymax - 1e-9],
                    [xmin - 2, 150], [150, ymin - 2], [xmax + 1.5, 150], [150, ymax + 1.5],
                    [xmin + 0.5, 150], [150, ymin + 0.5]])
    # half-open: the low edges are in, the high edges out
    assert t.owns(pts).tolist() == [True, False, False, True, False, False, False, False,
                                    True, True]
    # a margin of 2 px lets in points up to 2 px outside on every side
    assert t.owns(pts, margin=2.0).tolist() == [True] * 10
    assert t.owns(pts, margin=1.0).tolist() == [True, True, True, True, False, False, False,
                                                False, True, True]
    assert t.owns([[xmin - 2.01, 150], [150, ymin - 2.01], [xmax + 2, 150], [150, ymax + 2]],
                  margin=2.0).tolist() == [False] * 4
    assert t.owns([xmin, ymin]).shape == (1,)
    assert t.owns(np.array([[150, 150]], dtype=np.int64)).tolist() == [True]
    with pytest.raises(ValueError, match=r"need 0 <= overlap \(64\) < tile size \(64\)"):
        tile_grid(100, 100, 64, 64)
    for size, overlap in [(0, 0), (-4, -8), (64, -1), (64, 65)]:
        with pytest.raises(ValueError, match="overlap"):
            tile_grid(100, 100, size, overlap)
    # the smallest legal grids: no overlap, and 1-px tiles
    assert [t.x0 for t in tile_grid(4, 1, 2, 0)] == [0, 2]
    assert [(t.x0, t.y0) for t in tile_grid(2, 2, 1, 0)] == [(0, 0), (1, 0), (0, 1), (1, 1)]


# --- ground resolution -------------------------------------------------------------------

def one_px_scene(tmp_path, transform, crs, name="g.tif"):
    path = tmp_path / name
    write_geotiff(path, np.zeros((1, 4, 4), np.uint8), transform, crs)
    return path


@pytest.mark.parametrize("lat", [60.0, -60.0])
def test_geographic_resolution_uses_cos_latitude(tmp_path, lat):
    # 5e-6 degree pixels at 60 N/S. Reference: PROJ (rasterio.warp.transform) projects one
    # pixel step each way into the local UTM zone and measures it in metres (UTM's scale error
    # near its central meridian is < 0.04%): about 0.279 m across (cos 60 = 0.5 of a degree
    # of latitude's 0.557 m) and 0.557 m down; the summary m/px is their geometric mean
    # (equal ground area), 0.394. Without cos(latitude) it would be 0.557.
    from rasterio.warp import transform as warp

    res, lon = 5e-6, 27.0  # the central meridian of UTM zone 35
    transform = Affine(res, 0, lon, 0, -res, lat + 2 * res)  # 4 rows: centre at lat
    path = one_px_scene(tmp_path, transform, CRS.from_epsg(4326))
    utm = CRS.from_epsg(32635 if lat > 0 else 32735)
    xs, ys = warp(CRS.from_epsg(4326), utm, [lon, lon + res, lon], [lat, lat, lat + res])
    across = float(np.hypot(xs[1] - xs[0], ys[1] - ys[0])) / 0.9996  # UTM's k0
    down = float(np.hypot(xs[2] - xs[0], ys[2] - ys[0])) / 0.9996
    assert across == pytest.approx(down / 2, rel=0.01)  # cos(60 degrees)
    with rasterio.open(path) as src:
        mpp = scene_m_per_px(src)
    assert mpp == pytest.approx(float(np.sqrt(across * down)), rel=2e-3)
    assert abs(mpp - down) > 0.1


@pytest.mark.parametrize(("epsg", "transform", "expected"), [
    (32633, Affine(0.5, 0, 400000, 0, -0.5, 5000000), 0.5),
    (32733, Affine(0.3, 0, 400000, 0, -0.3, 7000000), 0.3),            # south
    # non-square pixels: the summary is the geometric mean (equal area), sqrt(0.5 * 0.7)
    (32617, Affine(0.5, 0, 400000, 0, -0.7, 5000000), 0.5916079783),
    (2263, Affine(1.0, 0, 900000, 0, -1.0, 200000), 0.3048006096),     # US survey feet
])
def test_projected_resolution_in_metres(tmp_path, epsg, transform, expected):
    path = one_px_scene(tmp_path, transform, CRS.from_epsg(epsg))
    with rasterio.open(path) as src:
        assert scene_m_per_px(src) == pytest.approx(expected, rel=1e-6)


def test_no_crs_no_resolution(tmp_path):
    path = one_px_scene(tmp_path, Affine(0.5, 0, 0, 0, -0.5, 0), None)
    with rasterio.open(path) as src:
        assert scene_m_per_px(src) is None


# --- AOIs in every quadrant: pixels and area_km2 -------------------------------------------

def empty_counts(src, scene, cfg):
    """The counts JSON of ``scene`` with no detections, planned as ``cfg`` says (AOI too)."""
    card = default_card("obb", CLASSES, 128, m_per_px=0.5)
    plan = plan_scene(src, scene, card, cfg)
    bundle = SimpleNamespace(card=card, classes=CLASSES, weights="w.pt", sha256="0",
                             device="cpu", half=False)
    return scene_counts(scene, [], bundle, plan, cfg, 0.0, src)


def aoi_file(path, ring, epsg):
    path.write_text(json.dumps({
        "type": "FeatureCollection",
        "crs": {"type": "name", "properties": {"name": f"urn:ogc:def:crs:EPSG::{epsg}"}},
        "features": [{"type": "Feature", "properties": {},
                      "geometry": {"type": "Polygon", "coordinates": [ring + ring[:1]]}}]}))
    return path


# Scenes in the four quadrants of the globe: UTM north/south zones east/west of Greenwich.
QUADRANTS = [(32633, 400000, 5000000), (32733, 400000, 7000000),
             (32617, 600000, 4000000), (32717, 600000, 8000000)]
# AOIs in the four quadrants of the 200 x 160 px (100 m x 80 m) scene, in map metres from
# the scene's top-left corner: (east, south) offsets of a 20 m x 15 m rectangle.
CORNERS = {"top_left": (10, 5), "top_right": (70, 5), "bottom_left": (10, 60),
           "bottom_right": (70, 60)}


@pytest.mark.parametrize(("epsg", "x0", "y0"), QUADRANTS)
@pytest.mark.parametrize("where", list(CORNERS))
def test_aoi_in_every_quadrant_lands_on_its_pixels_with_its_area(tmp_path, infer_cfg, epsg,
                                                                 x0, y0, where):
    transform = Affine(0.5, 0, x0, 0, -0.5, y0)
    scene = tmp_path / "scene.tif"
    write_geotiff(scene, np.full((3, 160, 200), 100, np.uint8), transform, CRS.from_epsg(epsg))
    de, ds = CORNERS[where]
    ring = [[x0 + de, y0 - ds], [x0 + de + 20, y0 - ds], [x0 + de + 20, y0 - ds - 15],
            [x0 + de, y0 - ds - 15]]
    aoi = aoi_file(tmp_path / "aoi.geojson", ring, epsg)
    with rasterio.open(scene) as src:
        area = load_aoi(aoi, src.crs, src.transform, src.width, src.height)
        # by hand: 2 px per metre, rows grow southwards
        assert area.bounds == pytest.approx((2 * de, 2 * ds, 2 * de + 40, 2 * ds + 30))
        assert area.area == pytest.approx(40 * 30)
        inner = np.array([[2 * de + 1, 2 * ds + 1], [2 * de + 39, 2 * ds + 29]])
        outer = np.array([[2 * de - 1, 2 * ds + 1], [2 * de + 1, 2 * ds + 31]])
        assert inside(area, inner).all() and not inside(area, outer).any()
        counts = empty_counts(src, scene, infer_cfg(str(scene), None, aoi=str(aoi)))
    assert counts["m_per_px"] == 0.5
    assert counts["area_km2"] == pytest.approx(20 * 15 / 1e6, rel=1e-6)  # 300 m^2
    assert counts["wagons"] == {"count": 0, "expected": 0.0, "ci95": [0, 0]}


def test_aoi_reaching_past_the_scene_is_clipped_and_area_follows(tmp_path, infer_cfg):
    x0, y0 = 400000, 5000000
    transform = Affine(0.5, 0, x0, 0, -0.5, y0)
    scene = tmp_path / "scene.tif"
    write_geotiff(scene, np.full((3, 160, 200), 100, np.uint8), transform,
                  CRS.from_epsg(32633))
    # 30 m x 20 m, half of it west of the scene: 15 m x 20 m inside
    ring = [[x0 - 15, y0 - 10], [x0 + 15, y0 - 10], [x0 + 15, y0 - 30], [x0 - 15, y0 - 30]]
    aoi = aoi_file(tmp_path / "aoi.geojson", ring, 32633)
    with rasterio.open(scene) as src:
        whole = aoi_pixels(aoi, src.crs, src.transform)
        assert whole.bounds == pytest.approx((-30, 20, 30, 60))
        area = load_aoi(aoi, src.crs, src.transform, src.width, src.height)
        assert area.bounds == pytest.approx((0, 20, 30, 60))
        counts = empty_counts(src, scene, infer_cfg(str(scene), None, aoi=str(aoi)))
        full = empty_counts(src, scene, infer_cfg(str(scene), None))
    assert counts["area_km2"] == pytest.approx(15 * 20 / 1e6)
    assert full["area_km2"] == pytest.approx(100 * 80 / 1e6)
    assert inside(None, np.zeros((3, 2))).tolist() == [True, True, True]


def test_resampling_is_bilinear():
    # one resampling for training chips and inference tiles; changing it retrains the model
    assert rasterio.enums.Resampling.bilinear == RESAMPLING


def test_aoi_errors_name_the_file(tmp_path):
    from detector.errors import DetectorError

    transform = Affine(0.5, 0, 400000, 0, -0.5, 5000000)
    crs = CRS.from_epsg(32633)
    with pytest.raises(DetectorError, match="nowhere.geojson.*AOI"):
        aoi_pixels(tmp_path / "nowhere.geojson", crs, transform)
    empty = tmp_path / "empty.geojson"
    empty.write_text(json.dumps({"type": "FeatureCollection", "features": []}))
    with pytest.raises(DetectorError, match="empty.geojson.*polygon"):
        aoi_pixels(empty, crs, transform)
    far = aoi_file(tmp_path / "far.geojson", [[0, 0], [10, 0], [10, 10], [0, 10]], 32633)
    with pytest.raises(DetectorError, match="far.geojson.*does not overlap"):
        load_aoi(far, crs, transform, 200, 160)
    # touching the scene along an edge only: no area inside -> does not overlap either
    edge = aoi_file(tmp_path / "edge.geojson", [[400100, 5000000], [400110, 5000000],
                                                [400110, 4999990], [400100, 4999990]], 32633)
    with pytest.raises(DetectorError, match="edge.geojson.*does not overlap"):
        load_aoi(edge, crs, transform, 200, 160)


def test_two_aoi_polygons_are_one_area_and_inside_uses_it(tmp_path):
    x0, y0 = 400000, 5000000
    transform = Affine(0.5, 0, x0, 0, -0.5, y0)
    ring_a = [[x0 + 5, y0 - 5], [x0 + 15, y0 - 5], [x0 + 15, y0 - 15], [x0 + 5, y0 - 15]]
    ring_b = [[x0 + 10, y0 - 5], [x0 + 25, y0 - 5], [x0 + 25, y0 - 15], [x0 + 10, y0 - 15]]
    path = tmp_path / "two.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "crs": {
        "type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32633"}}, "features": [
        {"type": "Feature", "properties": {},
         "geometry": {"type": "Polygon", "coordinates": [ring + ring[:1]]}}
        for ring in (ring_a, ring_b)]}))
    area = load_aoi(path, CRS.from_epsg(32633), transform, 200, 160)
    # overlapping 10 m x 10 m and 15 m x 10 m -> 20 m x 10 m once: 40 x 20 px
    assert area.area == pytest.approx(40 * 20) and area.bounds == pytest.approx((10, 10, 50, 30))
    pts = np.array([[12, 12], [45, 25], [55, 20], [30, 5]], float)
    assert inside(area, pts).tolist() == [True, True, False, False]
    assert inside(area, [30.0, 20.0]).tolist() == [True]
