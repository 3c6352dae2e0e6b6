"""Write an Ultralytics YOLO dataset: PNG chips, label files, data.yaml and dataset.json.

Layout (Ultralytics finds labels by swapping ``images`` for ``labels`` in the path)::

    OUT/data.yaml  OUT/dataset.json
    OUT/images/{train,val,test}/NAME.png  OUT/labels/{train,val,test}/NAME.txt

PNGs hold the bands in the order of the band map (R, G, B); OpenCV, and so Ultralytics,
reads them as BGR, like ``cv2.imread`` of any RGB image.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from detector.data.split import SPLITS
from detector.labels import LabelledPolygon


def obb_line(class_id: int, corners: np.ndarray, size: int) -> str:
    """``class x1 y1 x2 y2 x3 y3 x4 y4`` with coordinates normalised to the chip."""
    xy = np.clip(np.asarray(corners, dtype=float) / size, 0.0, 1.0)
    return " ".join([str(class_id), *(f"{v:.6f}" for v in xy.reshape(-1))])


def detect_line(class_id: int, corners: np.ndarray, size: int) -> str:
    """``class cx cy w h`` (normalised) of the axis-aligned box around ``corners``."""
    xy = np.clip(np.asarray(corners, dtype=float) / size, 0.0, 1.0)
    (x0, y0), (x1, y1) = xy.min(axis=0), xy.max(axis=0)
    return f"{class_id} {(x0 + x1) / 2:.6f} {(y0 + y1) / 2:.6f} {x1 - x0:.6f} {y1 - y0:.6f}"


def label_lines(labels: list[LabelledPolygon], class_ids: dict[str, int], task: str,
                size: int) -> list[str]:
    """YOLO label rows for one chip, without duplicates (Ultralytics would drop them)."""
    line = obb_line if task == "obb" else detect_line
    rows = (line(class_ids[poly.cls], poly.corners, size) for poly in labels)
    return list(dict.fromkeys(rows))


def empty_counts(classes: list[str]) -> dict[str, dict[str, Any]]:
    """Per-split counters: chips, background chips, instances per class."""
    return {split: {"chips": 0, "background_chips": 0, "instances": dict.fromkeys(classes, 0)}
            for split in SPLITS}


class DatasetWriter:
    """Writes chips into a dataset folder and counts what it wrote."""

    def __init__(self, root: Path, task: str, classes: list[str]) -> None:
        self.root, self.task, self.classes = Path(root), task, list(classes)
        self.class_ids = {name: i for i, name in enumerate(self.classes)}
        self.counts = empty_counts(self.classes)

    def add(self, split: str, name: str, image: np.ndarray,
            labels: list[LabelledPolygon]) -> None:
        """Write one chip: ``image`` (C, H, W) uint8 with C in (1, 3), labels in chip pixels."""
        rows = label_lines(labels, self.class_ids, self.task, image.shape[-1])
        image_path = self.root / "images" / split / f"{name}.png"
        label_path = self.root / "labels" / split / f"{name}.txt"
        image_path.parent.mkdir(parents=True, exist_ok=True)
        label_path.parent.mkdir(parents=True, exist_ok=True)
        pixels = image[0] if image.shape[0] == 1 else np.ascontiguousarray(
            image.transpose(1, 2, 0)[..., ::-1])  # RGB planes -> OpenCV's BGR
        if not cv2.imwrite(str(image_path), pixels):
            raise OSError(f"{image_path}: could not write the chip")
        label_path.write_text("".join(f"{row}\n" for row in rows))
        counts = self.counts[split]
        counts["chips"] += 1
        counts["background_chips"] += not rows
        for row in rows:
            counts["instances"][self.classes[int(row.split()[0])]] += 1

    def splits_written(self) -> list[str]:
        """Splits that received at least one chip, in train/val/test order."""
        return [split for split in SPLITS if self.counts[split]["chips"]]


def write_data_yaml(path: Path, dataset_root: Path, classes: list[str],
                    splits: dict[str, str | list[str]]) -> None:
    """Ultralytics data.yaml: absolute ``path``, the split entries and ``names``."""
    data: dict[str, Any] = {"path": str(dataset_root)}
    data.update(splits)
    data["names"] = dict(enumerate(classes))
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def write_dataset_json(path: Path, info: dict[str, Any]) -> None:
    """dataset.json: provenance and counts (see data/README.md for the fields)."""
    path.write_text(json.dumps(info, indent=2) + "\n")
