"""Label readers: each turns a source into scenes with vehicle polygons in pixel coordinates.

Readers never stop at a bad scene: they return the good scenes and one line per problem
(file and fix), so the build can go on and report them all.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from detector.errors import DetectorError
from detector.labels import LabelledPolygon, read_geojson, to_pixel
from detector.raster import open_raster
from detector.scene_files import find_rasters, unique_names


@dataclass
class Scene:
    """One labelled scene: the raster, where its labels came from, and its vehicles in pixels."""

    name: str
    image: Path
    labels: Path
    polygons: list[LabelledPolygon] = field(default_factory=list)


def normalise_class_map(class_map: Mapping[Any, Any] | None) -> dict[str, str | None]:
    """Class map with string keys (config keys may be ints, e.g. xView type ids)."""
    return {str(k): (None if v is None else str(v)) for k, v in (class_map or {}).items()}


def check_class_map(class_map: Mapping[str, str | None], classes: list[str]) -> None:
    """Raise if the class map sends a source class to a class that is not in ``classes``."""
    bad = sorted({v for v in class_map.values() if v is not None and v not in classes})
    if bad:
        raise DetectorError(
            f"data.class_map: maps to unknown class(es) {bad}; map to one of {classes} or null")


def map_classes(polygons: list[LabelledPolygon], class_map: Mapping[str, str | None]
                ) -> list[LabelledPolygon]:
    """Rename classes through ``class_map``; classes mapped to None are dropped."""
    out = []
    for poly in polygons:
        cls = class_map.get(poly.cls, poly.cls)
        if cls is not None:
            out.append(LabelledPolygon(poly.corners, cls, poly.properties))
    return out


def load_scene_labels(tif_path: str | Path, geojson_path: str | Path, classes: list[str],
                      class_map: Mapping[Any, Any] | None = None) -> list[LabelledPolygon]:
    """Vehicles of a labels GeoJSON in the pixel coordinates of its scene.

    Labels are reprojected when the GeoJSON's CRS differs from the raster's; when the
    raster has no CRS the labels are taken to be pixel coordinates already.

    Args:
        tif_path: the scene raster.
        geojson_path: its labels (one Polygon per vehicle, property ``class``).
        classes: the class names allowed.
        class_map: optional source name -> class (or None to drop) applied first.

    Raises:
        DetectorError: unreadable raster or GeoJSON, unknown class, CRS that cannot be
            reprojected.
    """
    mapping = normalise_class_map(class_map)
    check_class_map(mapping, classes)
    known = list(classes) + [k for k in mapping if k not in classes]
    polygons, file_crs = read_geojson(geojson_path, known_classes=known)
    with open_raster(tif_path) as src:
        pixels = to_pixel(polygons, file_crs, src.crs, src.transform, geojson_path)
    return map_classes(pixels, mapping)


def geojson_scenes(root: str | Path, pattern: str, classes: list[str],
                   class_map: Mapping[Any, Any] | None = None) -> tuple[list[Scene], list[str]]:
    """Scenes under ``root`` matching ``pattern``, each with ``NAME.geojson`` beside it.

    Returns:
        (scenes, problems): one problem line per scene that could not be used.
    """
    root = Path(root)
    if not root.is_dir():
        raise DetectorError(f"{root}: no such folder; set data.root to the folder of your scenes")
    images = find_rasters(root, pattern)
    if not images:
        raise DetectorError(
            f"{root}: no scene matches {pattern!r}; put NAME.tif + NAME.geojson there "
            "or set data.pattern")
    scenes, problems = [], []
    for image, name in zip(images, unique_names(images, root), strict=True):
        labels = image.with_suffix(".geojson")
        if not labels.exists():
            problems.append(f"{image}: no labels beside it ({labels.name}); label the scene "
                            "or move it out of data.root")
            continue
        try:
            polygons = load_scene_labels(image, labels, classes, class_map)
        except DetectorError as err:
            problems.append(str(err))
            continue
        scenes.append(Scene(name, image, labels, polygons))
    return scenes, problems


def _xview_box(feature: dict[str, Any]) -> tuple[str, str, np.ndarray]:
    """(image_id, type_id, corners (4, 2)) of one xView feature."""
    props = feature["properties"]
    x0, y0, x1, y1 = (float(v) for v in str(props["bounds_imcoords"]).split(","))
    corners = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    return str(props["image_id"]), str(int(props["type_id"])), corners


def xview_scenes(root: str | Path, labels: str, images: str, classes: list[str],
                 class_map: Mapping[Any, Any], keep_empty_scenes: bool = False
                 ) -> tuple[list[Scene], list[str]]:
    """Scenes of the xView GeoJSON (``bounds_imcoords``, ``type_id``, ``image_id``).

    xView boxes are axis-aligned pixel coordinates of their image. Type ids are mapped
    through ``class_map``; ids it does not list, or maps to None, are dropped.

    Returns:
        (scenes, problems).
    """
    root = Path(root)
    labels_path, images_dir = root / labels, root / images
    mapping = normalise_class_map(class_map)
    check_class_map(mapping, classes)
    try:
        collection = json.loads(labels_path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DetectorError(
            f"{labels_path}: not readable xView GeoJSON ({err}); set data.root and "
            "data.labels to the xView_train.geojson you downloaded") from err
    per_image: dict[str, list[LabelledPolygon]] = defaultdict(list)
    problems = []
    for index, feature in enumerate(collection.get("features", [])):
        try:
            image_id, type_id, corners = _xview_box(feature)
        except (KeyError, TypeError, ValueError):
            problems.append(f"{labels_path}: feature {index} lacks bounds_imcoords/type_id/"
                            "image_id; is this an xView file?")
            continue
        per_image.setdefault(image_id, [])
        cls = mapping.get(type_id)
        if cls is not None:
            per_image[image_id].append(LabelledPolygon(corners, cls, {"type_id": int(type_id)}))
    scenes = []
    for image_id in sorted(per_image):
        polygons = per_image[image_id]
        if not polygons and not keep_empty_scenes:
            continue
        image = images_dir / image_id
        if not image.exists():
            problems.append(f"{image}: listed in {labels_path.name} but missing; download the "
                            "xView images into data.root/data.images")
            continue
        scenes.append(Scene(Path(image_id).stem, image, labels_path, polygons))
    return scenes, problems
