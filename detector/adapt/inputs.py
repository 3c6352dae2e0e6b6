"""Check the scenes to adapt on before anything is written: pairs, classes, label positions."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from detector.data.readers import load_scene_labels
from detector.errors import DetectorError
from detector.evaluate.count_metrics import truth_mask
from detector.evaluate.scenes import find_scenes
from detector.raster import open_raster

MIN_SCENES = 2


@dataclass(frozen=True)
class AdaptScene:
    """One labelled scene to adapt on."""

    name: str
    image: Path
    labels: Path
    vehicles: int  # labelled vehicles at least half inside the scene


def check_scenes(folder: str | Path, classes: list[str]) -> list[AdaptScene]:
    """The labelled scenes of ``folder``, each checked.

    Raises:
        DetectorError: fewer than two scenes, a scene without labels, an unknown class, labels
            lying outside their scene, or no labelled vehicle at all (one line, with the fix).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DetectorError(f"{folder}: no such folder; scenes= must be a folder of NAME.tif + "
                            "NAME.geojson pairs (your corrected scenes)")
    pairs = find_scenes(folder)  # raises for a scene without NAME.geojson beside it
    if len(pairs) < MIN_SCENES:
        raise DetectorError(f"{folder}: {len(pairs)} labelled scene(s); adaptation needs at "
                            f"least {MIN_SCENES} (no scene may calibrate itself): add scenes")
    names = [image.stem for image, _ in pairs]
    if len(set(names)) != len(names):
        raise DetectorError(f"{folder}: two scenes share a name; give each scene a unique "
                            "file name")
    scenes = []
    for image, labels in pairs:
        polygons = load_scene_labels(image, labels, classes)  # raises for unknown classes
        with open_raster(image) as src:
            width, height = src.width, src.height
        corners = [p.corners for p in polygons]
        outside = (~truth_mask(corners, width, height, min_inside=1e-9)).sum() if corners else 0
        if outside:
            raise DetectorError(
                f"{labels}: {outside} of {len(polygons)} label(s) lie outside {image.name}; "
                "check that the labels belong to this scene and are in its CRS")
        inside = int(truth_mask(corners, width, height).sum()) if corners else 0
        scenes.append(AdaptScene(image.stem, image, labels, inside))
    if not any(s.vehicles for s in scenes):
        raise DetectorError(f"{folder}: the labels hold no vehicle; correct the pre-labels "
                            "(python -m detector.infer writes them) so they mark the cars")
    return scenes
