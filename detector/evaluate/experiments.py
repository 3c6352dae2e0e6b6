"""Building blocks of the experiment scripts (scripts/exp_*.py): scene sets, evaluation
under inference overrides, headline rows, and the table/JSON/PNG each script writes."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from omegaconf import DictConfig, OmegaConf

from detector.atomic import atomic_path, write_text
from detector.config import compose
from detector.geometry import corners_to_obb, pixel_to_map, visible_fraction
from detector.labels import LabelledPolygon, read_geojson, to_pixel, write_geojson
from detector.raster import open_raster, write_geotiff
from detector.tables import text_table

log = logging.getLogger(__name__)

# The experiment that trains the bundled model (scripts/build_bundled_model.sh): scenes drawn
# with its settings and other seeds are "in style" for the bundled model.
BUNDLED_EXPERIMENT = "synthetic_randomised"

# Figures every experiment reports for a condition (report.json paths).
HEADLINE = {
    "wagon_mae": ("counting", "wagons", "mae"),
    "wagon_mape": ("counting", "wagons", "mape"),
    "wagon_bias": ("counting", "wagons", "bias"),
    "coverage": ("counting", "wagons", "coverage"),
    "width": ("counting", "wagons", "mean_width"),
    "map50": ("detection", "map50"),
    "covered_f1": ("detection", "classes", "covered_car", "f1"),
    "duplicates": ("seam_duplicates", "total"),
}


def synth_config(out: str | Path, n_scenes: int, seed: int,
                 settings: Mapping[str, Any] | None = None) -> DictConfig:
    """``conf/synth.yaml`` with ``settings`` (dotted keys) REPLACING its values.

    Replacing matters for dicts such as ``style.tarp_colors``: a held-out palette must not
    be merged into the training one.
    """
    cfg = compose("synth", [f"n_scenes={n_scenes}", f"seed={seed}"])
    OmegaConf.set_struct(cfg, False)
    cfg.out = str(out)
    for key, value in (settings or {}).items():
        OmegaConf.update(cfg, key, value, merge=False)
    return cfg


def training_scene_settings(experiment: str = BUNDLED_EXPERIMENT) -> dict[str, Any]:
    """The synth settings (dotted keys) a training experiment generated its scenes with.

    Scenes made with them and other seeds are "in style" for the model that experiment
    trained; held-out conditions are layered on top.
    """
    from detector.evaluate.api import flatten

    synth = compose("train", [f"experiment={experiment}"]).data.get("synth") or {}
    settings = flatten(OmegaConf.to_container(synth, resolve=True))
    return {k: v for k, v in settings.items() if k not in ("n_scenes", "seed")}


def make_scenes(out: str | Path, n_scenes: int, seed: int,
                settings: Mapping[str, Any] | None = None) -> Path:
    """Generate a scene set into ``out`` once; a complete existing set is reused.

    A ``settings.json`` beside the scenes records what made them, so a set made with other
    settings is regenerated rather than silently reused.
    """
    from detector.synth import write_scenes

    out = Path(out)
    record = {"n_scenes": n_scenes, "seed": seed, "settings": dict(settings or {})}
    stamp = out / "settings.json"
    if stamp.exists() and json.loads(stamp.read_text()) == json.loads(json.dumps(record)):
        return out
    write_scenes(synth_config(out, n_scenes, seed, settings))
    write_text(stamp, json.dumps(record, indent=2))
    return out


def dominant_angle(polygons: Sequence[LabelledPolygon]) -> float:
    """Most common body direction (degrees in [0, 180), pixel axes) of the labelled cars."""
    if not polygons:
        return 0.0
    angles = np.array([np.degrees(corners_to_obb(p.corners)[4]) % 180 for p in polygons])
    hist = np.bincount(np.round(angles).astype(int) % 180, minlength=180)
    smooth = np.convolve(np.r_[hist[-2:], hist, hist[:2]], np.ones(5), mode="valid")
    peak = float(np.argmax(smooth))
    # Refine: the axial (180°-periodic) mean of the angles near the peak.
    near = np.abs((angles - peak + 90) % 180 - 90) <= 4
    doubled = np.radians(2 * angles[near])
    return float(np.degrees(np.arctan2(np.sin(doubled).sum(), np.cos(doubled).sum())) / 2
                 % 180)


def rotate_scene(image: Path, labels: Path, angle_deg: float, out: Path) -> Path:
    """Rotate a (small) scene and its labels so its main track runs at ``angle_deg``.

    The picture turns about its centre (pixel axes, same geotransform and CRS); corners
    that come from outside get the scene's median colour, and cars that leave the frame
    entirely are dropped from the labels.

    Returns:
        The rotated GeoTIFF (its ``.geojson`` beside it).
    """
    polygons, file_crs = read_geojson(labels)
    with open_raster(image) as src:
        data, transform, crs, nodata = src.read(), src.transform, src.crs, src.nodata
        pixels = to_pixel(polygons, file_crs, src.crs, src.transform, labels)
    height, width = data.shape[1:]
    delta = np.radians(angle_deg - dominant_angle(pixels))
    c, s = np.cos(delta), np.sin(delta)
    centre = np.array([width / 2, height / 2])
    matrix = np.array([[c, -s, 0.0], [s, c, 0.0]])
    matrix[:, 2] = centre - matrix[:, :2] @ centre
    fill = np.median(data.reshape(data.shape[0], -1), axis=1)
    bands = [cv2.warpAffine(band, matrix, (width, height), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=float(f))
             for band, f in zip(data, fill, strict=True)]
    box = (0.0, 0.0, float(width), float(height))
    turned = []
    for poly in pixels:
        corners = poly.corners @ matrix[:, :2].T + matrix[:, 2]
        if visible_fraction(corners, box) > 0:
            mapped = pixel_to_map(corners, transform) if crs is not None else corners
            turned.append(LabelledPolygon(mapped, poly.cls, poly.properties))
    out.parent.mkdir(parents=True, exist_ok=True)
    write_geotiff(out, np.stack(bands).astype(data.dtype), transform, crs, nodata)
    write_geojson(out.with_suffix(".geojson"), turned, crs)
    return out


def evaluate_condition(scenes: str | Path, weights: str | Path | None, out: str | Path,
                       infer: Mapping[str, Any] | None = None,
                       settings: Sequence[str] = ()) -> dict[str, Any]:
    """Run ``detector.evaluate`` on ``scenes`` with inference overrides; the report dict.

    Args:
        scenes: folder of NAME.tif + NAME.geojson.
        weights: model bundle (None: the bundled model).
        out: this condition's output folder (report.json, predictions/).
        infer: ``conf/infer.yaml`` overrides as a (nested or dotted) dict.
        settings: extra ``conf/evaluate.yaml`` overrides, e.g. ``["plots=false"]``.
    """
    from detector.evaluate.api import evaluate

    overrides = [f"source={scenes}", f"out={out}", "plots=false", *settings]
    if weights:
        overrides.append(f"weights={weights}")
    cfg = compose("evaluate", overrides)
    OmegaConf.set_struct(cfg, False)
    cfg.infer = {"progress": False, **dict(infer or {})}
    return evaluate(cfg)


def headline(report: Mapping[str, Any]) -> dict[str, Any]:
    """The :data:`HEADLINE` figures of one report."""
    row: dict[str, Any] = {}
    for name, path in HEADLINE.items():
        node: Any = report
        for key in path:
            node = node.get(key) if isinstance(node, Mapping) else None
        row[name] = node
    return row


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """A fixed-width text table (also valid Markdown)."""
    def cell(value: Any) -> str:
        if value is None:
            return "–"
        if isinstance(value, float):
            if value.is_integer():
                return f"{value:g}"
            return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
        return str(value)

    return text_table(columns, [[cell(r.get(c)) for c in columns] for r in rows])


def save_results(out: str | Path, name: str, rows: Sequence[Mapping[str, Any]],
                 meta: Mapping[str, Any]) -> Path:
    """Write ``out/NAME.json`` (rows + how they were made) and ``out/NAME.md`` (the table)."""
    out = Path(out)
    write_text(out / f"{name}.json", json.dumps({"meta": dict(meta), "rows": list(rows)},
                                               indent=2, default=str))
    columns = list(rows[0]) if rows else []
    write_text(out / f"{name}.md", format_table(rows, columns) + "\n")
    return out / f"{name}.json"


def bar_plot(path: str | Path, rows: Sequence[Mapping[str, Any]], label: str,
             metrics: Sequence[str], title: str) -> Path:
    """Grouped bars of ``metrics`` per condition (``rows[i][label]``), one panel each."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.4 * len(metrics), 3.4))
    FigureCanvasAgg(fig)
    names = [str(r[label]) for r in rows]
    for i, metric in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), i + 1)
        values = [r.get(metric) if r.get(metric) is not None else np.nan for r in rows]
        ax.bar(range(len(rows)), values, color="tab:blue", alpha=0.8)
        ax.set_xticks(range(len(rows)), names, rotation=35, ha="right", fontsize=8)
        ax.set_title(metric, fontsize=10)
        ax.axhline(0, color="0.5", lw=0.6)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    return Path(path)
