"""Write the evaluation report: ``report.json`` (all figures) and ``report.md`` (tables).

report.json layout::

    detection:  map50, map50_95, iou, classes{name: ap50, ap50_95, precision, recall, f1,
                tp, fp, fn, n_truth, threshold}, pr_curves{name: recall[], precision[]}
    counting:   wagons{...}, classes{name: {...}} with n_scenes, truth_total, mae, mape (%),
                wape (%), bias, rmse, coverage, mean_width
    confusion:  rows, columns, matrix, covered_vs_others{...}
    calibration: ece, n, bins[{low, high, n, mean_p, accuracy}]
    seam_duplicates: total, per_scene_mean
    scenes:     [{scene, classes{name: row}, wagons: row, seam_duplicates, ...}] with
                row = {truth, count, error, expected, ci95, covered}
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from detector.atomic import write_text
from detector.tables import text_table


def fmt(value: Any, digits: int = 3) -> str:
    """A table cell: numbers rounded, None as an en dash."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table of ``rows`` with their values formatted by :func:`fmt`."""
    return text_table(header, [[fmt(v) for v in row] for row in rows])


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f}%"


def _threshold(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {fmt(v, 2)}" for k, v in value.items())
    return fmt(value, 2)


def render_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown tables."""
    if "class_agnostic" in report:
        return _agnostic_markdown(report)
    det, cnt = report["detection"], report["counting"]
    parts = [f"# Evaluation report\n\n{report['n_scenes']} scene(s); model "
             f"`{report.get('model', {}).get('path', '?')}`; matching: "
             f"{report['matching']['geometry']} IoU ≥ {report['matching']['iou']}; "
             f"operating threshold {_threshold(report['operating_threshold'])}.\n"]
    parts.append(f"## Detection\n\nmAP50 **{fmt(det['map50'])}**, "
                 f"mAP50-95 **{fmt(det['map50_95'])}** (candidates; P/R/F1 at the operating "
                 "threshold).\n")
    parts.append(table(
        ["class", "truth", "AP50", "AP50-95", "precision", "recall", "F1", "TP", "FP", "FN"],
        [[c, v["n_truth"], v["ap50"], v["ap50_95"], v["precision"], v["recall"], v["f1"],
          v["tp"], v["fp"], v["fn"]] for c, v in det["classes"].items()]))
    header = ["group", "scenes", "truth", "MAE", "MAPE %", "WAPE %", "bias", "RMSE",
              "95% coverage", "mean width"]

    def count_row(name: str, s: dict[str, Any]) -> list[Any]:
        return [name, s["n_scenes"], s.get("truth_total"), s["mae"], s["mape"], s["wape"],
                s["bias"], s["rmse"], _pct(s["coverage"]), s["mean_width"]]

    parts.append("\n## Counting\n\nPer scene: count at the operating threshold vs truth "
                 "(vehicles at least half inside the scene/AOI); coverage = share of scenes "
                 "whose 95% interval holds the truth.\n")
    parts.append(table(header, [count_row("**wagons**", cnt["wagons"])]
                       + [count_row(c, s) for c, s in cnt["classes"].items()]))
    conf = report["confusion"]
    parts.append("\n## Confusion (counted detections; rows truth, columns predicted)\n")
    parts.append(table(["truth \\ predicted", *conf["columns"]],
                       [[r, *vals] for r, vals in zip(conf["rows"], conf["matrix"],
                                                      strict=True)]))
    cov = conf.get("covered_vs_others") or {}
    if cov:
        parts.append("\n**Tarp-covered vs uncovered:** " + ", ".join(
            f"{k.replace('_', ' ')} {fmt(v)}" for k, v in cov.items()) + ".\n")
    cal, dup = report["calibration"], report["seam_duplicates"]
    parts.append(f"\n## Calibration and seams\n\nECE of calibrated p over {cal['n']} "
                 f"candidates: {fmt(cal['ece'])}. Seam duplicates (extra counted detections "
                 f"on one car): {dup['total']} ({fmt(dup['per_scene_mean'], 2)} per scene).\n")
    parts.append("\n## Scenes\n")
    parts.append(table(
        ["scene", "wagons truth", "count", "error", "95% interval", "covered", "duplicates"],
        [[r["scene"], r["wagons"]["truth"], r["wagons"]["count"], r["wagons"]["error"],
          "[{}, {}]".format(*r["wagons"]["ci95"]), r["wagons"]["covered"], r["seam_duplicates"]]
         for r in report["scenes"]]))
    if report.get("failed"):
        parts.append("\n## Failed scenes\n")
        parts.append(table(["scene", "error"], [[f["scene"], f["error"]]
                                                for f in report["failed"]]))
    if report.get("plots"):
        parts.append("\n## Plots\n\n" + "\n".join(f"![{name}]({file})"
                                                  for name, file in report["plots"].items()))
    return "\n".join(parts) + "\n"


def _agnostic_markdown(report: dict[str, Any]) -> str:
    """A class-agnostic report (labels of one class the model lacks) as Markdown."""
    agn = report["class_agnostic"]
    parts = [f"# Evaluation report (class-agnostic)\n\n{report['n_scenes']} scene(s); model "
             f"`{report['model']['path']}`; label classes {report['label_classes']} scored as "
             f"one class against every model class; oriented IoU ≥ {agn['iou']}; P/R at the "
             "card's operating thresholds; counts are all vehicles (wagons and locomotives).\n",
             table(["truth", "AP50", "precision", "recall", "F1", "TP", "FP", "FN"],
                   [[agn["truth"], agn["AP50"], agn["precision"], agn["recall"], agn["f1"],
                     agn["tp"], agn["fp"], agn["fn"]]]),
             "\n## Scenes\n",
             table(["scene", "truth", "count", "expected", "95% interval", "covered", "TP",
                    "FP"],
                   [[r["scene"], r["truth"], r["count"], r["expected"],
                     "[{}, {}]".format(*r["ci95"]), r["covered"], r["tp"], r["fp"]]
                    for r in agn["scenes"]])]
    return "\n".join(parts) + "\n"


def write_report(report: dict[str, Any], out: str | Path) -> dict[str, Path]:
    """Write ``report.json`` and ``report.md`` into ``out`` (atomically each)."""
    out = Path(out)
    paths = {"json": out / "report.json", "md": out / "report.md"}
    write_text(paths["json"], json.dumps(report, indent=2))
    write_text(paths["md"], render_markdown(report))
    return paths


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The headline figures as a few printable lines."""
    if "class_agnostic" in report:
        from detector.evaluate.agnostic import summary_lines as agnostic_lines

        return agnostic_lines(report["class_agnostic"])
    det, wagons = report["detection"], report["counting"]["wagons"]
    cov = report["confusion"].get("covered_vs_others") or {}
    lines = [
        f"scenes: {report['n_scenes']} evaluated, {len(report.get('failed', []))} failed",
        f"detection: mAP50 {fmt(det['map50'])}  mAP50-95 {fmt(det['map50_95'])}",
        f"wagons: MAE {fmt(wagons['mae'], 2)}  MAPE {fmt(wagons['mape'], 1)}%  "
        f"bias {fmt(wagons['bias'], 2)}  RMSE {fmt(wagons['rmse'], 2)}  "
        f"95% coverage {_pct(wagons['coverage'])}  mean width {fmt(wagons['mean_width'], 1)}",
    ]
    covered = det["classes"].get("covered_car")
    if covered:
        lines.append(f"covered_car: F1 {fmt(covered['f1'])}  precision "
                     f"{fmt(covered['precision'])}  recall {fmt(covered['recall'])}  "
                     f"tarp confusion rate {fmt(cov.get('tarp_confusion_rate'))}")
    lines.append(f"seam duplicates: {report['seam_duplicates']['total']}")
    return lines
