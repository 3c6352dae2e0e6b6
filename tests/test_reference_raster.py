"""The stretch and the windowed reader against values worked out by hand on tiny rasters."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.env import get_gdal_config

from detector.errors import DetectorError
from detector.raster import (
    check_bands,
    check_normalization,
    gdal_cache,
    open_raster,
    read_image,
    read_window,
    scene_stretch,
    to_uint8,
    valid_mask,
    write_geotiff,
)

T = Affine(0.5, 0, 400000, 0, -0.5, 5000000)
UTM = CRS.from_epsg(32633)


def ramp_scene(tmp_path, name="ramp.tif", nodata=None, dtype=np.uint16):
    """3 bands of 10 x 10: band b holds 100 * (b - 1) + 10 * row + col (0..99, 100..199, ...)."""
    base = np.arange(100, dtype=dtype).reshape(10, 10)
    data = np.stack([base + 100 * b for b in range(3)]).astype(dtype)
    path = tmp_path / name
    write_geotiff(path, data, T, UTM, nodata=nodata)
    return path


# --- stretch ----------------------------------------------------------------------------

def test_joint_percentile_pools_all_bands(tmp_path):
    path = ramp_scene(tmp_path)
    with rasterio.open(path) as src:
        low, high = scene_stretch(src, {"bands": [1, 2, 3], "method": "joint_percentile",
                                        "percentiles": [0.5, 99.5]})
    # pooled 0..299: linear percentile at 0.005 * 299 = 1.495 and 0.995 * 299 = 297.505
    assert low.tolist() == pytest.approx([1.495] * 3)
    assert high.tolist() == pytest.approx([297.505] * 3)


def test_per_band_percentile_and_band_order(tmp_path):
    path = ramp_scene(tmp_path)
    with rasterio.open(path) as src:
        low, high = scene_stretch(src, {"bands": [3, 1], "method": "percentile",
                                        "percentiles": [10, 90]})
        none = scene_stretch(src, {"bands": [1, 2, 3], "method": "none"})
        default = scene_stretch(src, {})
    # band 3 is 200..299, band 1 0..99: 10th percentile at 9.9, 90th at 89.1 above the base
    assert low.tolist() == pytest.approx([209.9, 9.9])
    assert high.tolist() == pytest.approx([289.1, 89.1])
    assert [v.tolist() for v in none] == [[0.0] * 3, [255.0] * 3]
    assert default[0].tolist() == pytest.approx([1.495] * 3)  # joint 0.5/99.5 by default


def test_stretch_ignores_nodata_and_handles_constant_and_empty_scenes(tmp_path):
    data = np.full((3, 6, 6), 50, np.uint8)
    data[:, :2, :] = 0  # nodata rows
    data[:, 3, :] = 80
    path = tmp_path / "nd.tif"
    write_geotiff(path, data, T, UTM, nodata=0)
    with rasterio.open(path) as src:
        low, high = scene_stretch(src, {"method": "joint_percentile", "percentiles": [0, 100]})
        assert low.tolist() == [50.0] * 3 and high.tolist() == [80.0] * 3
        assert valid_mask(src, rasterio.windows.Window(0, 0, 6, 6)).sum() == 24
    flat = tmp_path / "flat.tif"
    write_geotiff(flat, np.full((3, 4, 4), 7, np.uint8), T, UTM)
    with rasterio.open(flat) as src:
        low, high = scene_stretch(src, {"method": "percentile"})
    assert low.tolist() == [7.0] * 3 and (high > low).all() and (high - low < 1e-3).all()
    empty = tmp_path / "empty.tif"
    write_geotiff(empty, np.zeros((3, 4, 4), np.uint8), T, UTM, nodata=0)
    with rasterio.open(empty) as src:
        low, high = scene_stretch(src, {"method": "joint_percentile"})
    assert low.tolist() == [0.0] * 3 and high.tolist() == [1.0] * 3
    with rasterio.open(path) as src, pytest.raises(DetectorError, match="method"):
        scene_stretch(src, {"method": "zscore"})


def test_stretch_of_a_large_scene_reads_a_decimated_copy(tmp_path):
    # 2048 x 512 is read at 1024 x 256 with nearest: output pixel j covers source columns
    # 2j and 2j + 1 and GDAL takes the one under its centre (2j + 1); even rows and columns
    # are never read.
    data = np.full((1, 512, 2048), 1000, np.uint16)
    data[0, 1::2, 1::2] = np.arange(256 * 1024).reshape(256, 1024) % 200
    path = tmp_path / "big.tif"
    write_geotiff(path, data, T, UTM)
    with rasterio.open(path) as src:
        low, high = scene_stretch(src, {"bands": [1], "method": "percentile",
                                        "percentiles": [0, 100]})
    assert (low[0], high[0]) == (0.0, 199.0)


def test_to_uint8_by_hand():
    data = np.array([[[0, 50, 100, 150, 200]], [[0, 50, 100, 150, 200]]], np.uint16)
    out = to_uint8(data, np.array([50.0, 0.0]), np.array([150.0, 200.0]))
    # band 1: (x - 50) * 255 / 100 -> 0, 0, 127.5 -> 127, 255, 255 (clipped)
    # band 2: x * 255 / 200 -> 0, 63.75 -> 63, 127.5 -> 127, 191.25 -> 191, 255
    assert out.dtype == np.uint8
    assert out.tolist() == [[[0, 0, 127, 255, 255]], [[0, 63, 127, 191, 255]]]
    valid = np.array([[True, False, True, True, False]])
    out = to_uint8(data, np.array([50.0, 0.0]), np.array([150.0, 200.0]), valid, fill=9)
    assert out.tolist() == [[[0, 9, 127, 255, 9]], [[0, 9, 127, 191, 9]]]
    assert to_uint8(data, [50.0, 0.0], [150.0, 200.0], valid)[0, 0, 1] == 114  # default fill
    # a constant band (high == low) does not divide by zero: below -> 0, above -> 255
    flat = to_uint8(np.array([[[6, 7, 8]]], np.uint8), np.array([7.0]), np.array([7.0]))
    assert flat.tolist() == [[[0, 0, 255]]]


# --- reader -------------------------------------------------------------------------------

def test_read_window_copies_pixels_at_native_size(tmp_path):
    path = ramp_scene(tmp_path)
    with rasterio.open(path) as src:
        data, valid = read_window(src, 2, 3, 4, 4, [2])
        assert data.dtype == np.uint16 and valid.all()
        # rows 3..6, cols 2..5 of band 2: 100 + 10 * row + col
        assert data[0].tolist() == [[100 + 10 * r + c for c in range(2, 6)] for r in range(3, 7)]
        data, valid = read_window(src, 0, 0, 10, 10, [3, 1])
        assert data[0, 9, 9] == 299 and data[1, 0, 1] == 1


def test_read_window_past_the_edges_is_invalid_there(tmp_path):
    path = ramp_scene(tmp_path)
    with rasterio.open(path) as src:
        data, valid = read_window(src, -2, -1, 4, 4, [1])
        # rows -1..2, cols -2..1: only rows 0..2 x cols 0..1 exist
        expected_valid = np.zeros((4, 4), bool)
        expected_valid[1:, 2:] = True
        assert valid.tolist() == expected_valid.tolist()
        assert data[0, 1:, 2:].tolist() == [[0, 1], [10, 11], [20, 21]]
        assert (data[0][~expected_valid] == 0).all()
        data, valid = read_window(src, 8, 7, 4, 4, [1])  # bottom-right corner
        assert valid.sum() == 2 * 3 and data[0, :3, :2].tolist() == [[78, 79], [88, 89],
                                                                       [98, 99]]
        data, valid = read_window(src, 20, 20, 4, 4, [1])  # wholly outside
        assert not valid.any() and not data.any()
        image, valid = read_image(src, 20, 20, 4, 4, [1, 2, 3], np.zeros(3), np.ones(3))
        assert image is None and not valid.any()


def test_read_window_resamples_a_linear_ramp_exactly(tmp_path):
    # float band f = 3 * col + 5 * row at pixel centres: bilinear resampling of a plane
    # returns the plane at the output pixel's centre, in the interior.
    rows, cols = np.mgrid[0:40, 0:40]
    data = (3.0 * cols + 5.0 * rows).astype(np.float32)[None]
    path = tmp_path / "plane.tif"
    write_geotiff(path, data, T, UTM)
    with rasterio.open(path) as src:
        out, valid = read_window(src, 8, 4, 16, 8, [1])  # 2 source px per output px
        up, _ = read_window(src, 10, 10, 4, 8, [1])  # 0.5 source px per output px
    assert valid.all()
    # output (i, j) centre at source x = 8 + 2j + 1, y = 4 + 2i + 1 (corner coords),
    # i.e. pixel-centre coords x - 0.5, y - 0.5
    for i in range(1, 7):
        for j in range(1, 7):
            x, y = 8 + 2 * j + 0.5, 4 + 2 * i + 0.5
            assert out[0, i, j] == pytest.approx(3 * x + 5 * y, abs=1e-3)
    for i in range(1, 7):
        for j in range(1, 7):
            x, y = 10 + 0.5 * j + 0.25 - 0.5, 10 + 0.5 * i + 0.25 - 0.5
            assert up[0, i, j] == pytest.approx(3 * x + 5 * y, abs=1e-3)


def test_read_image_stretches_and_fills(tmp_path):
    path = ramp_scene(tmp_path, nodata=0)
    with rasterio.open(path) as src:
        image, valid = read_image(src, -1, 0, 4, 4, [1], np.array([0.0]), np.array([51.0]),
                                  fill=200)
    # column -1 is outside, pixel (0, 0) is nodata (value 0 on every band)
    assert not valid[:, 0].any() and not valid[0, 1] and valid[1:, 1:].all()
    # band 1 values 10 * row + col, times 5: row 1 col 0 -> 50, row 2 col 2 -> 110
    assert image[0, 1, 1] == 50 and image[0, 2, 3] == 110 and image[0, 3, 2] == 155
    assert image[0, 0, 0] == 200 and image[0, 0, 1] == 200


def test_check_normalization_fills_defaults_and_names_the_wrong_key():
    assert check_normalization({}) == {"bands": [1, 2, 3], "method": "joint_percentile",
                                       "percentiles": [0.5, 99.5], "fill": 114}
    assert check_normalization({"bands": (3, 2, 1), "fill": 0})["bands"] == [3, 2, 1]
    assert check_normalization({"percentiles": [0, 100], "fill": 255})["percentiles"] == [0, 100]
    for bad, word in [([1, 2], "mapping"), ({"colour": 1}, "colour"),
                      ({"method": "zscore"}, "zscore"), ({"bands": []}, "bands"),
                      ({"bands": [0]}, "bands"), ({"bands": ["1"]}, "bands"),
                      ({"bands": 1}, "bands"),
                      ({"percentiles": [50, 50]}, "percentiles"),
                      ({"percentiles": [-1, 50]}, "percentiles"),
                      ({"percentiles": [2, 101]}, "percentiles"),
                      ({"percentiles": [2]}, "percentiles"),
                      ({"fill": 256}, "fill"), ({"fill": -1}, "fill")]:
        with pytest.raises(ValueError, match=word):
            check_normalization(bad)
    with pytest.raises(ValueError, match=r"'zscore' is unknown; use one of joint_percentile, "
                       r"percentile, none$"):
        check_normalization({"method": "zscore"})
    with pytest.raises(ValueError, match=r"must be \[low, high\] with 0 <= low < high <= 100$"):
        check_normalization({"percentiles": [3, 2]})


def test_open_raster_and_check_bands_name_the_file(tmp_path):
    with pytest.raises(DetectorError, match="no such file"):
        open_raster(tmp_path / "missing.tif")
    junk = tmp_path / "junk.tif"
    junk.write_text("not a raster")
    with pytest.raises(DetectorError, match=r"junk.tif: not a readable raster \(.*junk.tif' "
                       r"not recognized.*\); give a GeoTIFF or another GDAL-readable image$"):
        open_raster(junk)
    path = ramp_scene(tmp_path)
    with open_raster(path) as src:
        check_bands(src, [1, 2, 3], path)
        with pytest.raises(DetectorError, match=r"ramp.tif: has 3 band\(s\) but bands=\[1, 4\] "
                           r"were asked for; set bands=\[1,2,3\] \(or other bands from 1 to "
                           r"3\)$"):
            check_bands(src, [1, 4], path)
        with pytest.raises(DetectorError, match="bands"):
            check_bands(src, [0], path)


def test_gdal_cache_sets_and_restores_the_limit():
    before = get_gdal_config("GDAL_CACHEMAX")
    with gdal_cache(12345678):
        assert get_gdal_config("GDAL_CACHEMAX") == 12345678
    with gdal_cache():
        assert get_gdal_config("GDAL_CACHEMAX") == 256 * 2**20
    assert get_gdal_config("GDAL_CACHEMAX") == before


def test_write_geotiff_records_what_it_was_given(tmp_path):
    data = np.arange(2 * 300 * 260, dtype=np.int16).reshape(2, 300, 260) % 1000
    path = tmp_path / "w.tif"
    write_geotiff(path, data, T, UTM, nodata=-1)
    with rasterio.open(path) as src:
        assert (src.count, src.height, src.width, src.dtypes) == (2, 300, 260, ("int16",) * 2)
        assert src.transform == T and src.crs == UTM and src.nodata == -1
        assert src.block_shapes == [(256, 256)] * 2
        assert src.compression.name == "deflate"
        assert src.tags(ns="IMAGE_STRUCTURE")["PREDICTOR"] == "2"
        assert np.array_equal(src.read(), data)
    strips = tmp_path / "s.tif"
    write_geotiff(strips, data[:1], T, None, tiled=False)
    with rasterio.open(strips) as src:
        assert src.block_shapes[0][1] == 260 and src.crs is None and src.nodata is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.tif", "w.tif"]


def test_valid_mask_of_a_window_past_the_edge(tmp_path):
    path = ramp_scene(tmp_path, nodata=0)  # pixel (0, 0) is 0 on every band: nodata
    with rasterio.open(path) as src:
        mask = valid_mask(src, rasterio.windows.Window(-1, -1, 3, 3))
        # rows/cols -1..1: the outside row and column and pixel (0, 0) are invalid
        assert mask.tolist() == [[False, False, False], [False, False, True],
                                 [False, True, True]]
        mask = valid_mask(src, rasterio.windows.Window(8, 8, 4, 4), (2, 2))
        assert mask.tolist() == [[True, False], [False, False]]


def test_read_window_resampled_past_the_edge_keeps_the_grid(tmp_path):
    path = ramp_scene(tmp_path, dtype=np.float32)
    with rasterio.open(path) as src:
        # 8 source px from col -4 / row -2 read at 4 px (2 source px each): output col 2
        # starts at source col 0, output row 1 at source row 0
        data, valid = read_window(src, -4, -2, 8, 4, [1])
        assert valid.tolist() == [[False] * 4] + [[False, False, True, True]] * 3
        # away from the raster edge, bilinear resampling of the plane 10 * row + col gives
        # its value at the output pixel's centre: (x, y) = (-4 + 2 c + 1, -2 + 2 r + 1) in
        # corner coordinates, i.e. 10 * (y - 0.5) + (x - 0.5)
        assert data[0, 2, 3] == pytest.approx(27.5) and data[0, 3, 3] == pytest.approx(47.5)
        # a window whose columns (or rows) all lie outside reads nothing
        for x0, y0 in [(10, 0), (0, 10), (12, 3), (-4, 20)]:
            data, valid = read_window(src, x0, y0, 4, 4, [1])
            assert not valid.any() and not data.any()


def test_read_image_fills_invalid_pixels_with_114_by_default(tmp_path):
    path = ramp_scene(tmp_path)
    with rasterio.open(path) as src:
        image, valid = read_image(src, 8, 8, 4, 4, [1], np.array([0.0]), np.array([255.0]))
    assert image[0, 0, 0] == 88 and image[0, 3, 3] == 114 and valid.sum() == 4


@pytest.mark.parametrize("shape", [(1, 10), (10, 1)])
def test_stretch_of_one_row_and_one_column_scenes(tmp_path, shape):
    data = np.arange(10, dtype=np.uint16).reshape(1, *shape)
    path = tmp_path / "line.tif"
    write_geotiff(path, data, T, UTM)
    with rasterio.open(path) as src:
        low, high = scene_stretch(src, {"bands": [1], "method": "percentile",
                                        "percentiles": [0.5, 99.5]})
    # values 0..9: percentiles at 0.005 * 9 = 0.045 and 0.995 * 9 = 8.955
    assert (low[0], high[0]) == pytest.approx((0.045, 8.955))
