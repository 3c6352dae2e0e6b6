"""Area of interest: a polygon GeoJSON (e.g. a station outline) in scene pixel coordinates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import shapely
from affine import Affine
from rasterio.crs import CRS
from shapely.geometry import Polygon, box
from shapely.ops import unary_union

from detector.errors import DetectorError
from detector.labels import read_geojson, to_pixel


def aoi_pixels(path: str | Path, crs: CRS | None, transform: Affine) -> shapely.Geometry:
    """The whole AOI polygon(s) in the scene's pixel coordinates (not clipped to the scene).

    The file's CRS (its ``crs`` member) is reprojected to the scene's; without one the file
    is taken to be in the scene CRS (pixel coordinates for a scene without CRS).

    Raises:
        DetectorError: a missing or unreadable AOI, or one without a polygon.
    """
    path = Path(path)
    if not path.is_file():
        raise DetectorError(f"{path}: AOI file not found; give a polygon GeoJSON with aoi=")
    polys, file_crs = read_geojson(path)
    if not polys:
        raise DetectorError(f"{path}: AOI has no polygon; draw the area of interest as a Polygon")
    pixel = to_pixel(polys, file_crs, crs, transform, path)
    return unary_union([Polygon(p.corners).buffer(0) for p in pixel])


def load_aoi(path: str | Path, crs: CRS | None, transform: Affine, width: int, height: int
             ) -> shapely.Geometry:
    """The AOI polygon(s) in the scene's pixel coordinates, clipped to the scene.

    Raises:
        DetectorError: unreadable AOI, or one that does not overlap the scene.
    """
    clipped = aoi_pixels(path, crs, transform).intersection(box(0, 0, width, height))
    if clipped.is_empty or clipped.area <= 0:
        raise DetectorError(f"{path}: AOI does not overlap the scene; check the AOI's CRS "
                            "and that it outlines a place inside this scene")
    shapely.prepare(clipped)
    return clipped


def inside(area: shapely.Geometry | None, points: np.ndarray) -> np.ndarray:
    """Mask of (N, 2) pixel points inside ``area`` (all True without an AOI)."""
    points = np.asarray(points, dtype=float).reshape(-1, 2)
    if area is None:
        return np.ones(len(points), dtype=bool)
    return shapely.contains_xy(area, points[:, 0], points[:, 1])
