"""Raster access shared by dataset building and inference: windows, resolution, normalisation.

Training and inference must see pixels prepared the same way, so training chips and
inference tiles are both read by :func:`read_image` (one windowed reader, one resampling)
with the stretch of :func:`scene_stretch` and the normalisation spec that the dataset
records and the model card carries::

    {"bands": [1, 2, 3], "method": "joint_percentile", "percentiles": [0.5, 99.5], "fill": 114}

``method`` is ``joint_percentile`` (one stretch for all bands of a scene, from the pooled
percentiles of a decimated read that ignores nodata: the same linear map on every band, so
hues survive, whatever the scene's content), ``percentile`` (per scene and band: each band
stretched on its own; a grass-dominated scene turns grey ballast purple; kept for models
trained with it) or ``none`` (values clipped to 0–255: for 8-bit scenes prepared elsewhere).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import MaskFlags, Resampling
from rasterio.errors import RasterioIOError
from rasterio.windows import Window

from detector.atomic import atomic_path
from detector.errors import DetectorError

DEFAULT_NORMALIZATION: dict[str, Any] = {
    "bands": [1, 2, 3],
    "method": "joint_percentile",
    "percentiles": [0.5, 99.5],
    "fill": 114,
}
# Stretch methods scene_stretch knows; add a name here when adding a method there.
NORMALIZATION_METHODS = ("joint_percentile", "percentile", "none")
# Enough for one tile row of strips of a non-tiled GeoTIFF, small against the scene.
GDAL_CACHE_BYTES = 256 * 2**20
_STATS_PIXELS = 1024 * 1024  # pixels the stretch percentiles are taken over
# Scenes above _STATS_DECODE * _STATS_PIXELS px (16 Mpx) without overviews are sampled by
# blocks: at most that many pixels decoded, every 4th pixel of them kept.
_STATS_DECODE = 16
# Stretch percentiles from such a sample differ from those of every pixel by at most this
# share of the stretch's range (tests/test_raster_stretch.py checks it on generated yards).
STATS_TOLERANCE = 0.025
_EARTH_RADIUS_M = 6_371_008.8


def check_normalization(spec: Any) -> dict[str, Any]:
    """Validate a normalisation spec (card, dataset, config) and fill its defaults.

    Raises:
        ValueError: a message naming the wrong key (callers add the file or config key).
    """
    if not isinstance(spec, dict):
        raise ValueError(f"must be a mapping like {DEFAULT_NORMALIZATION}")
    unknown = sorted(set(spec) - set(DEFAULT_NORMALIZATION))
    if unknown:
        raise ValueError(f"unknown key(s) {unknown}; known: {sorted(DEFAULT_NORMALIZATION)}")
    out = {**DEFAULT_NORMALIZATION, **spec}
    if out["method"] not in NORMALIZATION_METHODS:
        raise ValueError(f"method {out['method']!r} is unknown; use one of "
                         f"{', '.join(NORMALIZATION_METHODS)}")
    bands = out["bands"]
    if (not isinstance(bands, list | tuple) or not bands
            or any(not isinstance(b, int) or b < 1 for b in bands)):
        raise ValueError(f"bands {bands!r} must be a list of 1-based band numbers")
    low, high = (list(out["percentiles"]) + [None, None])[:2]
    if low is None or high is None or not 0 <= low < high <= 100:
        raise ValueError(f"percentiles {out['percentiles']!r} must be [low, high] "
                         "with 0 <= low < high <= 100")
    if not 0 <= int(out["fill"]) <= 255:
        raise ValueError(f"fill {out['fill']!r} must lie in 0..255")
    return {**out, "bands": list(bands), "percentiles": [low, high]}


def gdal_cache(max_bytes: int = GDAL_CACHE_BYTES) -> rasterio.Env:
    """A context in which GDAL's block cache holds at most ``max_bytes``.

    GDAL's default is 5% of RAM, so reading a large scene would grow memory with the scene;
    inference runs inside this, and rasterio puts the caller's value back on exit.
    """
    return rasterio.Env(GDAL_CACHEMAX=int(max_bytes))


def open_raster(path: str | Path) -> rasterio.DatasetReader:
    """Open a raster, or raise a one-line :class:`DetectorError` naming the file."""
    path = Path(path)
    if not path.exists():
        raise DetectorError(f"{path}: no such file; check the path")
    try:
        return rasterio.open(path)
    except RasterioIOError as err:
        raise DetectorError(
            f"{path}: not a readable raster ({str(err).splitlines()[0]}); "
            "give a GeoTIFF or another GDAL-readable image") from err


def check_bands(src: rasterio.DatasetReader, bands: list[int], path: str | Path) -> None:
    """Raise if the scene lacks one of the 1-based ``bands``."""
    missing = [b for b in bands if b < 1 or b > src.count]
    if missing:
        raise DetectorError(
            f"{path}: has {src.count} band(s) but bands {list(bands)} were asked for; "
            "set the band map (e.g. bands=[1,2,3]) to bands the scene has")


def scene_m_per_px(src: rasterio.DatasetReader) -> float | None:
    """Ground sampling distance in metres per pixel, or None when the scene has no CRS."""
    if src.crs is None:
        return None
    res_x, res_y = abs(src.transform.a), abs(src.transform.e)
    if src.crs.is_projected:
        factor = src.crs.linear_units_factor[1] if src.crs.linear_units_factor else 1.0
        return float((res_x + res_y) / 2 * factor)
    # Geographic CRS: degrees → metres at the scene centre.
    lat = (src.bounds.top + src.bounds.bottom) / 2
    metres_per_degree = math.pi * _EARTH_RADIUS_M / 180
    return float((res_x * math.cos(math.radians(lat)) + res_y) / 2 * metres_per_degree)


def valid_mask(src: rasterio.DatasetReader, window: Window,
               out_shape: tuple[int, int] | None = None) -> np.ndarray:
    """Boolean (H, W) mask of pixels with data; pixels outside the raster are invalid."""
    mask = src.read_masks(1, window=window, out_shape=out_shape, boundless=True,
                          resampling=Resampling.nearest)
    return mask > 0


# One resampling for every pixel a model sees, in training chips and inference tiles alike.
# GDAL copies pixels unchanged when a window is read at its own size.
RESAMPLING = Resampling.bilinear


def read_window(src: rasterio.DatasetReader, x0: int, y0: int, side: int, out_size: int,
                bands: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Read the square window of ``side`` source pixels at (x0, y0), resampled to ``out_size``.

    The one windowed reader behind training chips and inference tiles, so the model is
    trained on pixels prepared exactly as those it counts on. Only the part of the window
    inside the raster is read, through a float window aligned with the output grid, so a
    pixel's value does not depend on where the window lies; the window may reach past the
    raster edge, where pixels are invalid.

    Returns:
        (data (C, S, S) in the raster's dtype, zero where invalid; valid (S, S) bool).
        The data are not read when no pixel is valid.
    """
    scale = side / out_size  # source pixels per output pixel
    data = np.zeros((len(bands), out_size, out_size), dtype=src.dtypes[bands[0] - 1])
    valid = np.zeros((out_size, out_size), dtype=bool)
    ix0, iy0 = max(x0, 0), max(y0, 0)
    ix1, iy1 = min(x0 + side, src.width), min(y0 + side, src.height)
    c0, r0 = round((ix0 - x0) / scale), round((iy0 - y0) / scale)
    c1, r1 = round((ix1 - x0) / scale), round((iy1 - y0) / scale)
    if c1 <= c0 or r1 <= r0:
        return data, valid
    window = Window(x0 + c0 * scale, y0 + r0 * scale, (c1 - c0) * scale, (r1 - r0) * scale)
    shape = (r1 - r0, c1 - c0)
    valid[r0:r1, c0:c1] = src.read_masks(1, window=window, out_shape=shape,
                                         resampling=Resampling.nearest) > 0
    if valid.any():
        data[:, r0:r1, c0:c1] = src.read(bands, window=window, out_shape=(len(bands), *shape),
                                         resampling=RESAMPLING)
    return data, valid


def read_image(src: rasterio.DatasetReader, x0: int, y0: int, side: int, out_size: int,
               bands: list[int], low: np.ndarray, high: np.ndarray, fill: int = 114
               ) -> tuple[np.ndarray | None, np.ndarray]:
    """:func:`read_window` normalised to model input: (uint8 (C, S, S) or None, valid).

    The image is None when no pixel is valid; invalid pixels are ``fill``.
    """
    data, valid = read_window(src, x0, y0, side, out_size, bands)
    if not valid.any():
        return None, valid
    return to_uint8(data, low, high, valid, fill), valid


def stats_pixels(src: rasterio.DatasetReader, bands: list[int],
                 budget: int = _STATS_PIXELS) -> np.ndarray:
    """(C, N) values (the raster's dtype) of up to ``budget`` valid pixels over the scene.

    The sample the stretch percentiles come from, for training chips and inference tiles
    alike. A scene with overviews, or one of at most ``_STATS_DECODE * budget`` pixels, is
    read decimated (GDAL takes the overviews); a larger scene without overviews is sampled
    by whole blocks (strips or tiles) on a diagonal lattice (block row + column divisible by
    k), so only about ``_STATS_DECODE * budget`` pixels are decoded, not the whole scene.
    Invalid pixels (the mask) and non-finite values are left out.
    """
    width, height = src.width, src.height
    if src.overviews(bands[0]) or width * height <= _STATS_DECODE * budget:
        scale = max(1.0, max(width, height) / math.sqrt(budget))
        shape = (max(1, round(height / scale)), max(1, round(width / scale)))
        data = src.read(bands, out_shape=(len(bands), *shape), resampling=Resampling.nearest)
        return _valid_values(data, valid_mask(src, Window(0, 0, width, height), shape))
    masked = MaskFlags.all_valid not in src.mask_flag_enums[bands[0] - 1]
    bh, bw = src.block_shapes[bands[0] - 1]
    rows, cols = math.ceil(height / bh), math.ceil(width / bw)
    every = max(1, math.ceil(width * height / (_STATS_DECODE * budget)))
    step = max(1, round(math.sqrt(_STATS_DECODE)))  # pixels kept per decoded pixel: 1/step²
    parts = []
    for r, c in ((r, c) for r in range(rows) for c in range(cols) if (r + c) % every == 0):
        window = Window(c * bw, r * bh, min(bw, width - c * bw), min(bh, height - r * bh))
        data = src.read(bands, window=window)[:, ::step, ::step]
        valid = (src.read_masks(1, window=window)[::step, ::step] > 0) if masked else None
        parts.append(_valid_values(data, valid))
    return np.concatenate(parts, axis=1)


def _valid_values(data: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    """(C, N) pixels (in their own dtype) valid in the mask and finite in every band."""
    pixels = data.reshape(data.shape[0], -1) if valid is None else data[:, valid]
    if np.issubdtype(pixels.dtype, np.floating):
        pixels = pixels[:, np.isfinite(pixels).all(axis=0)]
    return pixels


def percentiles(values: np.ndarray, q: list[float]) -> np.ndarray:
    """``np.percentile(values, q)`` (linear interpolation), by counting for integer data.

    Integer pixels (uint8, uint16, ...) are counted in one pass instead of sorted: the same
    order statistics, several times faster on millions of pixels.
    """
    values = np.asarray(values).ravel()
    if (not np.issubdtype(values.dtype, np.integer) or not values.size
            or int(values.max()) - int(values.min()) > 1 << 20):
        return np.percentile(values.astype(np.float64), q)
    low = int(values.min())
    counts = np.cumsum(np.bincount(values.astype(np.int64) - low))
    pos = np.asarray(q, float) / 100 * (values.size - 1)
    below, above = np.floor(pos).astype(int), np.ceil(pos).astype(int)
    lo_v = np.searchsorted(counts, below + 1) + low
    hi_v = np.searchsorted(counts, above + 1) + low
    return lo_v + (hi_v - lo_v) * (pos - below)


def scene_stretch(src: rasterio.DatasetReader, normalization: dict[str, Any]
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Per-band (low, high) of the stretch for a whole scene, from a sample of its pixels
    (:func:`stats_pixels`: within :data:`STATS_TOLERANCE` of the percentiles of every pixel).

    Returns float arrays of shape (C,) for the spec's bands.
    """
    bands = list(normalization.get("bands", DEFAULT_NORMALIZATION["bands"]))
    method = normalization.get("method", DEFAULT_NORMALIZATION["method"])
    if method not in NORMALIZATION_METHODS:
        raise DetectorError(f"normalization.method={method!r} is unknown; use one of "
                            f"{list(NORMALIZATION_METHODS)}")
    if method == "none":
        return np.zeros(len(bands)), np.full(len(bands), 255.0)
    pixels = stats_pixels(src, bands)
    lo_pct, hi_pct = normalization.get("percentiles", DEFAULT_NORMALIZATION["percentiles"])
    if not pixels.shape[1]:
        return np.zeros(len(bands)), np.ones(len(bands))
    if method == "joint_percentile":
        pooled = percentiles(pixels, [lo_pct, hi_pct])
        low, high = np.full(len(bands), pooled[0]), np.full(len(bands), pooled[1])
    else:
        low, high = np.array([percentiles(band, [lo_pct, hi_pct]) for band in pixels]).T
    return low, np.maximum(high, low + 1e-6)


def to_uint8(data: np.ndarray, low: np.ndarray, high: np.ndarray,
             valid: np.ndarray | None = None, fill: int = 114) -> np.ndarray:
    """Stretch (C, H, W) data linearly from [low, high] to 0–255; invalid pixels get ``fill``."""
    low = np.asarray(low, dtype=np.float32)[:, None, None]
    high = np.asarray(high, dtype=np.float32)[:, None, None]
    # A constant band has high == low; float32 loses scene_stretch's tiny margin, so guard here.
    out = (data.astype(np.float32) - low) * (255.0 / np.maximum(high - low, 1e-3))
    out = np.clip(out, 0, 255).astype(np.uint8)
    if valid is not None:
        out[:, ~valid] = fill
    return out


def write_geotiff(path: str | Path, data: np.ndarray, transform: Affine, crs: Any,
                  nodata: float | None = None, tiled: bool = True) -> None:
    """Write (C, H, W) ``data`` as a compressed GeoTIFF, atomically.

    Args:
        path: destination ``.tif``.
        data: band-first array; its dtype is kept.
        transform: pixel → map affine transform.
        crs: anything rasterio accepts as a CRS, or None.
        nodata: nodata value recorded in the file.
        tiled: write 256×256 internal tiles (else strips).
    """
    profile: dict[str, Any] = {
        "driver": "GTiff", "width": data.shape[2], "height": data.shape[1],
        "count": data.shape[0], "dtype": data.dtype.name, "transform": transform, "crs": crs,
        "compress": "deflate", "predictor": 2, "nodata": nodata,
    }
    if tiled:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    with atomic_path(path) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        dst.write(data)
