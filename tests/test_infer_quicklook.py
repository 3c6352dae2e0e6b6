"""Quicklook: the overview assembled from tiles equals a decimated read of the scene; the
picture shows classes, the inset and the AOI outline (holes and several parts included)."""

import cv2
import numpy as np
import rasterio
from rasterio.windows import Window
from shapely.geometry import MultiPolygon, Polygon

from detector.infer.quicklook import AOI_COLOR, Overview, area_rings, read_view, render_quicklook
from detector.infer.reader import Stretch, read_tile
from detector.infer.tiling import tile_grid
from detector.quicklook import class_color
from tests.helpers import random_scene

COUNTS = {"scene": "s.tif", "wagons": {"count": 2, "ci95": [1, 3]},
          "classes": {"freight_car": {"count": 1, "ci95": [0, 2]},
                      "tank_car": {"count": 1, "ci95": [0, 2]}}}


def _smooth_scene(path, size=(700, 500)):
    """A scene of smooth gradients (a decimated read and shrunk tiles agree on it)."""
    from detector.raster import write_geotiff
    from tests.helpers import TRANSFORM, UTM

    yy, xx = np.mgrid[0:size[1], 0:size[0]]
    data = np.stack([xx * 255 // size[0], yy * 255 // size[1], (xx + yy) * 255 //
                     (size[0] + size[1])]).astype(np.uint8)
    write_geotiff(path, data, TRANSFORM, UTM)
    return path


def test_overview_from_tiles_equals_a_decimated_read(tmp_path):
    path = _smooth_scene(tmp_path / "s.tif")
    stretch = Stretch([1, 2, 3], np.zeros(3), np.full(3, 255.0))
    with rasterio.open(path) as src:
        overview = Overview(src.width, src.height, 175)
        for tile in tile_grid(src.width, src.height, 256, 32):
            overview.paste(tile, read_tile(src, tile, 128, stretch))
        direct = read_view(src, stretch, Window(0, 0, src.width, src.height),
                           overview.image.shape[:2])
    assert overview.image.shape == (125, 175, 3)
    diff = np.abs(overview.image.astype(int) - direct.astype(int))
    assert np.median(diff) <= 1 and diff.max() <= 6  # resampling differs, content the same


def test_area_rings_cover_exteriors_and_holes():
    square = Polygon([(0, 0), (100, 0), (100, 100), (0, 100)],
                     [[(20, 20), (40, 20), (40, 40), (20, 40)]])
    other = Polygon([(150, 0), (200, 0), (200, 50)])
    rings = area_rings(MultiPolygon([square, other]))
    assert len(rings) == 3 and area_rings(None) == []


def test_quicklook_shows_classes_inset_and_aoi(tmp_path):
    path = random_scene(tmp_path / "s.tif", (600, 400), low=60, high=70)
    stretch = Stretch([1, 2, 3], np.zeros(3), np.full(3, 255.0))
    corners = [np.array([[100, 100], [140, 100], [140, 112], [100, 112]], float),
               np.array([[300, 200], [340, 200], [340, 212], [300, 212]], float)]
    hole = [(420, 250), (480, 250), (480, 300), (420, 300)]
    aoi = MultiPolygon([Polygon([(50, 50), (550, 50), (550, 350), (50, 350)], [hole]),
                        Polygon([(560, 10), (590, 10), (590, 40)])])
    pictures = {}
    with rasterio.open(path) as src:
        for name, area in (("plain", None), ("aoi", aoi)):
            overview = Overview(src.width, src.height, 300)
            for tile in tile_grid(src.width, src.height, 256, 32):
                overview.paste(tile, read_tile(src, tile, 256, stretch))
            out = tmp_path / f"{name}.png"
            render_quicklook(out, overview, src, stretch, corners, ["freight_car", "tank_car"],
                             COUNTS, ["freight_car", "tank_car"], inset_side=120, area=area)
            pictures[name] = cv2.imread(str(out))[..., ::-1]
    plain, with_aoi = pictures["plain"], pictures["aoi"]

    def has(picture, color):
        return bool((np.abs(picture.astype(int) - color).sum(-1) < 30).any())

    for cls in ("freight_car", "tank_car"):
        assert has(plain, class_color(cls))
    assert not has(plain, AOI_COLOR) and has(with_aoi, AOI_COLOR)
    # the hole's ring is drawn: AOI colour where the hole's edge lies in the overview (0.5x),
    # below the title bar (34 px) — found by scanning the hole's top edge
    y = 34 + round(250 * 0.5)
    row = with_aoi[y - 1:y + 2, 8 + 215:8 + 235]
    assert (np.abs(row.astype(int) - AOI_COLOR).sum(-1) < 60).any()
    assert with_aoi.shape[0] > plain.shape[0]  # the legend's AOI note
