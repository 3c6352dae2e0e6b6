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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.errors import RasterioIOError
from rasterio.windows import Window

from detector.atomic import atomic_path
from detector.errors import DetectorError
from detector.remote import (
    READ_ERRORS,
    SceneRef,
    as_scene,
    check_cog,
    gdal_path,
    remote_error,
    scene_env,
)

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
_STATS_MAX_SIDE = 1024
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


def open_raster(path: str | Path | SceneRef) -> rasterio.DatasetReader:
    """Open a raster, or raise a one-line :class:`DetectorError` naming the file.

    A URL or :class:`~detector.remote.SceneRef` opens through GDAL's ``/vsicurl/`` or
    ``/vsis3/``; read it inside :func:`open_scene` (or :func:`detector.remote.scene_env`),
    which holds the settings remote reads need.
    """
    path = as_scene(path)
    if isinstance(path, SceneRef) and path.remote:
        try:
            return rasterio.open(gdal_path(path))
        except READ_ERRORS as err:
            raise remote_error(path, err) from err
    if not path.exists():
        raise DetectorError(f"{path}: no such file; check the path")
    try:
        return rasterio.open(gdal_path(path))
    except RasterioIOError as err:
        raise DetectorError(
            f"{path}: not a readable raster ({str(err).splitlines()[0]}); "
            "give a GeoTIFF or another GDAL-readable image") from err


@contextmanager
def open_scene(scene: str | Path | SceneRef, **options: Any
               ) -> Iterator[rasterio.DatasetReader]:
    """Open a scene for reading, local or remote, inside :func:`detector.remote.scene_env`.

    A remote scene must be a Cloud-Optimized GeoTIFF (:func:`detector.remote.check_cog`),
    and a read that fails inside the block (a dropped connection, an HTTP error) becomes a
    one-line :class:`DetectorError` naming the URL and the fix.

    Raises:
        DetectorError: a missing, unreadable or unreachable scene, or a remote non-COG.
    """
    scene = as_scene(scene)
    remote = isinstance(scene, SceneRef) and scene.remote
    with scene_env(scene, **options):
        try:
            with open_raster(scene) as src:
                if remote:
                    check_cog(src, scene)
                yield src
        except READ_ERRORS as err:
            if not remote:
                raise
            raise remote_error(scene, err) from err


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
    """Boolean (H, W) mask of pixels with data; pixels outside the raster are invalid.

    A window inside the raster is read directly (overviews serve a decimated read); only
    one reaching past the edge goes through rasterio's boundless read, a warped VRT that
    reads full-resolution blocks (on a remote COG: the whole file for a scene-wide mask).
    """
    inside = (window.col_off >= 0 and window.row_off >= 0
              and window.col_off + window.width <= src.width
              and window.row_off + window.height <= src.height)
    mask = src.read_masks(1, window=window, out_shape=out_shape, boundless=not inside,
                          resampling=Resampling.nearest)
    return mask > 0


# One resampling for every pixel a model sees, in training chips and inference tiles alike.
# GDAL copies pixels unchanged when a window is read at its own size.
RESAMPLING = Resampling.bilinear


def read_window(src: rasterio.DatasetReader, x0: int, y0: int, side: int, out_size: int,
                bands: list[int], clip: tuple[int, int, int, int] | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """Read the square window of ``side`` source pixels at (x0, y0), resampled to ``out_size``.

    The one windowed reader behind training chips and inference tiles, so the model is
    trained on pixels prepared exactly as those it counts on. Only the part of the window
    inside the raster is read, through a float window aligned with the output grid, so a
    pixel's value does not depend on where the window lies; the window may reach past the
    raster edge, where pixels are invalid. ``clip`` (x0, y0, x1, y1 source pixels, e.g. an
    AOI's bounds plus a margin) makes pixels outside it invalid too, and unread: a remote
    COG then serves only the blocks under it.

    Returns:
        (data (C, S, S) in the raster's dtype, zero where invalid; valid (S, S) bool).
        The data are not read when no pixel is valid.
    """
    scale = side / out_size  # source pixels per output pixel
    data = np.zeros((len(bands), out_size, out_size), dtype=src.dtypes[bands[0] - 1])
    valid = np.zeros((out_size, out_size), dtype=bool)
    ix0, iy0 = max(x0, 0), max(y0, 0)
    ix1, iy1 = min(x0 + side, src.width), min(y0 + side, src.height)
    if clip is not None:
        ix0, iy0 = max(ix0, clip[0]), max(iy0, clip[1])
        ix1, iy1 = min(ix1, clip[2]), min(iy1, clip[3])
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
               bands: list[int], low: np.ndarray, high: np.ndarray, fill: int = 114,
               clip: tuple[int, int, int, int] | None = None
               ) -> tuple[np.ndarray | None, np.ndarray]:
    """:func:`read_window` normalised to model input: (uint8 (C, S, S) or None, valid).

    The image is None when no pixel is valid; invalid pixels are ``fill``.
    """
    data, valid = read_window(src, x0, y0, side, out_size, bands, clip)
    if not valid.any():
        return None, valid
    return to_uint8(data, low, high, valid, fill), valid


def scene_stretch(src: rasterio.DatasetReader, normalization: dict[str, Any]
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Per-band (low, high) of the stretch for a whole scene, from a decimated read.

    Returns float arrays of shape (C,) for the spec's bands.
    """
    bands = list(normalization.get("bands", DEFAULT_NORMALIZATION["bands"]))
    method = normalization.get("method", DEFAULT_NORMALIZATION["method"])
    if method not in NORMALIZATION_METHODS:
        raise DetectorError(f"normalization.method={method!r} is unknown; use one of "
                            f"{list(NORMALIZATION_METHODS)}")
    if method == "none":
        return np.zeros(len(bands)), np.full(len(bands), 255.0)
    scale = max(src.width, src.height) / _STATS_MAX_SIDE
    shape = (max(1, round(src.height / max(scale, 1))), max(1, round(src.width / max(scale, 1))))
    window = Window(0, 0, src.width, src.height)
    data = src.read(bands, out_shape=(len(bands), *shape), resampling=Resampling.nearest)
    valid = valid_mask(src, window, shape)
    lo_pct, hi_pct = normalization.get("percentiles", DEFAULT_NORMALIZATION["percentiles"])
    if not valid.any():
        return np.zeros(len(bands)), np.ones(len(bands))
    pixels = data[:, valid].astype(np.float64)
    if method == "joint_percentile":
        pooled = np.percentile(pixels, [lo_pct, hi_pct])
        low, high = np.full(len(bands), pooled[0]), np.full(len(bands), pooled[1])
    else:
        low = np.percentile(pixels, lo_pct, axis=1)
        high = np.percentile(pixels, hi_pct, axis=1)
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
