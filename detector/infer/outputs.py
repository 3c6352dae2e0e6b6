"""Write per-scene outputs (GeoJSON, counts JSON) and the multi-scene summary, atomically."""

from __future__ import annotations

import glob
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.crs import CRS

from detector.atomic import write_csv, write_text
from detector.infer.results import Detection, SceneResult
from detector.labels import LabelledPolygon, read_geojson, write_geojson
from detector.shift import alarm_message
from detector.tables import text_table


def output_paths(out: Path, name: str) -> dict[str, Path]:
    """Where a scene's outputs go: ``<out>/<name>.geojson|.counts.json|.png``, and
    ``<name>.error.json`` when it failed.

    ``name`` is unique within a run (:func:`detector.scene_files.unique_names`); the counts
    JSON is written last, so its presence marks the scene as done.
    """
    return {"geojson": out / f"{name}.geojson",
            "counts": out / f"{name}.counts.json",
            "quicklook": out / f"{name}.png",
            "error": out / f"{name}.error.json"}


def write_error(path: Path, scene: Path, error: str) -> None:
    """The failure marker of a scene: why it failed (read back by the summary)."""
    write_text(path, json.dumps({"scene": str(scene), "error": error}, indent=2))


def clear_partials(paths: dict[str, Path]) -> None:
    """Remove temporary files a killed run left for these outputs (see detector.atomic)."""
    for path in paths.values():
        for tmp in path.parent.glob(f".{glob.escape(path.stem)}.????????.partial{path.suffix}"):
            tmp.unlink(missing_ok=True)


# Detections whose calibrated p lies in this range get ``review: "unsure"``: where an analyst
# correcting pre-labels should look first (the rest get ``review: "ok"``).
UNSURE_P = (0.2, 0.8)


def review_flag(p: float) -> str:
    """``unsure`` for a calibrated probability in :data:`UNSURE_P`, else ``ok``."""
    return "unsure" if UNSURE_P[0] <= p <= UNSURE_P[1] else "ok"


def write_detections(path: Path, detections: Sequence[Detection], crs: CRS | None) -> None:
    """GeoJSON: one Polygon per detection in the scene CRS with class, score, p, tile, review.

    The file reads back as labels (``class``; the other properties are ignored), so it is a
    pre-label layer to correct (docs/detections.qml styles it in QGIS).
    """
    polys = [LabelledPolygon(d.corners_map, d.cls, {"score": round(d.score, 4),
                                                      "p": round(d.p, 4), "tile": d.tile,
                                                      "review": review_flag(d.p)})
             for d in detections]
    write_geojson(path, polys, crs)


def read_detections(path: Path) -> list[Detection]:
    """Detections back from a GeoJSON written by :func:`write_detections` (map coords)."""
    polys, _ = read_geojson(path)
    return [Detection(np.full((4, 2), np.nan), p.corners, p.cls, float(p.properties["score"]),
                      float(p.properties["p"]), str(p.properties["tile"])) for p in polys]


def write_counts(path: Path, counts: dict[str, Any]) -> None:
    """The counts JSON (fields: docs/design.md, counts JSON)."""
    write_text(path, json.dumps(counts, indent=2))


def summary_rows(results: Sequence[SceneResult], classes: Sequence[str]) -> list[dict[str, Any]]:
    """One flat row per scene: status, wagons and per-class counts with intervals."""
    rows = []
    for res in results:
        row: dict[str, Any] = {"scene": str(res.scene), "name": res.name,
                               "status": res.status,
                               "error": res.error or ""}
        wagons = res.counts.get("wagons", {})
        row.update({"wagons": wagons.get("count", ""),
                    "wagons_expected": wagons.get("expected", ""),
                    "wagons_ci95": _ci(wagons)})
        for name in classes:
            stats = res.counts.get("classes", {}).get(name, {})
            row[name] = stats.get("count", "")
            row[f"{name}_ci95"] = _ci(stats)
        row["seconds"] = res.counts.get("seconds", "")
        rows.append(row)
    return rows


def _ci(stats: dict[str, Any]) -> str:
    ci = stats.get("ci95")
    return f"{ci[0]}-{ci[1]}" if ci else ""


def write_summary(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """``summary.csv``: the :func:`summary_rows` of a run, failed scenes with the reason."""
    write_csv(path, rows)


def format_table(results: Sequence[SceneResult], classes: Sequence[str]) -> str:
    """A plain-text table: one line per scene, counts with 95% intervals."""
    header = ["scene", "status", "wagons (95% CI)", *classes, "s"]
    lines, failed, alarms = [], [], []
    for row, res in zip(summary_rows(results, classes), results, strict=True):
        name = Path(row["scene"]).name
        if not res.ok:
            failed.append(f"{name}  failed  {res.error}")
            continue
        shift = res.counts.get("shift") or {}
        if shift.get("alarm"):
            alarms.append(alarm_message(name, shift))
        status = f"{row['status']} SHIFT!" if shift.get("alarm") else row["status"]
        cells = [name, status, f"{row['wagons']} ({row['wagons_ci95']})"]
        cells += [f"{row[c]} ({row[f'{c}_ci95']})" for c in classes]
        seconds = row["seconds"]
        cells.append(f"{seconds:.1f}" if isinstance(seconds, int | float) else "")
        lines.append(cells)
    return "\n".join([text_table(header, lines, markdown=False), *failed, *alarms])
