"""Scene dates (tags, names, dates.csv) and the imaged share of the AOI."""

from datetime import date

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.warp import transform as warp_transform

from detector.errors import DetectorError
from detector.labels import LabelledPolygon, write_geojson
from detector.monitor.coverage import scene_share
from detector.monitor.dates import (
    DEFAULT_TAGS,
    date_from_tags,
    parse_date,
    read_dates_csv,
    scene_date,
)
from detector.raster import write_geotiff

UTM = CRS.from_epsg(32652)
ORIGIN = (500000.0, 4700000.0)


def tiny_scene(path, size=(200, 100), nodata_cols=0, tags=None, m=0.5, origin=ORIGIN):
    w, h = size
    data = np.full((3, h, w), 90, np.uint8)
    data[:, :, :nodata_cols] = 0
    write_geotiff(path, data, Affine(m, 0, origin[0], 0, -m, origin[1]), UTM,
                  nodata=0 if nodata_cols else None)
    if tags:
        with rasterio.open(path, "r+") as dst:
            dst.update_tags(**tags)
    return path


def aoi_file(path, x0, y0, x1, y1, crs=UTM):
    """A rectangle in metres east/south of ORIGIN, written in ``crs``."""
    xs = np.array([x0, x1, x1, x0]) + ORIGIN[0]
    ys = ORIGIN[1] - np.array([y0, y0, y1, y1])
    if crs != UTM:
        xs, ys = warp_transform(UTM, crs, xs, ys)
    write_geojson(path, [LabelledPolygon(np.column_stack([xs, ys]), "aoi")], crs)
    return path


@pytest.mark.parametrize("text, expected", [
    ("2023-06-14", date(2023, 6, 14)), ("20230614", date(2023, 6, 14)),
    ("2023:06:14 10:31:00", date(2023, 6, 14)), ("tumangang_2019_03_02", date(2019, 3, 2)),
    ("S2A_MSIL2A_20230614T021531_N0509_R003", date(2023, 6, 14)),
    ("pass_1234567890", None), ("scene_000", None), ("20231399", None),
    ("0000:00:00 00:00:00", None), ("2023-06_14", None)])
def test_parse_date(text, expected):
    assert parse_date(text) == expected


def test_acquisition_tags_come_before_tifftag_datetime():
    tags = {"TIFFTAG_DATETIME": "2024:01:05 12:00:00", "acquisition_date": "2023-06-14"}
    assert date_from_tags(tags, DEFAULT_TAGS).day == date(2023, 6, 14)
    assert date_from_tags({"IMAGE_1.FIRSTLINETIME": "2022-02-03T01:02:03Z"}).day == \
        date(2022, 2, 3)
    assert date_from_tags({"TIFFTAG_DATETIME": "junk"}) is None


def test_scene_date_csv_then_tag_then_name(tmp_path):
    tagged = tiny_scene(tmp_path / "a_20200101.tif", tags={"TIFFTAG_DATETIME":
                                                           "2021:07:08 01:30:00"})
    named = tiny_scene(tmp_path / "b_20200101.tif")
    bare = tiny_scene(tmp_path / "c.tif")
    found = scene_date(tagged, {}, DEFAULT_TAGS)
    assert (found.day, found.source) == (date(2021, 7, 8), "tag TIFFTAG_DATETIME")
    assert scene_date(named, {}, DEFAULT_TAGS).source == "file name"
    assert scene_date(bare, {}, DEFAULT_TAGS) is None
    csv_path = tmp_path / "dates.csv"
    csv_path.write_text("scene,date\na_20200101.tif,2019-05-06\nsub/c.tif,20180102\n")
    overrides = read_dates_csv(csv_path)
    assert overrides == {"a_20200101.tif": date(2019, 5, 6), "c.tif": date(2018, 1, 2)}
    assert scene_date(tagged, overrides, DEFAULT_TAGS).source == "dates.csv"
    assert scene_date(bare, overrides, DEFAULT_TAGS).day == date(2018, 1, 2)


@pytest.mark.parametrize("text, message", [
    ("scene,date\nx.tif,someday\n", "line 2"), ("name,when\nx.tif,2020-01-01\n", "columns"),
    ("scene,date\nx.tif,2020-01-01\nx.tif,2020-01-02\n", "listed twice")])
def test_bad_dates_csv_is_one_clear_error(tmp_path, text, message):
    path = tmp_path / "dates.csv"
    path.write_text(text)
    with pytest.raises(DetectorError, match=message):
        read_dates_csv(path)


def test_imaged_share_with_nodata_margin_and_partial_footprint(tmp_path):
    # Scene 100 m x 50 m; the AOI is its middle 60 m x 30 m.
    full = tiny_scene(tmp_path / "full.tif")
    margin = tiny_scene(tmp_path / "margin.tif", nodata_cols=80)  # west 40 m are nodata
    aoi = aoi_file(tmp_path / "aoi.geojson", 20, 10, 80, 40)
    assert scene_share(full, aoi) == pytest.approx(1.0, abs=0.01)
    assert scene_share(margin, aoi) == pytest.approx(40 / 60, abs=0.02)
    # The AOI reaches 60 m past the scene's east edge: only 40 of its 100 m are imaged.
    wide = aoi_file(tmp_path / "wide.geojson", 60, 10, 160, 40)
    assert scene_share(full, wide) == pytest.approx(0.4, abs=0.02)
    # The same AOI in geographic coordinates is reprojected into the scene's CRS.
    geo = aoi_file(tmp_path / "geo.geojson", 20, 10, 80, 40, CRS.from_epsg(4326))
    assert scene_share(margin, geo) == pytest.approx(40 / 60, abs=0.03)
    elsewhere = aoi_file(tmp_path / "far.geojson", 5000, 10, 5060, 40)
    assert scene_share(full, elsewhere) == 0.0
    assert scene_share(margin, None) == pytest.approx(0.6, abs=0.01)  # whole scene
