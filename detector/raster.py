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

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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
from detector.geometry import apply_affine
from detector.remote import (
    READ_ERRORS,
    SceneRef,
    as_scene,
    check_cog,
    gdal_path,
    remote_error,
    scene_env,
)

log = logging.getLogger(__name__)

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


def band_map_hint(count: int) -> str:
    """A band map a scene of ``count`` bands can take, as ``bands=[...]``.

    Three bands or more: the first three (RGB order in most products); fewer: band 1 read as
    grey (a panchromatic scene), which the model takes as three equal bands.
    """
    return "bands=[1,2,3]" if count >= 3 else "bands=[1]"


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
    """Raise if the scene lacks one of the 1-based ``bands``.

    Raises:
        DetectorError: naming the scene's band count and a band map it has.
    """
    missing = [b for b in bands if b < 1 or b > src.count]
    if missing:
        raise DetectorError(
            f"{path}: has {src.count} band(s) but bands={list(bands)} were asked for; "
            f"set {band_map_hint(src.count)}"
            + (" (its one band, read as grey)" if src.count == 1
               else f" (or other bands from 1 to {src.count})"))


# WGS 84 (NIMA TR8350.2). Other datums' ellipsoids differ from it by under 1e-4 in the
# lengths below, far less than matters for a resampling ratio.
_WGS84_A = 6_378_137.0
_WGS84_E2 = (2 - 1 / 298.257223563) / 298.257223563  # first eccentricity squared, f(2 - f)
# Map units of a projected CRS are taken as ground metres (the usual ground sampling distance:
# UTM's scale stays within 0.1% of 1) unless the projection's scale at the scene differs
# from 1 by more than this, as Web Mercator's 1/cos(lat) does (2 at 60°N).
PROJECTION_SCALE_TOLERANCE = 0.01
_GEODESIC_STEP_PX = 64  # pixel step over which a projection's local scale is measured


@dataclass(frozen=True)
class GroundResolution:
    """Ground size of a scene's pixels in metres, along each image axis.

    Attributes:
        x: ground length of one step along a row (to the next column), m.
        y: ground length of one step down a column (to the next row), m.
        pixel_area: ground area of one pixel, m² (``x * y`` times the sine of the angle
            between the two steps: less than ``x * y`` when the geotransform is sheared).
    """

    x: float
    y: float
    pixel_area: float

    @property
    def mean(self) -> float:
        """Side of a square pixel of the same area, m (the single m/px reported)."""
        return math.sqrt(self.pixel_area)

    @property
    def coarsest(self) -> float:
        """The coarser of the two axes, m/px (what limits the detail a scene holds)."""
        return max(self.x, self.y)

    @classmethod
    def square(cls, m_per_px: float) -> GroundResolution:
        """Square pixels of ``m_per_px`` (a resolution given by the user)."""
        return cls(float(m_per_px), float(m_per_px), float(m_per_px) ** 2)


def metres_per_degree(lat_deg: float) -> tuple[float, float]:
    """Metres per degree of longitude and of latitude at latitude ``lat_deg`` (WGS 84).

    From the ellipsoid's radii of curvature (Snyder 1987, *Map Projections: A Working
    Manual*, USGS Professional Paper 1395, ch. 4): in the prime vertical
    ``N = a / sqrt(1 - e² sin² φ)`` and in the meridian ``M = a (1 - e²) / (1 - e² sin² φ)^1.5``;
    a degree of longitude spans ``π/180 · N cos φ`` and a degree of latitude ``π/180 · M``
    (at 60°N: 111.4 km per degree of latitude, 55.8 km per degree of longitude).
    """
    phi = math.radians(lat_deg)
    w = 1 - _WGS84_E2 * math.sin(phi) ** 2
    n, m = _WGS84_A / math.sqrt(w), _WGS84_A * (1 - _WGS84_E2) / w ** 1.5
    return math.pi / 180 * n * math.cos(phi), math.pi / 180 * m


def _degree_steps_to_metres(steps: np.ndarray, lat_deg: float) -> np.ndarray:
    """(2, 2) steps in (lon, lat) degrees → (east, north) metres at ``lat_deg``."""
    steps = np.array(steps, dtype=float)
    steps[:, 0] = (steps[:, 0] + 180) % 360 - 180  # a step across the antimeridian
    east, north = metres_per_degree(lat_deg)
    return steps * [east, north]


def _geodesic_steps(transform: Affine, crs: Any, width: int, height: int
                    ) -> np.ndarray | None:
    """Ground (east, north) metres of one column step and one row step at the scene centre,
    through the CRS's longitude/latitude; None when the CRS cannot be transformed."""
    from rasterio.warp import transform as warp

    k = _GEODESIC_STEP_PX
    cx, cy = width / 2, height / 2
    xy = apply_affine(np.array([(cx, cy), (cx + k, cy), (cx, cy + k)]), transform)
    try:
        lon, lat = warp(crs, "EPSG:4326", xy[:, 0].tolist(), xy[:, 1].tolist())
    except Exception:  # noqa: BLE001 - GDAL raises several types for CRSs it cannot relate
        return None
    lon, lat = np.asarray(lon, float), np.asarray(lat, float)
    if not (np.isfinite(lon).all() and np.isfinite(lat).all()):
        return None
    steps = np.column_stack([lon[1:] - lon[0], lat[1:] - lat[0]]) / k
    return _degree_steps_to_metres(steps, float(lat[0]))


def ground_resolution(transform: Affine, crs: Any, width: int, height: int
                      ) -> GroundResolution | None:
    """Ground size of the pixels of a raster with ``transform`` in ``crs``; None without CRS.

    The one place a scene's metres per pixel come from. One pixel step along each image axis
    is a column vector of the geotransform, ``(a, d)`` for the next column and ``(b, e)`` for
    the next row; its length is the ground size along that axis, so rotated, sheared,
    flipped and non-square pixels all come out right (a north-up ``|a|`` would take a grid
    rotated by 30° at 0.5 m for 0.433 m, and one rotated by 90° for 0 m). Map units: a
    projected CRS's linear unit (feet too); a geographic CRS's degrees are converted at the
    scene centre's latitude with :func:`metres_per_degree` (cos φ shortens longitude); a
    projection whose scale there departs from 1 by more than
    :data:`PROJECTION_SCALE_TOLERANCE` (Web Mercator away from the equator) is measured on
    the ground the same way.

    Raises:
        ValueError: a degenerate geotransform (zero-length or collinear pixel steps).
    """
    if crs is None:
        return None
    steps = np.array([[transform.a, transform.d], [transform.b, transform.e]], dtype=float)
    if crs.is_geographic:
        centre = apply_affine(np.array([width / 2, height / 2]), transform)
        metres = _degree_steps_to_metres(steps, float(np.clip(centre[1], -90, 90)))
    else:
        try:
            factor = crs.linear_units_factor[1]
        except Exception:  # noqa: BLE001 - a CRS without a linear unit: take metres
            factor = 1.0
        metres = steps * float(factor or 1.0)
        ground = _geodesic_steps(transform, crs, width, height)
        if ground is not None:
            nominal, true = np.hypot(*metres.T), np.hypot(*ground.T)
            if (np.abs(nominal / np.maximum(true, 1e-12) - 1) > PROJECTION_SCALE_TOLERANCE).any():
                metres = ground
    x, y = (float(v) for v in np.hypot(metres[:, 0], metres[:, 1]))
    area = abs(float(metres[0, 0] * metres[1, 1] - metres[0, 1] * metres[1, 0]))
    if not all(math.isfinite(v) and v > 0 for v in (x, y, area)):
        raise ValueError(f"geotransform {tuple(transform)[:6]} has no pixel area (zero-length "
                         "or parallel pixel steps)")
    return GroundResolution(x, y, area)


def scene_resolution(src: rasterio.DatasetReader) -> GroundResolution | None:
    """:func:`ground_resolution` of an open scene; None when it has no CRS.

    Raises:
        DetectorError: a degenerate geotransform, naming the file.
    """
    try:
        return ground_resolution(src.transform, src.crs, src.width, src.height)
    except ValueError as err:
        raise DetectorError(f"{src.name}: {err}; fix the scene's georeferencing, or drop its "
                            "CRS and pass m_per_px=") from err


def scene_m_per_px(src: rasterio.DatasetReader) -> float | None:
    """Metres per pixel of an open scene (equal-area square side), or None without a CRS."""
    res = scene_resolution(src)
    return None if res is None else res.mean


# How much coarser than the model's a scene may be. A wagon body is about 14 m x 3 m: 28 x 6
# px at the bundled model's 0.5 m/px. At 1.5x coarser (0.75 m) it is 4 px wide and the model
# sees upsampled, blurred cars (README experiment 3: mAP50 0.61 -> 0.39 at 0.8 m): warn.
# At 3x (1.5 m) it is 2 px wide and the 1-2 m gap between coupled wagons is under a pixel,
# so a string of wagons is one blob whose cars cannot be told apart: refuse beyond that.
COARSER_WARN = 1.5
COARSER_REFUSE = 3.0


def check_resolution(res: GroundResolution, model_m_per_px: float, path: str | Path) -> None:
    """Refuse a scene too coarse for the model; warn when it is coarse enough to hurt.

    The limits are factors of the model's m/px on the scene's coarser axis:
    :data:`COARSER_WARN` (1.5: a wagon 4 px wide where the model learnt 6) and
    :data:`COARSER_REFUSE` (3: 2 px wide, coupled wagons merge into one blob). Finer scenes
    are read down to the model's m/px and lose nothing the model uses.

    Raises:
        DetectorError: the scene is more than :data:`COARSER_REFUSE` times coarser.
    """
    ratio = res.coarsest / model_m_per_px
    if ratio > COARSER_REFUSE:
        raise DetectorError(
            f"{path}: {res.coarsest:.3g} m/px is {ratio:.1f}x coarser than the model's "
            f"{model_m_per_px:g} m/px; wagons (3 m wide) are under "
            f"{3.0 / res.coarsest:.1f} px across and cannot be counted; give imagery of at "
            f"most {model_m_per_px * COARSER_REFUSE:g} m/px (or m_per_px= if the file's "
            "georeferencing is wrong)")
    if ratio > COARSER_WARN:
        log.warning("%s: %.3g m/px is %.1fx coarser than the model's %g m/px; wagons are "
                    "%.1f px wide, so counts are less reliable (below %g m/px is best)",
                    path, res.coarsest, ratio, model_m_per_px, 3.0 / res.coarsest,
                    model_m_per_px * COARSER_WARN)


def finite_pixels(data: np.ndarray) -> np.ndarray:
    """(H, W) bool of (C, H, W) ``data``: pixels whose every band is a finite number.

    NaN and ±inf are no data whether or not the file tags a nodata value (a float scene with
    NaN outside its footprint and no tag is common); integer data are always finite.
    """
    if not np.issubdtype(data.dtype, np.floating):
        return np.ones(data.shape[-2:], dtype=bool)
    return np.isfinite(data).all(axis=0)


def inner_window(src: rasterio.DatasetReader, window: Window, out_shape: tuple[int, int],
                 clip: tuple[float, float, float, float] | None = None
                 ) -> tuple[Window, tuple[slice, slice]] | None:
    """The part of ``window`` inside the raster, for a read of ``window`` at ``out_shape``.

    ``clip`` (x0, y0, x1, y1 source pixels) narrows "the raster" to that box.

    Returns the float window aligned with the output grid and the (rows, cols) slices of the
    output it fills, or None when the window misses the raster. Reads go through this rather
    than rasterio's ``boundless`` reads, which assume a north-up geotransform (they divide
    by its ``a`` term: a grid rotated by 90° fails).
    """
    h, w = out_shape
    sx, sy = window.width / w, window.height / h  # source px per output px
    x0, y0 = window.col_off, window.row_off
    lx, ly, hx, hy = 0, 0, src.width, src.height
    if clip is not None:
        lx, ly = max(lx, clip[0]), max(ly, clip[1])
        hx, hy = min(hx, clip[2]), min(hy, clip[3])
    c0, r0 = round((max(x0, lx) - x0) / sx), round((max(y0, ly) - y0) / sy)
    c1 = round((min(x0 + window.width, hx) - x0) / sx)
    r1 = round((min(y0 + window.height, hy) - y0) / sy)
    if c1 <= c0 or r1 <= r0:
        return None
    inner = Window(x0 + c0 * sx, y0 + r0 * sy, (c1 - c0) * sx, (r1 - r0) * sy)
    return inner, (slice(r0, r1), slice(c0, c1))


def valid_mask(src: rasterio.DatasetReader, window: Window,
               out_shape: tuple[int, int] | None = None, data: np.ndarray | None = None
               ) -> np.ndarray:
    """Boolean (H, W) mask of pixels with data; pixels outside the raster are invalid.

    A pixel holds data when GDAL's mask says so (nodata tag, internal mask or alpha band)
    and its values are finite (:func:`finite_pixels`). ``data``: the bands already read for
    ``window`` at ``out_shape``, when the caller has them (else a float scene's bands are
    read here). Only the part inside the raster is read, directly (overviews serve a
    decimated read; rasterio's boundless read would go through a warped VRT reading
    full-resolution blocks: on a remote COG the whole file for a scene-wide mask).
    """
    shape = out_shape or (round(window.height), round(window.width))
    mask = np.zeros(shape, dtype=bool)
    part = inner_window(src, window, shape)
    if part is None:
        return mask
    inner, (rows, cols) = part
    sub = (rows.stop - rows.start, cols.stop - cols.start)
    mask[rows, cols] = src.read_masks(1, window=inner, out_shape=sub,
                                      resampling=Resampling.nearest) > 0
    if data is None and any(np.issubdtype(np.dtype(t), np.floating) for t in src.dtypes):
        data = np.zeros((src.count, *shape), dtype=np.float32)
        data[:, rows, cols] = src.read(window=inner, out_shape=(src.count, *sub),
                                       resampling=Resampling.nearest)
    return mask if data is None else mask & finite_pixels(data)


# One resampling for every pixel a model sees, in training chips and inference tiles alike.
# GDAL copies pixels unchanged when a window is read at its own size.
RESAMPLING = Resampling.bilinear


def read_window(src: rasterio.DatasetReader, x0: int, y0: int, side: int | tuple[int, int],
                out_size: int, bands: list[int], clip: tuple[int, int, int, int] | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """Read the window of ``side`` source pixels at (x0, y0), resampled to ``out_size`` square.

    The one windowed reader behind training chips and inference tiles, so the model is
    trained on pixels prepared exactly as those it counts on. Only the part of the window
    inside the raster is read, through a float window aligned with the output grid, so a
    pixel's value does not depend on where the window lies; the window may reach past the
    raster edge, where pixels are invalid. ``side`` is one number for a square window or
    (columns, rows) for pixels whose ground size differs between the axes. ``clip`` (x0, y0,
    x1, y1 source pixels, e.g. an AOI's bounds plus a margin) makes pixels outside it invalid
    too, and unread: a remote COG then serves only the blocks under it.

    Returns:
        (data (C, S, S) in the raster's dtype, zero where invalid; valid (S, S) bool: GDAL's
        mask and finite values, see :func:`valid_mask`). The data are not read when no
        pixel is valid.
    """
    side_x, side_y = (side, side) if isinstance(side, int | float) else side
    data = np.zeros((len(bands), out_size, out_size), dtype=src.dtypes[bands[0] - 1])
    valid = np.zeros((out_size, out_size), dtype=bool)
    part = inner_window(src, Window(x0, y0, side_x, side_y), (out_size, out_size), clip)
    if part is None:
        return data, valid
    window, (rows, cols) = part
    shape = (rows.stop - rows.start, cols.stop - cols.start)
    valid[rows, cols] = src.read_masks(1, window=window, out_shape=shape,
                                       resampling=Resampling.nearest) > 0
    if valid.any():
        block = src.read(bands, window=window, out_shape=(len(bands), *shape),
                         resampling=RESAMPLING)
        finite = finite_pixels(block)
        block[:, ~finite] = 0
        data[:, rows, cols] = block
        valid[rows, cols] &= finite
    return data, valid


def read_image(src: rasterio.DatasetReader, x0: int, y0: int, side: int | tuple[int, int],
               out_size: int, bands: list[int], low: np.ndarray, high: np.ndarray,
               fill: int = 114, clip: tuple[int, int, int, int] | None = None
               ) -> tuple[np.ndarray | None, np.ndarray]:
    """:func:`read_window` normalised to model input: (uint8 (C, S, S) or None, valid).

    The image is None when no pixel is valid; invalid pixels are ``fill``.
    """
    data, valid = read_window(src, x0, y0, side, out_size, bands, clip)
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
    out = np.clip(np.nan_to_num(out, nan=0.0), 0, 255).astype(np.uint8)
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
