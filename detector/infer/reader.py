"""Prefetching tile reader: window → resample to the model's m/px → bands → uint8.

Tiles are read by :func:`detector.raster.read_image`, the reader of training chips too:
only the part of a tile window inside the raster is read (float windows, so the resampling
grid is exact); the rest is filled with the normalisation's neutral ``fill``, and so are
invalid pixels (nodata, masked, alpha, NaN, ±inf). A tile image whose side is not a multiple
of the network's stride is padded with ``fill`` at its right and bottom to the next one
(:func:`pad_image`), so any ``tiling.tile_px`` runs. Tiles without a single valid pixel are
skipped before their data is read. Each tile also reports how many source pixels of its
core hold data (inside the AOI), which adds up to the scene's imaged area.
A background thread with its own dataset handle keeps a bounded queue of ready tiles, so
the model never waits on I/O and memory stays bounded; it also shrinks each tile into the
quicklook's overview when asked, so the scene is decoded once.
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import shapely
from affine import Affine
from rasterio.features import geometry_mask
from shapely.geometry import box

from detector.infer.tiling import Tile
from detector.raster import open_raster, read_image
from detector.remote import SceneRef, is_url, scene_env


@dataclass(frozen=True)
class Stretch:
    """How to turn raw bands into model input: band map, per-band range, fill value."""

    bands: list[int]
    low: np.ndarray
    high: np.ndarray
    fill: int = 114


@dataclass
class TileImage:
    """A tile ready for the model: (3, S, S) uint8, or None when it holds no data."""

    index: int
    tile: Tile
    image: np.ndarray | None
    valid_px: float = 0.0  # source pixels of the tile's core holding data (in the AOI)


def pad_image(image: np.ndarray, size: int, fill: int) -> np.ndarray:
    """(C, S, S) ``image`` padded with ``fill`` at the right and bottom to (C, size, size).

    Pixel coordinates are unchanged, so detections map back to the tile as unpadded.
    """
    extra = size - image.shape[-1]
    if extra <= 0:
        return image
    return np.pad(image, ((0, 0), (0, extra), (0, extra)), constant_values=fill)


def read_tile_valid(src: rasterio.DatasetReader, tile: Tile, out_size: int, stretch: Stretch,
                    net_size: int | None = None, clip: tuple[int, int, int, int] | None = None
                    ) -> tuple[np.ndarray | None, np.ndarray]:
    """Read one tile resampled to ``out_size`` square: (uint8 (3, N, N) or None, valid).

    The same reader as training chips (:func:`detector.raster.read_image`); a one-band map
    is repeated into three bands. The image is None when no pixel is valid, and padded to
    ``net_size`` (N; default ``out_size``); ``valid`` is (S, S) at ``out_size``. Pixels
    outside ``clip`` (the AOI's bounds plus a margin, source pixels) are not read and count
    as nodata.
    """
    image, valid = read_image(src, tile.x0, tile.y0, tile.shape, out_size, stretch.bands,
                              stretch.low, stretch.high, stretch.fill, clip)
    if image is not None:
        if image.shape[0] == 1:
            image = np.repeat(image, 3, axis=0)
        image = pad_image(image, net_size or out_size, stretch.fill)
    return image, valid


def read_tile(src: rasterio.DatasetReader, tile: Tile, out_size: int, stretch: Stretch,
              net_size: int | None = None, clip: tuple[int, int, int, int] | None = None
              ) -> np.ndarray | None:
    """:func:`read_tile_valid`'s image alone: None when the tile has no valid pixel."""
    return read_tile_valid(src, tile, out_size, stretch, net_size, clip)[0]


def core_valid_px(tile: Tile, valid: np.ndarray, area: shapely.Geometry | None = None
                  ) -> float:
    """Source pixels of ``tile``'s core that hold data (and lie in ``area``, source pixels).

    Counted on the tile's (S, S) ``valid`` mask at model resolution, so no pixel is read
    twice: a tile pixel counts when its centre lies in the core, so, as cores partition the
    plane, the tiles' counts add up to the scene's.
    """
    s = valid.shape[0]
    sx, sy = tile.size / s, tile.height / s  # source px per tile px
    xmin, ymin, xmax, ymax = tile.core

    def first(edge: float, origin: int, step: float) -> int:
        """First tile pixel whose centre lies at or past ``edge`` (as ``Tile.owns`` rules)."""
        return int(math.ceil(float(np.clip((edge - origin) / step - 0.5, 0, s))))

    c0, c1 = first(xmin, tile.x0, sx), first(xmax, tile.x0, sx)
    r0, r1 = first(ymin, tile.y0, sy), first(ymax, tile.y0, sy)
    mask = valid[r0:r1, c0:c1]
    tile_box = box(tile.x0, tile.y0, tile.x0 + tile.size, tile.y0 + tile.height)
    if area is not None and mask.any() and not area.contains(tile_box):
        inside = geometry_mask([area.intersection(tile_box)], out_shape=valid.shape,
                               transform=Affine(sx, 0, tile.x0, 0, sy, tile.y0), invert=True)
        mask = mask & inside[r0:r1, c0:c1]
    return float(mask.sum()) * sx * sy


class PrefetchReader:
    """Iterate :class:`TileImage` for ``tiles`` in order, read ahead in a thread.

    Use as a context manager so the thread stops when the consumer does.
    """

    def __init__(self, path: str | Path | SceneRef, tiles: Sequence[Tile], out_size: int,
                 stretch: Stretch, depth: int = 16, net_size: int | None = None,
                 area: shapely.Geometry | None = None, overview: Any = None,
                 clip: tuple[int, int, int, int] | None = None):
        self.path, self.tiles, self.out_size, self.stretch = path, tiles, out_size, stretch
        self.net_size, self.area, self.clip = net_size, area, clip
        self.overview = overview  # gets every tile read (``paste(tile, image)``), or None
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, name="tile-reader", daemon=True)

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self) -> None:
        try:
            # Decode a window's compressed blocks on every core (GTiff, GDAL >= 3.6); the
            # settings (and a remote scene's, detector.remote) are scoped to this thread.
            # Not for a remote scene: GDAL's multi-threaded path fetches the blocks again
            # instead of using the block cache (2x the bytes over overlapping tiles).
            threads = "1" if is_url(self.path) else "ALL_CPUS"
            with scene_env(self.path, GDAL_NUM_THREADS=threads), \
                    open_raster(self.path) as src:
                for index, tile in enumerate(self.tiles):
                    image, valid = read_tile_valid(src, tile, self.out_size, self.stretch,
                                                   self.net_size, self.clip)
                    valid_px = core_valid_px(tile, valid, self.area) if image is not None else 0.0
                    if image is not None and self.overview is not None:
                        self.overview.paste(tile, image)  # the quicklook's overview, ~free
                    if not self._put(TileImage(index, tile, image, valid_px)):
                        return
        except Exception as err:  # noqa: BLE001 - re-raised in the consumer
            self._put(err)
            return
        self._put(None)

    def __enter__(self) -> PrefetchReader:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def __iter__(self) -> Iterator[TileImage]:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if isinstance(item, Exception):
                raise item
            yield item


def batches(items: Iterator[TileImage], size: int) -> Iterator[tuple[list[TileImage], int]]:
    """Group tiles with data into batches of ``size``; also report how many tiles passed."""
    batch: list[TileImage] = []
    seen = 0
    for item in items:
        seen += 1
        if item.image is not None:
            batch.append(item)
        if len(batch) == size:
            yield batch, seen
            batch, seen = [], 0
    if batch or seen:
        yield batch, seen
