"""Prefetching tile reader: window → resample to the model's m/px → bands → uint8.

Tiles are read by :func:`detector.raster.read_image`, the reader of training chips too:
only the part of a tile window inside the raster is read (float windows, so the resampling
grid is exact); the rest is filled with the normalisation's neutral ``fill``, and so are
nodata pixels. Tiles without a single valid pixel are skipped before their data is read.
A background thread with its own dataset handle keeps a bounded queue of ready tiles, so
the model never waits on I/O and memory stays bounded.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio

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


def read_tile(src: rasterio.DatasetReader, tile: Tile, out_size: int, stretch: Stretch,
              clip: tuple[int, int, int, int] | None = None) -> np.ndarray | None:
    """Read one tile resampled to ``out_size`` square; None when it has no valid pixel.

    The same reader as training chips (:func:`detector.raster.read_image`); pixels outside
    ``clip`` (the AOI's bounds plus a margin) are not read and count as nodata.
    """
    image, _ = read_image(src, tile.x0, tile.y0, tile.size, out_size, stretch.bands,
                          stretch.low, stretch.high, stretch.fill, clip)
    if image is not None and image.shape[0] == 1:
        image = np.repeat(image, 3, axis=0)
    return image


class PrefetchReader:
    """Iterate :class:`TileImage` for ``tiles`` in order, read ahead in a thread.

    Use as a context manager so the thread stops when the consumer does.
    """

    def __init__(self, path: str | Path | SceneRef, tiles: Sequence[Tile], out_size: int,
                 stretch: Stretch, depth: int = 16,
                 clip: tuple[int, int, int, int] | None = None):
        self.path, self.tiles, self.out_size, self.stretch = path, tiles, out_size, stretch
        self.clip = clip
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
                    image = read_tile(src, tile, self.out_size, self.stretch, self.clip)
                    if not self._put(TileImage(index, tile, image)):
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
