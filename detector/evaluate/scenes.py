"""Find labelled scenes to evaluate and load their truth and AOI in scene pixel coordinates."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import shapely

from detector.data.readers import load_scene_labels
from detector.errors import DetectorError
from detector.infer.aoi import load_aoi
from detector.labels import LabelledPolygon
from detector.raster import open_raster
from detector.scene_files import RASTER_SUFFIXES, find_rasters


@dataclass
class LabelledScene:
    """A scene raster, its labels file, its truth in pixels and its size."""

    image: Path
    labels: Path
    truth: list[LabelledPolygon]
    width: int
    height: int


def _labels_beside(image: Path) -> Path:
    labels = image.with_suffix(".geojson")
    if not labels.exists():
        raise DetectorError(f"{image}: no labels beside it ({labels.name}); evaluation needs "
                            "NAME.tif + NAME.geojson pairs: label the scene or move it out")
    return labels


def _dataset_scenes(dataset_json: Path, split: str) -> list[tuple[Path, Path]]:
    """The (image, labels) pairs of one split recorded in a dataset's ``dataset.json``."""
    try:
        info = json.loads(dataset_json.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DetectorError(f"{dataset_json}: not readable JSON ({err}); rebuild the dataset "
                            "with python -m detector.data") from err
    scenes = info.get("scenes") or info.get("source_scenes") or []
    pairs = []
    for entry in scenes:
        if not isinstance(entry, dict) or entry.get("split") != split:
            continue
        image = dataset_json.parent / entry.get("image", "")  # absolute paths stay as they are
        labels = dataset_json.parent / (entry.get("labels") or image.with_suffix(".geojson"))
        if image.suffix.lower() in RASTER_SUFFIXES and labels.suffix == ".geojson":
            pairs.append((image, labels))
    if not pairs:
        raise DetectorError(
            f"{dataset_json}: records no GeoTIFF + GeoJSON scenes in split {split!r} (scenes "
            "split into blocks or non-GeoJSON sources cannot be evaluated whole); pass "
            "source=FOLDER of NAME.tif + NAME.geojson pairs instead")
    return pairs


def find_scenes(source: str | Path, split: str = "test") -> list[tuple[Path, Path]]:
    """(image, labels) pairs for ``source``.

    Args:
        source: a folder of ``NAME.tif`` + ``NAME.geojson`` pairs (its subfolders
            included), one ``.tif`` with its
            ``.geojson`` beside it, or a dataset (its folder, data.yaml or dataset.json),
            whose ``split`` scenes are used.
        split: dataset split to evaluate.

    Raises:
        DetectorError: nothing to evaluate, or a scene without labels.
    """
    source = Path(source)
    if not source.exists():
        raise DetectorError(f"{source}: no such file or folder; give source=FOLDER of "
                            "NAME.tif + NAME.geojson pairs")
    if source.is_file() and source.suffix.lower() in RASTER_SUFFIXES:
        return [(source, _labels_beside(source))]
    if source.name in ("dataset.json", "data.yaml"):
        return _dataset_scenes(source.with_name("dataset.json"), split)
    if source.is_dir():
        images = find_rasters(source)
        if not images and (source / "dataset.json").exists():
            return _dataset_scenes(source / "dataset.json", split)
        if images:
            return [(image, _labels_beside(image)) for image in images]
    raise DetectorError(f"{source}: holds no NAME.tif + NAME.geojson scenes; give a folder of "
                        "labelled GeoTIFFs (or a dataset's dataset.json)")


def load_scene(image: Path, labels: Path, classes: list[str]) -> LabelledScene:
    """Read a scene's size and its truth polygons in pixel coordinates."""
    truth = load_scene_labels(image, labels, list(classes))
    with open_raster(image) as src:
        return LabelledScene(image, labels, truth, src.width, src.height)


def scene_aoi(aoi: str | Path | None, image: Path) -> shapely.Geometry | None:
    """The AOI in ``image``'s pixel coordinates (the same reading inference uses), or None."""
    if not aoi:
        return None
    with open_raster(image) as src:
        return load_aoi(aoi, src.crs, src.transform, src.width, src.height)
