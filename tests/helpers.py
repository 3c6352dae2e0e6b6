"""Builders shared by the tests: tiny GeoTIFF scenes, strings of cars, untrained models,
and a tiny YOLO dataset of bright rotated rectangles (the layout of
``detector.data.build_dataset`` output: ``data.yaml`` plus ``dataset.json``).

Fixtures that wrap them live in ``tests/conftest.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import yaml
from affine import Affine
from rasterio.crs import CRS

from detector.bundle import default_card, write_card
from detector.geometry import obb_corners
from detector.raster import DEFAULT_NORMALIZATION, write_geotiff

CLASSES = ["freight_car", "covered_car", "tank_car", "locomotive"]
TOY_CLASSES = CLASSES
UTM = CRS.from_epsg(32652)
TRANSFORM = Affine(0.5, 0, 500000, 0, -0.5, 4700000)  # 0.5 m/px, UTM 52N


def car_string(x0: float, y0: float, angle_deg: float, n: int, length: float = 30.0,
               width: float = 6.0, gap: float = 2.0) -> list[np.ndarray]:
    """Corners (4, 2) of ``n`` coupled cars along a straight track starting at (x0, y0)."""
    a = np.deg2rad(angle_deg)
    step = length + gap
    return [obb_corners(x0 + np.cos(a) * step * k, y0 + np.sin(a) * step * k, length, width, a)
            for k in range(n)]


def random_scene(path: Path, size: tuple[int, int] = (200, 150), seed: int = 0,
                 low: int = 0, high: int = 255, transform: Affine = TRANSFORM,
                 crs: CRS | None = UTM) -> Path:
    """A 3-band uint8 GeoTIFF of ``size`` (width, height) with uniform noise."""
    data = np.random.default_rng(seed).integers(low, high, (3, size[1], size[0]), np.uint8)
    write_geotiff(path, data, transform, crs)
    return path


def save_untrained(path: Path, task: str = "obb", card: bool = True, imgsz: int = 128,
                   family: str = "yolo11", **card_fields) -> Path:
    """A tiny untrained YOLO with our 4 classes, saved so that YOLO(path) loads it, with a
    card (identity-ish calibration unless ``card_fields`` say otherwise).

    ``family`` ``yolo26`` builds the NMS-free end-to-end head (``yolo26n*.yaml``)."""
    from ultralytics import YOLO
    from ultralytics.nn.tasks import DetectionModel, OBBModel

    arch = f"{family}n-obb.yaml" if task == "obb" else f"{family}n.yaml"
    model = YOLO(arch)
    net_cls = OBBModel if task == "obb" else DetectionModel
    model.model = net_cls(arch, nc=len(CLASSES), verbose=False)
    if family == "yolo26":
        model.model.end2end = True  # as a trained YOLO26 checkpoint runs (one-to-one head)
    model.model.names = dict(enumerate(CLASSES))
    model.model.task = task
    model.save(path)
    if card:
        fields = {"candidate_conf": 0.05, "operating_threshold": {"default": 0.5},
                  "calibration": {"freight_car": {"method": "isotonic", "x": [0, 1],
                                                  "y": [0.1, 0.9]}}, **card_fields}
        write_card(path, default_card(task, CLASSES, imgsz, **fields))
    return path
# Fill colour (BGR) and length in pixels of each class, so the classes are learnable.
_LOOK = {0: ((40, 40, 200), 28), 1: ((60, 160, 60), 28), 2: ((200, 200, 200), 22),
         3: ((200, 60, 40), 38)}


def toy_image(rng: np.random.Generator, size: int, n_objects: int
              ) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
    """One image (BGR uint8) with ``n_objects`` filled rotated rectangles and their corners."""
    img = np.full((size, size, 3), 90, np.uint8)
    img = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
    objects = []
    for _ in range(n_objects):
        cls = int(rng.integers(0, len(_LOOK)))
        colour, length = _LOOK[cls]
        margin = length / 2 + 2
        cx, cy = rng.uniform(margin, size - margin, 2)
        corners = obb_corners(cx, cy, length, 7, rng.uniform(0, np.pi))
        cv2.fillPoly(img, [corners.round().astype(np.int32)], colour)
        objects.append((cls, corners))
    return img, objects


def write_toy_dataset(out: str | Path, n_train: int = 8, n_val: int = 4, size: int = 96,
                      task: str = "obb", seed: int = 0, with_test: bool = False) -> Path:
    """Write a tiny YOLO dataset and return its ``data.yaml``.

    Args:
        out: folder to write into (created).
        n_train: images in the train split.
        n_val: images in the val split (and test split when ``with_test``).
        size: image side in pixels.
        task: ``"obb"`` (corner labels) or ``"detect"`` (axis-aligned labels).
        seed: random seed.
        with_test: also write a test split.
    """
    out = Path(out)
    rng = np.random.default_rng(seed)
    splits = {"train": n_train, "val": n_val} | ({"test": n_val} if with_test else {})
    for split, n in splits.items():
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img, objects = toy_image(rng, size, int(rng.integers(2, 6)))
            cv2.imwrite(str(out / "images" / split / f"{split}_{i}.png"), img)
            lines = [_label_line(cls, corners / size, task) for cls, corners in objects]
            (out / "labels" / split / f"{split}_{i}.txt").write_text("\n".join(lines) + "\n")
    data = {"path": str(out.resolve()), **{s: f"images/{s}" for s in splits},
            "names": dict(enumerate(TOY_CLASSES))}
    (out / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    meta = {"classes": TOY_CLASSES, "task": task, "m_per_px": 0.5, "chip_size": size,
            "normalization": dict(DEFAULT_NORMALIZATION), "splits": dict(splits),
            "source": "tests.helpers", "seed": seed}
    (out / "dataset.json").write_text(json.dumps(meta, indent=2))
    return out / "data.yaml"


def _label_line(cls: int, corners: np.ndarray, task: str) -> str:
    corners = np.clip(corners, 0, 1)
    if task == "obb":
        values = corners.ravel()
    else:
        (x0, y0), (x1, y1) = corners.min(0), corners.max(0)
        values = np.array([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0])
    return " ".join([str(cls), *(f"{v:.6f}" for v in values)])
