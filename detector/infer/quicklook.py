"""Quicklook PNG: downsampled scene with boxes by class, a legend with counts and 95%
intervals, and a full-resolution inset of the densest area."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle
from rasterio.enums import Resampling
from rasterio.windows import Window

from detector.atomic import atomic_path
from detector.infer.reader import Stretch
from detector.quicklook import class_color, draw_polygons, to_rgb
from detector.raster import finite_pixels, to_uint8


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
    """(class, label) pairs such as ``covered_car: 41 (95% 38–45)``."""
    out = []
    for name in classes:
        stats = counts["classes"].get(name, {})
        lo, hi = stats.get("ci95", [0, 0])
        out.append((name, f"{name}: {stats.get('count', 0)} (95% {lo}–{hi})"))
    return out


def render_quicklook(path: Path, src: rasterio.DatasetReader, stretch: Stretch,
                     corners_px: Sequence[np.ndarray], classes_of: Sequence[str],
                     counts: dict[str, Any], classes: Sequence[str], max_side: int = 1600,
                     inset_side: float = 512) -> None:
    """Write the quicklook PNG for one scene, atomically.

    Args:
        corners_px: counted detections, (4, 2) source pixel corners each.
        classes_of: class of each detection.
        inset_side: side of the full-resolution inset in source pixels.
    """
    scale = min(1.0, max_side / max(src.width, src.height))
    shape = (max(1, round(src.height * scale)), max(1, round(src.width * scale)))
    overview = read_view(src, stretch, Window(0, 0, src.width, src.height), shape)
    overview = draw_polygons(overview, corners_px, classes_of, scale=scale, thickness=1)

    centres = np.array([c.mean(axis=0) for c in corners_px]).reshape(-1, 2)
    x0, y0, side = densest_square(centres, inset_side, src.width, src.height)
    zoom = min(1.0, 768 / side)
    inset_shape = (max(1, round(side * zoom)),) * 2
    inset = read_view(src, stretch, Window(x0, y0, side, side), inset_shape)
    inset = draw_polygons(inset, corners_px, classes_of, scale=zoom, offset=(x0, y0),
                          thickness=2)

    # A bare Figure on the Agg canvas: no pyplot state, the user's backend is left alone.
    fig = Figure(figsize=(14, 7.5))
    FigureCanvasAgg(fig)
    ax_all, ax_zoom = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.6, 1]})
    ax_all.imshow(overview)
    ax_all.add_patch(Rectangle((x0 * scale, y0 * scale), side * scale, side * scale,
                               fill=False, edgecolor="white", linestyle="--", linewidth=1))
    wagons = counts["wagons"]
    ax_all.set_title(f"{Path(counts['scene']).name}: {wagons['count']} wagons "
                     f"(95% interval {wagons['ci95'][0]}–{wagons['ci95'][1]})")
    ax_zoom.imshow(inset)
    ax_zoom.set_title(f"densest area, full resolution ({side}×{side} px)")
    for ax in (ax_all, ax_zoom):
        ax.set_axis_off()
    handles = [Patch(facecolor=np.array(class_color(name)) / 255, label=label)
               for name, label in legend_labels(counts, classes)]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
