"""detector.infer: streaming tiled inference on large GeoTIFFs with counts and intervals."""

from detector.infer.api import run
from detector.infer.results import Detection, SceneResult

__all__ = ["Detection", "SceneResult", "run"]
