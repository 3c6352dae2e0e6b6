"""The overhead augmentation runs inside Ultralytics and keeps oriented boxes on their pixels."""

import cv2
import numpy as np
import pytest
from ultralytics.data.augment import Albumentations
from ultralytics.utils.instance import Instances
from ultralytics.utils.ops import resample_segments

from detector.config import compose
from detector.geometry import obb_corners
from detector.train.augment import build_augmentations, ultralytics_hyp
from detector.train.train import train_args

SIZE = 128


def _scene(rng):
    """A dark image with three bright rotated cars, their corners (3, 4, 2) in pixels."""
    img = np.full((SIZE, SIZE, 3), 30, np.uint8)
    corners = np.stack([obb_corners(*rng.uniform(35, 93, 2), 30, 8, rng.uniform(0, np.pi))
                        for _ in range(3)])
    for c in corners:
        cv2.fillPoly(img, [c.round().astype(np.int32)], (230, 230, 230))
    return img, corners


def _labels(img, corners):
    """Labels as Ultralytics' OBB dataset hands them to transforms (corners as segments)."""
    segments = np.stack(resample_segments(list(corners.astype(np.float32)), n=100))
    boxes = np.concatenate([corners.min(1), corners.max(1)], 1).astype(np.float32)
    return {"img": img, "cls": np.arange(len(corners)).reshape(-1, 1).astype(np.float32),
            "instances": Instances(boxes, segments, bbox_format="xyxy", normalized=False)}


def _brightness_inside(img, segments):
    """Mean grey value inside each polygon (eroded by a pixel to skip edges)."""
    out = []
    for seg in segments:
        mask = np.zeros(img.shape[:2], np.uint8)
        cv2.fillPoly(mask, [cv2.boxPoints(cv2.minAreaRect(seg.astype(np.float32)))
                            .round().astype(np.int32)], 1)
        mask = cv2.erode(mask, np.ones((3, 3), np.uint8))
        if mask.sum():
            out.append(img[mask.astype(bool)].mean())
    return np.array(out)


def test_overhead_config_builds_every_transform():
    cfg = compose("train", ["paths.output_dir=/tmp/unused"])
    transforms = build_augmentations(cfg.augment)
    names = {type(t).__name__ for t in transforms}
    assert {"RandomRotate90", "Transpose", "HorizontalFlip", "VerticalFlip", "Affine",
            "RandomBrightnessContrast", "RandomGamma", "HueSaturationValue", "GaussianBlur",
            "GaussNoise", "RandomFog", "ImageCompression"} <= names
    hyp = ultralytics_hyp(cfg.augment)
    assert hyp["flipud"] == hyp["fliplr"] == hyp["degrees"] == hyp["scale"] == 0.0


def test_train_args_pass_trainer_keys_unchanged(tmp_path):
    cfg = compose("train", ["trainer.lr0=0.003", "+trainer.warmup_epochs=0.5",
                            f"paths.output_dir={tmp_path}"])
    args = train_args(cfg, tmp_path / "data.yaml", tmp_path)
    assert args["lr0"] == 0.003 and args["warmup_epochs"] == 0.5 and "resume" not in args
    assert args["flipud"] == 0.0 and len(args["augmentations"]) == 12
    assert args["project"] == str(tmp_path) and args["task"] == "obb"


@pytest.mark.parametrize("seed", range(6))
def test_transformed_labels_fit_transformed_pixels(seed):
    rng = np.random.default_rng(seed)
    img, corners = _scene(rng)
    cfg = compose("train", ["paths.output_dir=/tmp/unused"])
    spatial = [t for t in build_augmentations(cfg.augment)
               if type(t).__name__ in {"RandomRotate90", "Transpose", "HorizontalFlip",
                                       "VerticalFlip", "Affine"}]
    for t in spatial:
        t.p = 1.0  # force every geometric transform so the test sees them all
    aug = Albumentations(p=1.0, transforms=spatial)
    aug.transform.set_random_seed(seed)
    out = aug(_labels(img, corners))
    h, w = out["img"].shape[:2]
    segments = out["instances"].segments * (w, h)  # normalised by the transform
    assert len(segments) >= 2
    inside = _brightness_inside(out["img"], segments)
    assert inside.min() > 180, inside  # every box still sits on a bright car
    assert not np.array_equal(out["img"], img)
