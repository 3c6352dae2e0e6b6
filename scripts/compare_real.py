"""Models side by side on a real labelled scene: class-agnostic figures and quicklooks.

Runs ``detector.evaluate`` (class-agnostic: every rail vehicle one class, oriented IoU >= 0.3)
for each model on the same scene, prints one table (AP50, precision and recall at the
operating thresholds, the vehicle count with its 95% interval, the shift score) and stacks
the models' quicklooks into one picture, top to bottom in the order given.

    python scripts/compare_real.py --models v0.2=OLD.pt v0.3=detector/assets/railcar_obb.pt
        [--scene ../shared/real/muttenz_north.tif] [--out outputs/compare_real]
        [--picture docs/real_north.png]

The v0.2 bundle: ``git show 86b943e:detector/assets/railcar_obb.pt > v02.pt`` (and .json).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from detector.errors import guarded
from detector.evaluate.experiments import evaluate_condition, format_table, save_results

REAL_SCENE = Path(__file__).resolve().parents[2] / "shared" / "real" / "muttenz_north.tif"
COLUMNS = ["model", "truth", "AP50", "precision", "recall", "count", "expected", "ci95",
           "covered", "shift_score", "shift_alarm"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", required=True, help="NAME=WEIGHTS.pt pairs")
    parser.add_argument("--scene", type=Path, default=REAL_SCENE,
                        help="labelled scene (NAME.geojson beside it)")
    parser.add_argument("--iou", type=float, default=0.3)
    parser.add_argument("--out", type=Path, default=Path("outputs/compare_real"))
    parser.add_argument("--picture", type=Path, default=None,
                        help="write the stacked quicklooks here (PNG)")
    return parser.parse_args(argv)


def model_row(name: str, weights: str, args: argparse.Namespace) -> dict[str, Any]:
    """Evaluate one model on the scene; its table row."""
    out = args.out / name
    report = evaluate_condition(args.scene, weights, out,
                                settings=["class_agnostic=true", f"iou={args.iou}",
                                          "quicklook=true"])
    agn = report["class_agnostic"]
    scene = agn["scenes"][0]
    counts = json.loads(next((out / "predictions").glob("*.counts.json")).read_text())
    shift = counts.get("shift") or {}
    return {"model": name, "truth": agn["truth"], "AP50": agn["AP50"],
            "precision": agn["precision"], "recall": agn["recall"], "count": scene["count"],
            "expected": scene["expected"], "ci95": scene["ci95"], "covered": scene["covered"],
            "shift_score": shift.get("score"), "shift_alarm": shift.get("alarm")}


def stack_quicklooks(names: list[str], out: Path, picture: Path) -> None:
    """The models' quicklooks, top to bottom, each labelled, in one PNG."""
    from PIL import Image, ImageDraw

    images = [Image.open(next((out / n / "predictions").glob("*.png"))).convert("RGB")
              for n in names]
    width = max(im.width for im in images)
    canvas = Image.new("RGB", (width, sum(im.height + 24 for im in images)), "white")
    draw, y = ImageDraw.Draw(canvas), 0
    for name, im in zip(names, images, strict=True):
        draw.text((6, y + 5), name, fill="black")
        canvas.paste(im, (0, y + 24))
        y += im.height + 24
    picture.parent.mkdir(parents=True, exist_ok=True)
    tmp = picture.with_suffix(".partial.png")
    canvas.save(tmp)
    tmp.replace(picture)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    pairs = [m.split("=", 1) for m in args.models]
    rows = [model_row(name, weights, args) for name, weights in pairs]
    save_results(args.out, "compare_real", rows,
                 {"scene": str(args.scene), "iou": args.iou, "models": dict(pairs)})
    print(f"{args.scene.name}: one real scene, class-agnostic, oriented IoU >= {args.iou}")
    print(format_table(rows, COLUMNS))
    if args.picture:
        stack_quicklooks([n for n, _ in pairs], args.out, args.picture)
        print(f"picture: {args.picture}")
    return rows


if __name__ == "__main__":
    guarded(main)
