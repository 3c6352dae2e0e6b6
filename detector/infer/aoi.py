"""Area of interest: the one reader of AOI GeoJSON files (infer, evaluate, monitor).

Any valid GeoJSON polygon form is an AOI: a bare Polygon or MultiPolygon (holes
included), a Feature, a FeatureCollection, or a GeometryCollection of these. Coordinates
are read as RFC 7946 says GeoJSON is: longitude/latitude (WGS 84) unless the file names
its CRS in a ``crs`` member (the legacy member QGIS and GDAL write; our own GeoJSON outputs
carry it). For a scene without a CRS, a file without ``crs`` is in pixel coordinates.
An invalid polygon (a ring that crosses itself, a bowtie) is repaired with shapely's
``make_valid``, which keeps every part of it, with a warning.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import CRSError
from rasterio.warp import transform as warp_transform
from shapely.errors import GEOSException
from shapely.geometry import MultiPolygon, Polygon, box, shape
from shapely.geometry.base import BaseGeometry

from detector.errors import DetectorError
from detector.geometry import map_to_pixel

log = logging.getLogger(__name__)

# RFC 7946 §4: a GeoJSON without a ``crs`` member is WGS 84 longitude, latitude.
LONLAT = CRS.from_epsg(4326)
POLYGONAL = ("Polygon", "MultiPolygon")
# Edges are split to at most this share of the AOI's extent before reprojection, so a long
# straight edge in lon/lat follows its true (slightly curved) course in the scene's CRS.
SEGMENTS_PER_EXTENT = 64


@dataclass
class AoiFile:
    """An AOI as written in its file: a valid (Multi)Polygon and the file's CRS.

    ``crs`` is None when the file has no ``crs`` member (lon/lat, or pixels for a scene
    without a CRS: :func:`source_crs`).
    """

    geometry: BaseGeometry
    crs: CRS | None


def _geometries(doc: Any, path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(where, geometry dict) of every geometry in a GeoJSON document."""
    if not isinstance(doc, dict):
        raise DetectorError(f"{path}: not a GeoJSON object; save the AOI as GeoJSON")
    kind = doc.get("type")
    if kind == "FeatureCollection":
        return [(f"feature {i}", (f or {}).get("geometry") or {})
                for i, f in enumerate(doc.get("features") or [])]
    if kind == "Feature":
        return [("its feature", doc.get("geometry") or {})]
    if kind == "GeometryCollection":
        return [(f"geometry {i}", g or {}) for i, g in enumerate(doc.get("geometries") or [])]
    return [("its geometry", doc)]


def _polygonal(geometry: BaseGeometry) -> BaseGeometry:
    """The polygon parts of ``geometry`` (lines and points that ``make_valid`` may leave
    are dropped) as one Polygon or MultiPolygon."""
    parts = [g for g in getattr(geometry, "geoms", [geometry])
             if isinstance(g, Polygon | MultiPolygon) and not g.is_empty]
    polys = [p for g in parts for p in getattr(g, "geoms", [g])]
    if not polys:
        return Polygon()
    return polys[0] if len(polys) == 1 else shapely.union_all(polys)


def repaired(geometry: BaseGeometry, path: str | Path) -> BaseGeometry:
    """``geometry`` made valid (with a warning naming what was wrong), else as it is."""
    if geometry.is_valid:
        return geometry
    reason = shapely.is_valid_reason(geometry)
    fixed = _polygonal(shapely.make_valid(geometry))
    log.warning("%s: the AOI polygon is invalid (%s); repaired with make_valid, which keeps "
                "every part of it (area %.6g → %.6g in file units); redraw it to be sure",
                path, reason, geometry.area, fixed.area)
    return fixed


def file_crs(doc: dict[str, Any], path: Path) -> CRS | None:
    """The CRS named by the file's legacy ``crs`` member, or None without one.

    Raises:
        DetectorError: a ``crs`` member that names no CRS.
    """
    member = doc.get("crs")
    if not member:
        return None
    try:
        return CRS.from_user_input(member["properties"]["name"])
    except (CRSError, KeyError, TypeError, ValueError) as err:
        raise DetectorError(
            f"{path}: its 'crs' member cannot be read ({err}); name the CRS as an EPSG "
            "code, e.g. EPSG:32652, or drop the member for longitude/latitude") from err


def read_aoi(path: str | Path) -> AoiFile:
    """Read an AOI GeoJSON: one valid (Multi)Polygon in file coordinates, and its CRS.

    Raises:
        DetectorError: missing or unreadable file, no polygon, a non-polygon geometry, or
            an unreadable ``crs`` member.
    """
    path = Path(path)
    if not path.is_file():
        raise DetectorError(f"{path}: AOI file not found; give a polygon GeoJSON with aoi=")
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DetectorError(f"{path}: not readable GeoJSON ({err}); fix or re-export it") from err
    polys = []
    for where, geom in _geometries(doc, path):
        kind = geom.get("type")
        if kind is None:
            continue  # a feature without geometry
        if kind not in POLYGONAL:
            raise DetectorError(f"{path}: {where} is a {kind}; an AOI is a Polygon or "
                                "MultiPolygon (draw the area as a polygon layer)")
        try:
            polys.append(shape(geom))
        except (ValueError, TypeError, IndexError, AttributeError,
                GEOSException) as err:
            raise DetectorError(f"{path}: {where} has unreadable coordinates ({err}); "
                                "re-export the AOI") from err
    polys = [repaired(p, path) for p in polys if not p.is_empty]
    polys = [p for p in polys if not p.is_empty and p.area > 0]
    if not polys:
        raise DetectorError(f"{path}: AOI has no polygon with an area; draw the area of "
                            "interest as a Polygon or MultiPolygon")
    geometry = polys[0] if len(polys) == 1 else shapely.union_all(polys)
    return AoiFile(geometry, file_crs(doc, path))


def source_crs(aoi: AoiFile, scene_crs: CRS | None, path: str | Path) -> CRS | None:
    """The CRS the AOI's coordinates are in: its ``crs`` member, else longitude/latitude
    (RFC 7946); None (pixel coordinates) for a scene without a CRS.

    Raises:
        DetectorError: no ``crs`` member but coordinates that cannot be longitude/latitude.
    """
    if scene_crs is None:
        return None
    if aoi.crs is not None:
        return aoi.crs
    x0, y0, x1, y1 = aoi.geometry.bounds
    if not (-180 <= x0 <= x1 <= 180 and -90 <= y0 <= y1 <= 90):
        raise DetectorError(
            f"{path}: the AOI has no 'crs' member, so it is read as longitude/latitude "
            f"(RFC 7946), but its coordinates ({x0:.6g}, {y0:.6g}) are not; export it as "
            f"WGS 84 or add a crs member naming its CRS, e.g. "
            f'"crs": {{"type": "name", "properties": {{"name": "{_name(scene_crs)}"}}}}')
    return LONLAT


def _name(crs: CRS) -> str:
    """The scene CRS as an example ``crs`` member (a projected one: a lon/lat AOI is
    read without one, so a geographic example would not help)."""
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg and not crs.is_geographic else "EPSG:<code>"


def reproject(geometry: BaseGeometry, from_crs: CRS, to_crs: CRS, path: str | Path
              ) -> BaseGeometry:
    """``geometry`` from ``from_crs`` into ``to_crs``, its edges split first so that long
    straight edges follow their true course (:data:`SEGMENTS_PER_EXTENT`).

    Raises:
        DetectorError: the AOI does not reproject into ``to_crs``.
    """
    if from_crs == to_crs:
        return geometry
    x0, y0, x1, y1 = geometry.bounds
    step = max(x1 - x0, y1 - y0) / SEGMENTS_PER_EXTENT
    if step > 0:
        geometry = shapely.segmentize(geometry, step)

    def points(xy: np.ndarray) -> np.ndarray:
        try:
            xs, ys = warp_transform(from_crs, to_crs, xy[:, 0], xy[:, 1])
        except Exception as err:  # noqa: BLE001 - GDAL raises several types here
            raise DetectorError(f"{path}: cannot reproject the AOI from {from_crs} to "
                                f"{to_crs} ({err}); export it in the scene's CRS") from err
        return np.column_stack([xs, ys])

    geometry = shapely.transform(geometry, points)
    if not np.isfinite(shapely.get_coordinates(geometry)).all():
        raise DetectorError(f"{path}: the AOI in {from_crs} does not reproject into "
                            f"{to_crs}; export it in the scene's CRS")
    return geometry


def to_scene_pixels(geometry: BaseGeometry, from_crs: CRS | None, scene_crs: CRS | None,
                    transform: Affine, path: str | Path) -> BaseGeometry:
    """``geometry`` from ``from_crs`` into the scene's pixel (col, row) coordinates.

    Raises:
        DetectorError: the AOI does not reproject into the scene's CRS.
    """
    if scene_crs is None or from_crs is None:
        return geometry
    geometry = reproject(geometry, from_crs, scene_crs, path)
    pixels = shapely.transform(geometry, lambda xy: map_to_pixel(xy, transform))
    return pixels if pixels.is_valid else _polygonal(shapely.make_valid(pixels))


def aoi_lonlat(path: str | Path) -> BaseGeometry:
    """The whole AOI in longitude/latitude (EPSG:4326): the footprint STAC searches compare.

    Raises:
        DetectorError: see :func:`read_aoi`, :func:`source_crs`, :func:`reproject`.
    """
    aoi = read_aoi(path)
    geometry = reproject(aoi.geometry, source_crs(aoi, LONLAT, path), LONLAT, path)
    return geometry if geometry.is_valid else _polygonal(shapely.make_valid(geometry))


def aoi_pixels(path: str | Path, crs: CRS | None, transform: Affine) -> BaseGeometry:
    """The whole AOI (holes and every part kept) in the scene's pixel coordinates, not
    clipped to the scene.

    Args:
        path: AOI GeoJSON (module docstring: the forms and the CRS it is read in).
        crs: the scene's CRS (None: the AOI is in pixel coordinates).
        transform: the scene's pixel → map affine transform.

    Raises:
        DetectorError: see :func:`read_aoi`, :func:`source_crs`, :func:`to_scene_pixels`.
    """
    aoi = read_aoi(path)
    return to_scene_pixels(aoi.geometry, source_crs(aoi, crs, path), crs, transform, path)


def load_aoi(path: str | Path, crs: CRS | None, transform: Affine, width: int, height: int
             ) -> BaseGeometry:
    """The AOI in the scene's pixel coordinates, clipped to the scene (holes kept).

    Raises:
        DetectorError: unreadable AOI, or one that does not overlap the scene.
    """
    clipped = aoi_pixels(path, crs, transform).intersection(box(0, 0, width, height))
    if clipped.is_empty or clipped.area <= 0:
        where = "longitude/latitude" if crs is not None and read_aoi(path).crs is None else \
            "its CRS"
        raise DetectorError(f"{path}: AOI does not overlap the scene (read in {where}); check "
                            "the AOI's CRS and that it outlines a place inside this scene")
    shapely.prepare(clipped)
    return clipped


def inside(area: BaseGeometry | None, points: np.ndarray) -> np.ndarray:
    """Mask of (N, 2) pixel points inside ``area`` (all True without an AOI)."""
    points = np.asarray(points, dtype=float).reshape(-1, 2)
    if area is None:
        return np.ones(len(points), dtype=bool)
    return shapely.contains_xy(area, points[:, 0], points[:, 1])
