"""Chip labelled scenes into Ultralytics YOLO datasets (``python -m detector.data``)."""

from detector.data.build import build_dataset
from detector.data.readers import load_scene_labels

__all__ = ["build_dataset", "load_scene_labels"]
