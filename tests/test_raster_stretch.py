"""The scene stretch from a sample of pixels: within the stated tolerance of the percentiles of
every pixel, without decoding a large scene whole; one function for chips and tiles."""

import numpy as np
import pytest
import rasterio

from detector import raster
from detector.raster import STATS_TOLERANCE, scene_stretch, stats_pixels, write_geotiff
from tests.helpers import TRANSFORM, UTM

NORM = {"bands": [1, 2, 3], "method": "joint_percentile", "percentiles": [0.5, 99.5],
        "fill": 114}


def _yard(size: int, seed: int, dtype=np.uint8) -> np.ndarray:
    """A scene with spatial structure: smooth fields, dark rails, bright wagons and roofs."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = 90 + 40 * np.sin(6 * xx + 2 * yy) + 25 * np.cos(9 * yy)
    base[(np.arange(size) % 37 < 3)[None, :].repeat(size, 0)] = 25  # rails
    for _ in range(size // 4):  # wagons and roofs
        x, y = rng.integers(0, size - 60, 2)
        base[y:y + rng.integers(4, 12), x:x + rng.integers(10, 60)] = rng.uniform(150, 250)
    bands = np.stack([base + rng.normal(0, 6, base.shape) + k * 8 for k in range(3)])
    return np.clip(bands, 0, 255).astype(dtype)


def _exact(data: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    pixels = data.reshape(3, -1).astype(float) if valid is None else data[:, valid].astype(float)
    pixels = pixels[:, np.isfinite(pixels).all(0)]
    return np.percentile(pixels, NORM["percentiles"])


@pytest.mark.parametrize("tiled", [True, False])
def test_sampled_stretch_is_within_tolerance_and_decodes_a_fraction(tmp_path, tiled,
                                                                    monkeypatch):
    data = _yard(2400, seed=int(tiled))  # 5.8 Mpx: sampled by blocks
    path = tmp_path / "yard.tif"
    write_geotiff(path, data, TRANSFORM, UTM, tiled=tiled)
    budget = 2400 * 2400 // raster._STATS_DECODE // 4  # forces the block sample here
    decoded = []
    real_read = rasterio.io.DatasetReader.read

    def counting_read(self, *args, **kwargs):
        out = real_read(self, *args, **kwargs)
        decoded.append(out.size // out.shape[0] if out.ndim == 3 else out.size)
        return out

    monkeypatch.setattr(rasterio.io.DatasetReader, "read", counting_read)
    with rasterio.open(path) as src:
        low, high = np.percentile(stats_pixels(src, [1, 2, 3], budget), NORM["percentiles"])
    exact = _exact(data)
    span = exact[1] - exact[0]
    assert abs(low - exact[0]) <= STATS_TOLERANCE * span
    assert abs(high - exact[1]) <= STATS_TOLERANCE * span
    # not the whole scene: about a quarter of it (the decode budget), block-rounded
    assert sum(decoded) <= 0.35 * data.shape[1] * data.shape[2]


def test_sample_ignores_nodata_and_non_finite_values(tmp_path):
    data = _yard(700, seed=2).astype(np.float32)
    data[:, :200, :] = -9999  # nodata strip
    data[0, 300:320, 300:320] = np.nan
    data[1, 400:410, 100:110] = np.inf
    path = tmp_path / "float.tif"
    write_geotiff(path, data, TRANSFORM, UTM, nodata=-9999)
    with rasterio.open(path) as src:
        # a small budget forces the block sample on this small scene
        pixels = stats_pixels(src, [1, 2, 3], budget=10_000)
        low, high = np.percentile(pixels, NORM["percentiles"])
    assert np.isfinite(pixels).all() and (pixels > -9999).all() and pixels.shape[1] > 1000
    valid = (data[0] != -9999)
    exact = _exact(data, valid)
    assert low == pytest.approx(exact[0], abs=STATS_TOLERANCE * (exact[1] - exact[0]))
    assert high == pytest.approx(exact[1], abs=STATS_TOLERANCE * (exact[1] - exact[0]))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.float32])
def test_percentiles_by_counting_equal_numpy(dtype):
    rng = np.random.default_rng(5)
    values = rng.normal(100, 40, 100_001).clip(-300 if dtype == np.int16 else 0, 255)
    values = values.astype(dtype)
    q = [0.0, 0.5, 2.0, 50.0, 99.5, 100.0]
    np.testing.assert_allclose(raster.percentiles(values, q),
                               np.percentile(values.astype(float), q), rtol=1e-12)


def test_small_scene_reads_every_pixel(tmp_path):
    data = _yard(300, seed=3)
    path = tmp_path / "small.tif"
    write_geotiff(path, data, TRANSFORM, UTM)
    with rasterio.open(path) as src:
        low, high = scene_stretch(src, NORM)
    np.testing.assert_allclose([low[0], high[0]], _exact(data))


def test_chips_and_tiles_use_one_stretch(tmp_path):
    """Dataset building and inference both call raster.scene_stretch (one function), so a
    scene's chips and tiles are stretched alike."""
    from detector.data import build
    from detector.infer import scene

    assert build.scene_stretch is raster.scene_stretch is scene.scene_stretch
