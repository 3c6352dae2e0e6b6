"""Experiment 1: oriented (obb) vs axis-aligned (detect) boxes on dense strings at 30° and 45°.

On a diagonal track the axis-aligned boxes of coupled neighbours overlap heavily, so the
detect model's NMS deletes real cars and the count drops; oriented boxes barely overlap.
This measures the wagon-count error of each model on the same dense scenes, rotated so the
main track runs at each angle. Model-free rows ("perfect+NMS") show the mechanism alone: a
detector that finds every labelled car exactly, followed by greedy NMS on rotated vs
axis-aligned boxes at the in-tile NMS IoU of inference (the card's `nms.iou`) and at the
IoUs of --nms-ious.

    python scripts/exp_obb_vs_detect.py --obb-weights OBB.pt --detect-weights DETECT.pt \
        [--angles 30 45] [--scenes 4] [--size 1500] [--out outputs/exp_obb_vs_detect]

Writes OUT/obb_vs_detect.{json,md,png} and one evaluation folder per model and angle.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from detector.bundle import read_card, resolve_weights
from detector.config import compose
from detector.errors import DetectorError, guarded
from detector.evaluate.count_metrics import truth_mask, wagon_classes
from detector.evaluate.experiments import (
    bar_plot,
    evaluate_condition,
    format_table,
    headline,
    make_scenes,
    rotate_scene,
    save_results,
    training_scene_settings,
)
from detector.evaluate.matching import as_axis_aligned, iou_matrix
from detector.evaluate.scenes import load_scene

CLASSES = ["freight_car", "covered_car", "tank_car", "locomotive"]
DENSE = {"vehicles.min": 150, "vehicles.max": 240, "vehicles.empty_prob": 0.0,
         "trains.string_cars": [15, 45]}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--obb-weights", default=None,
                        help="obb bundle (default: the bundled model)")
    parser.add_argument("--detect-weights", required=True, help="detect bundle (.pt)")
    parser.add_argument("--angles", type=float, nargs="+", default=[30.0, 45.0])
    parser.add_argument("--scenes", type=int, default=4, help="scenes per angle")
    parser.add_argument("--size", type=int, default=1500, help="scene side in pixels")
    parser.add_argument("--nms-ious", type=float, nargs="*", default=[0.3],
                        help="NMS IoUs for the perfect-detector rows, besides inference's")
    parser.add_argument("--seed", type=int, default=7100)
    parser.add_argument("--out", type=Path, default=Path("outputs/exp_obb_vs_detect"))
    return parser.parse_args(argv)


def nms_kept(corners: list[np.ndarray], iou: float, rng: np.random.Generator) -> int:
    """How many boxes survive greedy NMS at ``iou`` (random scores: all cars look alike)."""
    overlap = iou_matrix(corners, corners)
    kept: list[int] = []
    for i in rng.permutation(len(corners)):
        if all(overlap[i, k] <= iou for k in kept):
            kept.append(int(i))
    return len(kept)


def perfect_detector_rows(folder: Path, angle: float, nms_ious: list[float], seed: int
                          ) -> list[dict]:
    """Count error of a perfect detector + NMS on rotated and on axis-aligned boxes."""
    rows = []
    for iou in nms_ious:
        rng = np.random.default_rng(seed)
        errors: dict[str, list[int]] = {"obb": [], "detect": []}
        truths: list[int] = []
        for image in sorted(folder.glob("scene_*.tif")):
            scene = load_scene(image, image.with_suffix(".geojson"), CLASSES)
            wagons = [t for t in scene.truth if t.cls in wagon_classes(CLASSES)]
            keep = truth_mask([t.corners for t in wagons], scene.width, scene.height)
            boxes = [t.corners for t, k in zip(wagons, keep, strict=True) if k]
            truths.append(len(boxes))
            errors["obb"].append(nms_kept(boxes, iou, rng) - len(boxes))
            errors["detect"].append(nms_kept([as_axis_aligned(b) for b in boxes], iou, rng)
                                    - len(boxes))
        true = np.maximum(np.array(truths, float), 1)
        rows += [{"model": f"perfect+NMS@{iou:g} {task}", "angle": angle,
                  "truth": int(sum(truths)), "wagon_mae": float(np.mean(np.abs(err))),
                  "wagon_bias": float(np.mean(err)),
                  "wagon_mape": float(np.mean(np.abs(err) / true) * 100)}
                 for task, err in errors.items()]
    return rows


def inference_nms_iou(weights: str | None) -> float:
    """The in-tile NMS IoU inference uses with ``weights``: conf/infer.yaml, else the card's."""
    from detector.bundle import NMS

    override = compose("infer").iou
    if override is not None:
        return float(override)
    card = read_card(resolve_weights(weights))
    return (card.nms if card else NMS()).iou


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    if not Path(args.detect_weights).is_file():
        raise DetectorError(f"{args.detect_weights}: detect weights not found; train one with "
                            "python -m detector.train model=yolo11n and pass its bundle .pt")
    base = make_scenes(args.out / "scenes" / "base", args.scenes, args.seed,
                       {**training_scene_settings(), **DENSE, "size": [args.size, args.size]})
    rows = []
    for angle in args.angles:
        folder = args.out / "scenes" / f"angle_{angle:g}"
        for image in sorted(base.glob("scene_*.tif")):
            target = folder / image.name
            if not target.exists():
                rotate_scene(image, image.with_suffix(".geojson"), angle, target)
        for task, weights in (("obb", args.obb_weights), ("detect", args.detect_weights)):
            report = evaluate_condition(folder, weights, args.out / "runs" / f"{task}_{angle:g}")
            rows.append({"model": task, "angle": angle, **headline(report),
                         "truth": report["counting"]["wagons"]["truth_total"]})
        nms_ious = sorted({inference_nms_iou(args.obb_weights), *args.nms_ious})
        rows += perfect_detector_rows(folder, angle, nms_ious, args.seed)
    meta = {"experiment": "obb_vs_detect", "args": vars(args), "synth": DENSE}
    save_results(args.out, "obb_vs_detect", rows, meta)
    for row in rows:
        row["label"] = f"{row['model']} {row['angle']:g}°"
    bar_plot(args.out / "obb_vs_detect.png", rows, "label",
             ["wagon_mape", "wagon_bias", "map50"], "obb vs detect on dense diagonal strings")
    print(format_table(rows, ["model", "angle", "truth", "wagon_mae", "wagon_mape",
                              "wagon_bias", "coverage", "map50"]))
    return rows


if __name__ == "__main__":
    guarded(main)
