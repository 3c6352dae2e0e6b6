"""Labels and detections as GeoJSON: one Polygon per vehicle, property ``class``.

Coordinates are in the scene's CRS (docs/design.md, labels GeoJSON). We record that CRS
in the legacy ``crs`` member so readers can reproject labels whose CRS differs from the raster's;
a file without it is taken to be in the raster's CRS, or in pixel coordinates when the
raster has none.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.crs import CRS
from rasterio.errors import CRSError
from rasterio.warp import transform as warp_transform

from detector.atomic import write_text
from detector.errors import DetectorError
from detector.geometry import map_to_pixel


@dataclass
class LabelledPolygon:
    """One vehicle: its body polygon (N, 2) and class name; ``properties`` keeps the rest."""

    corners: np.ndarray
    cls: str
    properties: dict[str, Any] = field(default_factory=dict)


def crs_member(crs: CRS | None) -> dict[str, Any] | None:
    """The GeoJSON ``crs`` member naming ``crs`` (None for pixel coordinates)."""
    if crs is None:
        return None
    epsg = crs.to_epsg()
    name = f"EPSG:{epsg}" if epsg else crs.to_wkt()
    return {"type": "name", "properties": {"name": name}}


def feature_collection(polygons: list[LabelledPolygon], crs: CRS | None) -> dict[str, Any]:
    """A GeoJSON FeatureCollection of closed Polygons with ``class`` + extra properties."""
    # Millimetres in a projected CRS; in degrees 3 decimals would be ~100 m, so keep 9.
    digits = 9 if crs is not None and crs.is_geographic else 3
    features = []
    for poly in polygons:
        ring = np.asarray(poly.corners, dtype=float)
        ring = np.vstack([ring, ring[:1]])
        features.append({
            "type": "Feature",
            "properties": {"class": poly.cls, **poly.properties},
            "geometry": {"type": "Polygon",
                         "coordinates": [[[round(float(x), digits), round(float(y), digits)]
                                          for x, y in ring]]},
        })
    collection: dict[str, Any] = {"type": "FeatureCollection", "features": features}
    member = crs_member(crs)
    if member:
        collection["crs"] = member
    return collection


def write_geojson(path: str | Path, polygons: list[LabelledPolygon], crs: CRS | None) -> None:
    """Write polygons (already in ``crs`` map coordinates) as GeoJSON, atomically."""
    write_text(path, json.dumps(feature_collection(polygons, crs)))


def _file_crs(collection: dict[str, Any], path: Path) -> CRS | None:
    member = collection.get("crs")
    if not member:
        return None
    try:
        return CRS.from_user_input(member["properties"]["name"])
    except (CRSError, KeyError, TypeError) as err:
        raise DetectorError(
            f"{path}: its 'crs' member cannot be read ({err}); "
            "name the CRS as an EPSG code, e.g. EPSG:32652") from err


def read_geojson(path: str | Path, known_classes: list[str] | None = None
                 ) -> tuple[list[LabelledPolygon], CRS | None]:
    """Read labels GeoJSON: polygons in file coordinates and the file's CRS (or None).

    Raises:
        DetectorError: unreadable JSON, a non-polygon geometry, or an unknown class.
    """
    path = Path(path)
    try:
        collection = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DetectorError(f"{path}: not readable GeoJSON ({err}); fix or re-export it") from err
    polygons = []
    for index, feature in enumerate(collection.get("features", [])):
        geometry = feature.get("geometry") or {}
        props = dict(feature.get("properties") or {})
        cls = props.pop("class", None)
        if geometry.get("type") != "Polygon":
            raise DetectorError(
                f"{path}: feature {index} is a {geometry.get('type')}, not a Polygon; "
                "label each vehicle as one Polygon (its body rectangle)")
        if known_classes is not None and cls not in known_classes:
            raise DetectorError(
                f"{path}: feature {index} has unknown class {cls!r}; "
                f"use one of {known_classes} or map it in the data config")
        ring = np.asarray(geometry["coordinates"][0], dtype=float)[:-1]
        polygons.append(LabelledPolygon(ring, str(cls), props))
    return polygons, _file_crs(collection, path)


def to_pixel(polygons: list[LabelledPolygon], file_crs: CRS | None, raster_crs: CRS | None,
             transform: Any, path: str | Path = "labels") -> list[LabelledPolygon]:
    """Convert polygons from file coordinates to the raster's pixel coordinates.

    Labels in another CRS are reprojected into the raster's; a raster without a CRS means
    the labels are already pixel coordinates.
    """
    if raster_crs is None:
        return polygons
    source_crs = file_crs or raster_crs
    out = []
    for poly in polygons:
        xy = poly.corners
        if source_crs != raster_crs:
            try:
                xs, ys = warp_transform(source_crs, raster_crs, xy[:, 0], xy[:, 1])
            except Exception as err:  # noqa: BLE001 - GDAL raises several types here
                raise DetectorError(
                    f"{path}: cannot reproject labels from {source_crs} to {raster_crs} "
                    f"({err}); export the labels in the scene's CRS") from err
            xy = np.column_stack([xs, ys])
            if not np.isfinite(xy).all():
                raise DetectorError(
                    f"{path}: labels in {source_crs} do not reproject into {raster_crs}; "
                    "export the labels in the scene's CRS")
        out.append(LabelledPolygon(map_to_pixel(xy, transform), poly.cls, poly.properties))
    return out
