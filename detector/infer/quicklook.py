"""Quicklook PNG: downsampled scene with boxes by class, a legend with counts and 95%
intervals, a full-resolution inset of the densest area and, with an AOI, its outline.

Nothing here decodes the whole scene again: the overview is assembled from the tiles the
model reads anyway (:class:`Overview`, filled by the tile reader's thread, each tile shrunk
into place), the inset is one small window read at full resolution, and the picture is drawn
with OpenCV (no matplotlib).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import rasterio
import shapely
from rasterio.enums import Resampling
from rasterio.windows import Window

from detector.atomic import atomic_path
from detector.infer.reader import Stretch
from detector.infer.tiling import Tile
from detector.quicklook import class_color, draw_polygons, to_rgb
from detector.raster import finite_pixels, to_uint8

BACKGROUND = (32, 32, 32)
TEXT = (235, 235, 235)
AOI_COLOR = (0, 255, 128)
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_BAR = 34  # px of the title bar
_PAD = 8
_INSET_MAX = 768  # px of the inset's side at most


class Overview:
    """An RGB (H, W, 3) uint8 picture of the whole scene at ``scale``, built from its tiles.

    ``paste`` shrinks a model tile (already stretched as the model sees it) into its place;
    tiles never read (no data, outside the AOI) stay ``fill``.
    """

    def __init__(self, width: int, height: int, max_side: int, fill: int = 114):
        self.scale = min(1.0, max_side / max(width, height))
        shape = (max(1, round(height * self.scale)), max(1, round(width * self.scale)))
        self.image = np.full((*shape, 3), fill, np.uint8)

    def paste(self, tile: Tile, image: np.ndarray) -> None:
        """Put a tile's (C, S, S) uint8 image (C = 1 or 3) where ``tile`` lies in the scene."""
        s, (height, width) = self.scale, self.image.shape[:2]
        cx0, cy0 = round(tile.x0 * s), round(tile.y0 * s)
        cx1 = max(cx0 + 1, round((tile.x0 + tile.size) * s))
        cy1 = max(cy0 + 1, round((tile.y0 + tile.size) * s))
        ax0, ay0, ax1, ay1 = max(cx0, 0), max(cy0, 0), min(cx1, width), min(cy1, height)
        if ax1 <= ax0 or ay1 <= ay0:
            return
        # Decimate by striding to about twice the target first: area-averaging the full
        # tile for a thumbnail cost ~2 ms a tile (0.6 s on an 8000² scene).
        k = max(1, min(image.shape[-1] // (2 * (cx1 - cx0)), image.shape[-2] // (2 * (cy1 - cy0))))
        rgb = to_rgb(image[:, ::k, ::k])
        small = cv2.resize(rgb, (cx1 - cx0, cy1 - cy0), interpolation=cv2.INTER_AREA)
        self.image[ay0:ay1, ax0:ax1] = small[ay0 - cy0:ay1 - cy0, ax0 - cx0:ax1 - cx0]


def read_view(src: rasterio.DatasetReader, stretch: Stretch, window: Window,
              out_shape: tuple[int, int]) -> np.ndarray:
    """RGB (H, W, 3) uint8 of ``window`` resampled to ``out_shape`` (a decimated read)."""
    resampling = Resampling.average if out_shape[0] < window.height else Resampling.nearest
    data = src.read(stretch.bands, window=window, out_shape=(len(stretch.bands), *out_shape),
                    resampling=resampling, boundless=False)
    valid = (src.read_masks(1, window=window, out_shape=out_shape) > 0) & finite_pixels(data)
    return to_rgb(to_uint8(data, stretch.low, stretch.high, valid, stretch.fill))


def densest_square(centres: np.ndarray, side: float, width: int, height: int
                   ) -> tuple[int, int, int]:
    """(x0, y0, side) of the square of ``side`` px holding the most centres, inside the scene."""
    side = int(min(side, width, height))
    if len(centres) == 0:
        return (width - side) // 2, (height - side) // 2, side
    sample = centres[:: max(1, len(centres) // 2000)]
    inside = (np.abs(sample[:, None, 0] - centres[None, :, 0]) < side / 2) & (
        np.abs(sample[:, None, 1] - centres[None, :, 1]) < side / 2)
    cx, cy = sample[int(inside.sum(axis=1).argmax())]
    x0 = int(np.clip(cx - side / 2, 0, width - side))
    y0 = int(np.clip(cy - side / 2, 0, height - side))
    return x0, y0, side


def legend_labels(counts: dict[str, Any], classes: Sequence[str]) -> list[tuple[str, str]]:
    """(class, label) pairs such as ``covered_car: 41 (95% 38-45)``."""
    out = []
    for name in classes:
        stats = counts["classes"].get(name, {})
        lo, hi = stats.get("ci95", [0, 0])
        out.append((name, f"{name}: {stats.get('count', 0)} (95% {lo}-{hi})"))
    return out


def area_rings(area: shapely.Geometry | None) -> list[np.ndarray]:
    """Every ring (exteriors and holes) of the polygons in ``area``, (N, 2) pixel coords each."""
    if area is None or area.is_empty:
        return []
    rings = []
    for part in shapely.get_parts(area):  # a polygon, or the polygons of a multi/collection
        if isinstance(part, shapely.Polygon):
            rings.append(np.asarray(part.exterior.coords))
            rings.extend(np.asarray(hole.coords) for hole in part.interiors)
    return rings


def _draw_rings(canvas: np.ndarray, rings: Sequence[np.ndarray], scale: float,
                offset: tuple[float, float] = (0.0, 0.0), thickness: int = 2) -> None:
    shift = 4
    pts = [np.round((r - np.asarray(offset)) * scale * (1 << shift)).astype(np.int32)
           .reshape(-1, 1, 2) for r in rings]
    if pts:
        cv2.polylines(canvas, pts, False, AOI_COLOR, thickness, cv2.LINE_AA, shift)


def _text(canvas: np.ndarray, text: str, x: int, y: int, scale: float = 0.55) -> int:
    """Draw ``text`` with its baseline at ``y``; returns its width in px."""
    cv2.putText(canvas, text, (x, y), _FONT, scale, TEXT, 1, cv2.LINE_AA)
    return cv2.getTextSize(text, _FONT, scale, 1)[0][0]


def _legend(entries: Sequence[tuple[tuple[int, int, int], str]], width: int) -> np.ndarray:
    """Rows of colour swatches and labels, wrapped to ``width`` px."""
    rows: list[list[tuple[tuple[int, int, int], str, int]]] = [[]]
    used = _PAD
    for color, label in entries:
        w = 24 + cv2.getTextSize(label, _FONT, 0.55, 1)[0][0] + 24
        if rows[-1] and used + w > width:
            rows.append([])
            used = _PAD
        rows[-1].append((color, label, w))
        used += w
    bar = np.full((len(rows) * 26 + _PAD, width, 3), BACKGROUND, np.uint8)
    for k, row in enumerate(rows):
        x, y = _PAD, 20 + 26 * k
        for color, label, w in row:
            cv2.rectangle(bar, (x, y - 12), (x + 14, y + 2), color, -1)
            _text(bar, label, x + 22, y)
            x += w
    return bar


def render_quicklook(path: Path, overview: Overview, src: rasterio.DatasetReader,
                     stretch: Stretch, corners_px: Sequence[np.ndarray],
                     classes_of: Sequence[str], counts: dict[str, Any], classes: Sequence[str],
                     inset_side: float = 512, area: shapely.Geometry | None = None) -> None:
    """Write the quicklook PNG for one scene, atomically.

    Args:
        overview: the scene at low resolution, assembled from its tiles.
        corners_px: counted detections, (4, 2) source pixel corners each.
        classes_of: class of each detection.
        inset_side: side of the full-resolution inset in source pixels.
        area: the AOI in source pixels (its outline is drawn, holes included), or None.
    """
    scale = overview.scale
    view = draw_polygons(overview.image, corners_px, classes_of, scale=scale, thickness=1)
    rings = area_rings(area)
    _draw_rings(view, rings, scale)

    centres = np.array([c.mean(axis=0) for c in corners_px]).reshape(-1, 2)
    x0, y0, side = densest_square(centres, inset_side, src.width, src.height)
    cv2.rectangle(view, (round(x0 * scale), round(y0 * scale)),
                  (round((x0 + side) * scale), round((y0 + side) * scale)), (255, 255, 255), 1)
    zoom = min(1.0, _INSET_MAX / side)
    inset_px = max(1, round(side * zoom))
    inset = read_view(src, stretch, Window(x0, y0, side, side), (inset_px, inset_px))
    inset = draw_polygons(inset, corners_px, classes_of, scale=zoom, offset=(x0, y0),
                          thickness=2)
    _draw_rings(inset, rings, zoom, (x0, y0))

    h = max(view.shape[0], inset.shape[0] + 24)
    width = view.shape[1] + inset.shape[1] + 3 * _PAD
    panel = np.full((h, width, 3), BACKGROUND, np.uint8)
    panel[:view.shape[0], _PAD:_PAD + view.shape[1]] = view
    ix = 2 * _PAD + view.shape[1]
    _text(panel, f"densest area, full resolution ({side}x{side} px)", ix, 16, 0.5)
    panel[24:24 + inset.shape[0], ix:ix + inset.shape[1]] = inset

    wagons = counts["wagons"]
    title = np.full((_BAR, width, 3), BACKGROUND, np.uint8)
    _text(title, f"{Path(counts['scene']).name}: {wagons['count']} wagons (95% interval "
                 f"{wagons['ci95'][0]}-{wagons['ci95'][1]})", _PAD, 23, 0.65)
    entries = [(class_color(name), label) for name, label in legend_labels(counts, classes)]
    if area is not None:
        entries.append((AOI_COLOR, "AOI applied: only cars inside the outline are counted"))
    picture = np.concatenate([title, panel, _legend(entries, width)], axis=0)
    ok, png = cv2.imencode(".png", cv2.cvtColor(picture, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise OSError(f"could not encode {path}")
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(png.tobytes())
