"""Which normalisation keeps colours? Hue shift of per-band vs joint stretch vs none.

A model sees what the normalisation makes of a scene. Stretching each band on its own moves
hues with the scene's content (on a grass-dominated scene grey ballast turns purple); one
stretch for all bands (``joint_percentile``) applies the same linear map to every band.
This measures, through the production path (``scene_stretch`` + ``to_uint8`` on a GeoTIFF):

- on the real orthophotos in ../shared/context/real_yard_samples (8-bit: the raw pixels are
  the reference);
- on synthetic scenes written as uint8 (reference: the pixels) and as uint16 11-bit sensor
  values (reference: the uint8 rendering of the same seed, i.e. the same ground before the
  sensor's gain and dark offset);

the mean absolute hue difference (degrees) to the reference over coloured pixels
(saturation and value >= 0.15), and the share of pixels shifted by more than 20 degrees.

    python scripts/exp_normalisation.py [--scenes 6] [--out outputs/exp_normalisation]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import cv2
import numpy as np
from affine import Affine

from detector.errors import guarded
from detector.evaluate.experiments import (
    format_table,
    save_results,
    synth_config,
    training_scene_settings,
)
from detector.raster import open_raster, scene_stretch, to_uint8, write_geotiff
from detector.synth import generate_scene

REAL = Path(__file__).resolve().parents[2] / "shared" / "context" / "real_yard_samples"
METHODS = ("percentile", "joint_percentile", "none")


def hue_shift(reference: np.ndarray, image: np.ndarray) -> tuple[float, float]:
    """(mean |hue difference| in degrees, share > 20 degrees) over coloured reference pixels."""
    ref = cv2.cvtColor(np.ascontiguousarray(reference.transpose(1, 2, 0)), cv2.COLOR_RGB2HSV_FULL)
    out = cv2.cvtColor(np.ascontiguousarray(image.transpose(1, 2, 0)), cv2.COLOR_RGB2HSV_FULL)
    coloured = (ref[..., 1] >= 38) & (ref[..., 2] >= 38)
    diff = np.abs(ref[..., 0].astype(int) - out[..., 0].astype(int))[coloured]
    diff = np.minimum(diff, 256 - diff) * (360 / 256)
    return float(diff.mean()), float((diff > 20).mean())


def normalised(data: np.ndarray, method: str) -> np.ndarray:
    """``data`` (C, H, W) through the production stretch, via a temporary GeoTIFF."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "scene.tif"
        write_geotiff(path, data, Affine(0.5, 0, 0, 0, -0.5, 0), None)
        with open_raster(path) as src:
            low, high = scene_stretch(src, {"bands": [1, 2, 3], "method": method,
                                            "percentiles": [0.5, 99.5]})
            return to_uint8(src.read([1, 2, 3]), low, high)


def images(n_scenes: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, reference uint8 RGB, data to normalise) for real and synthetic scenes."""
    out = []
    for path in sorted(REAL.glob("*.png")):
        rgb = cv2.imread(str(path), cv2.IMREAD_COLOR)[..., ::-1].transpose(2, 0, 1)
        out.append((f"real:{path.stem}", rgb, rgb))
    settings = {**training_scene_settings(), "size": [768, 768]}
    for seed in range(n_scenes):
        cfg = synth_config("unused", 1, 0, settings)
        ref = generate_scene(cfg, 9000 + seed).image[:3]
        cfg.dtype = "uint16"
        out.append((f"synth{seed}:uint8", ref, ref))
        out.append((f"synth{seed}:uint16", ref, generate_scene(cfg, 9000 + seed).image[:3]))
    return out


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=6)
    parser.add_argument("--out", type=Path, default=Path("outputs/exp_normalisation"))
    args = parser.parse_args(argv)
    rows = []
    for name, reference, data in images(args.scenes):
        row = {"image": name}
        for method in METHODS:
            if method == "none" and data.dtype != np.uint8:
                row[f"{method}_deg"] = row[f"{method}_gt20"] = None  # 11-bit data: not usable
                continue
            row[f"{method}_deg"], row[f"{method}_gt20"] = hue_shift(reference,
                                                                    normalised(data, method))
        rows.append(row)
        print(row, flush=True)
    mean = {"image": "MEAN"}
    for key in rows[0]:
        if key != "image":
            vals = [r[key] for r in rows if r[key] is not None]
            mean[key] = float(np.mean(vals)) if vals else None
    rows.append(mean)
    save_results(args.out, "normalisation", rows, {"experiment": "normalisation",
                                                   "args": {"scenes": args.scenes}})
    print(format_table(rows, list(rows[0])))
    return rows


if __name__ == "__main__":
    guarded(main)
