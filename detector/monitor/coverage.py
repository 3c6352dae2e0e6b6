"""How much of the AOI a scene actually images: inside its footprint and not nodata."""

from __future__ import annotations

import math
from pathlib import Path

import rasterio
import shapely
from affine import Affine
from rasterio.features import rasterize
from rasterio.windows import Window
from shapely.geometry import box

from detector.infer import aoi as infer_aoi
from detector.raster import open_scene, valid_mask
from detector.remote import SceneRef

_MAX_SIDE = 1024  # the share is measured on a grid at most this many cells a side


def aoi_pixels(aoi: str | Path, src: rasterio.DatasetReader) -> shapely.Geometry:
    """The whole AOI in the scene's pixel coordinates (not clipped to the scene).

    Raises:
        DetectorError: a missing or unreadable AOI, or one without a polygon.
    """
    return infer_aoi.aoi_pixels(aoi, src.crs, src.transform)


def imaged_share(src: rasterio.DatasetReader, area: shapely.Geometry,
                 max_side: int = _MAX_SIDE) -> float:
    """Share (0–1) of ``area`` (scene pixels) that lies inside the scene and holds data.

    Measured on a grid over the part of the AOI inside the scene, decimated to at most
    ``max_side`` cells a side; a cell counts when its centre is inside the AOI and the
    scene's mask says it holds data there.
    """
    if area.is_empty or area.area <= 0:
        return 0.0
    clipped = area.intersection(box(0, 0, src.width, src.height))
    if clipped.is_empty or clipped.area <= 0:
        return 0.0
    x0, y0, x1, y1 = clipped.bounds
    col0, row0 = math.floor(x0), math.floor(y0)
    width, height = math.ceil(x1) - col0, math.ceil(y1) - row0
    step = max(1.0, max(width, height) / max_side)
    shape = (max(1, math.ceil(height / step)), max(1, math.ceil(width / step)))
    cell_w, cell_h = width / shape[1], height / shape[0]
    valid = valid_mask(src, Window(col0, row0, width, height), shape)
    grid = Affine(cell_w, 0, col0, 0, cell_h, row0)  # grid cell → scene pixel
    inside = rasterize([clipped], out_shape=shape, transform=grid, fill=0,
                       default_value=1, dtype="uint8").astype(bool)
    share = float((valid & inside).sum()) * cell_w * cell_h / area.area
    return min(1.0, share)


def scene_share(path: str | Path | SceneRef, aoi: str | Path | None) -> float:
    """Imaged share of the AOI in the scene at ``path`` (of the whole scene without an AOI).

    Raises:
        DetectorError: unreadable scene or AOI.
    """
    with open_scene(path) as src:
        area = aoi_pixels(aoi, src) if aoi else box(0, 0, src.width, src.height)
        return imaged_share(src, area)
