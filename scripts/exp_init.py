"""Init experiment: which start makes the best freight-car model, at equal epochs.

Every arm trains on the same synthetic dataset (the bundled model's experiment,
``experiment=synthetic_randomised``, with fewer scenes) for the same number of epochs, is
calibrated the same way (whole val scenes through the real tiled inference), and is scored
the same way:

- in-style test-chip mAP50 (from the card: Ultralytics val on the test split);
- the style-shift families of ``scripts/bench_style_shift.py`` (held-out texture, sensor,
  vivid colours) and empty yards with look-alikes;
- the real north scene ``../shared/real/muttenz_north.tif`` (one real scene, 78 cars):
  class-agnostic recall and precision at oriented IoU >= 0.3, and the vehicle count with its
  95% interval (``detector.evaluate`` with ``class_agnostic=true iou=0.3``).

Training speed is reported as chips per second over the arm's training (a shared CPU makes
wall-clock a rough guide only; arms are compared at equal epochs, never equal time).

    python scripts/exp_init.py train [--arms ...] [--epochs 3] [--scenes 40]   # resumable
    python scripts/exp_init.py score [--arms ...] [--style-scenes 3]
    python scripts/exp_init.py train score                                      # both

Writes OUT/<arm>/railcar_obb.{pt,json} per arm and OUT/exp_init.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from detector.errors import guarded

# name -> Hydra overrides on top of experiment=synthetic_randomised.
ARMS: dict[str, list[str]] = {
    "v0.2_warm": ["model=yolo11n-obb", "model.init=bundled"],
    "dota_yolo26n": ["model=yolo26n-obb", "model.init=dota:yolo26n-obb"],
    "franken_yolo11n": ["model=yolo11n-obb", "model.init=dota:franken-yolo11n-obb"],
    "dota_yolov8n": ["model=yolov8n-obb", "model.init=dota:yolov8n-obb"],
    # Backbone (layers 0-9) frozen: keeps the DOTA features, fewer weights to train.
    "dota_yolo26n_frozen": ["model=yolo26n-obb", "model.init=dota:yolo26n-obb",
                            "+trainer.freeze=10"],
    "dota_yolov8n_frozen": ["model=yolov8n-obb", "model.init=dota:yolov8n-obb",
                            "+trainer.freeze=10"],
}
DEFAULT_ARMS = ["v0.2_warm", "dota_yolo26n", "franken_yolo11n", "dota_yolov8n",
                "dota_yolo26n_frozen"]
REAL_SCENE = Path(__file__).resolve().parents[2] / "shared" / "real" / "muttenz_north.tif"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("steps", nargs="+", choices=["train", "score"])
    parser.add_argument("--arms", nargs="+", default=DEFAULT_ARMS, choices=list(ARMS))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--scenes", type=int, default=40, help="synthetic scenes (1024 px)")
    parser.add_argument("--style-scenes", type=int, default=3,
                        help="scenes per style-shift family")
    parser.add_argument("--real", type=Path, default=REAL_SCENE,
                        help="real labelled scene (GeoJSON beside it)")
    parser.add_argument("--out", type=Path, default=Path("outputs/exp_init"))
    return parser.parse_args(argv)


def train_arm(name: str, args: argparse.Namespace) -> Path:
    """Train (or resume, or reuse) one arm; the bundle path."""
    run = args.out / name
    bundle = run / "railcar_obb.pt"
    if (run / "railcar_obb.json").is_file():
        return bundle
    last = run / "ultralytics" / "weights" / "last.pt"
    cmd = [sys.executable, "-m", "detector.train", "experiment=synthetic_randomised",
           *ARMS[name], f"data.synth.n_scenes={args.scenes}", f"trainer.epochs={args.epochs}",
           "trainer.time=null", "trainer.patience=100", f"hydra.run.dir={run}"]
    if last.is_file():
        cmd.append(f"trainer.resume={last}")
    start = time.time()
    subprocess.run(cmd, check=True)
    (run / "wall_seconds.txt").write_text(f"{time.time() - start:.0f}\n")
    return bundle


def chips_per_second(run: Path) -> float | None:
    """Training chips per second over the arm's epochs (Ultralytics results.csv times)."""
    import csv

    from detector.data.yolo import dataset_split_images

    results = run / "ultralytics" / "results.csv"
    data_yaml = json.loads((run / "railcar_obb.json").read_text())["dataset"]["data_yaml"]
    n_train = len(dataset_split_images(Path(data_yaml), "train"))
    if not results.is_file() or not n_train:
        return None
    rows = list(csv.DictReader(results.open()))
    seconds = float(rows[-1]["time"]) if rows else None
    return round(n_train * len(rows) / seconds, 2) if seconds else None


def score_real(bundle: Path, real: Path, out: Path) -> dict[str, Any]:
    """Class-agnostic detection and count figures of ``bundle`` on the real scene."""
    from detector.evaluate.experiments import evaluate_condition

    report = evaluate_condition(real, bundle, out, settings=["class_agnostic=true", "iou=0.3"])
    agn = report["class_agnostic"]
    scene = agn["scenes"][0]
    return {"real_recall": agn["recall"], "real_precision": agn["precision"],
            "real_AP50": agn["AP50"], "real_truth": agn["truth"], "real_count": scene["count"],
            "real_expected": scene["expected"], "real_ci95": scene["ci95"]}


def score(args: argparse.Namespace) -> list[dict[str, Any]]:
    import bench_style_shift as bss

    from detector.evaluate.experiments import format_table, save_results

    bundles = {name: args.out / name / "railcar_obb.pt" for name in args.arms}
    style = bss.main(["--models", *[f"{k}={v}" for k, v in bundles.items()],
                      "--families", *bss.HELD_OUT, "empty_yard", "--experiment",
                      "synthetic_randomised", "--scenes", str(args.style_scenes),
                      "--out", str(args.out / "style_shift")])
    rows = []
    for name, bundle in bundles.items():
        card = json.loads(bundle.with_suffix(".json").read_text())
        test = card["metrics"].get("test", {})
        row: dict[str, Any] = {"arm": name, "init": card["training"]["init"],
                               "epochs": card["training"]["epochs_run"],
                               "chips_per_s": chips_per_second(args.out / name),
                               "test_mAP50": test.get("mAP50")}
        held = next(r for r in style if r["model"] == name and "pooled" in r["family"])
        empty = next(r for r in style if r["model"] == name and r["family"] == "empty_yard")
        row.update({"heldout_mape": held["wagon_mape"], "heldout_coverage": held["coverage"],
                    "false_wagons_per_km2": empty["false_wagons"]})
        row.update(score_real(bundle, args.real, args.out / name / "real"))
        rows.append(row)
    save_results(args.out, "exp_init", rows,
                 {"experiment": "exp_init", "args": {**vars(args), "out": str(args.out)},
                  "arms": {name: ARMS[name] for name in args.arms}})
    print(format_table(rows, list(rows[0])))
    return rows


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if "train" in args.steps:
        for name in args.arms:
            print(f"== arm {name}", flush=True)
            train_arm(name, args)
    if "score" in args.steps:
        score(args)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    guarded(main)
