"""One scene end to end: plan tiles, stream them through the model, merge, count, write."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import shapely
from omegaconf import DictConfig, OmegaConf
from shapely.geometry import box
from tqdm import tqdm

from detector import calibration
from detector.bundle import ModelCard
from detector.errors import DetectorError
from detector.geometry import pixel_to_map
from detector.infer import aoi as aoi_mod
from detector.infer.counting import summarize_counts
from detector.infer.merge import merge, owned
from detector.infer.model import Bundle, Predictor
from detector.infer.outputs import output_paths, read_detections, write_counts, write_detections
from detector.infer.reader import PrefetchReader, Stretch, batches
from detector.infer.results import Detection, SceneResult
from detector.infer.tiling import Tile, tile_grid
from detector.raster import check_bands, open_raster, scene_m_per_px, scene_stretch
from detector.shift import alarm_fields, shift_fields, tapped, tile_features

log = logging.getLogger(__name__)


@dataclass
class Plan:
    """How a scene is read: resolution, band stretch, tile grid, optional AOI (pixels)."""

    m_per_px: float
    stretch: Stretch
    tiles: list[Tile]
    tile_size: int
    overlap: int
    margin: float  # px a tile's core grows by when deciding ownership
    area: shapely.Geometry | None


@dataclass
class Candidates:
    """Merged candidates of a scene in source pixels."""

    corners: np.ndarray  # (N, 4, 2)
    scores: np.ndarray
    cls: np.ndarray  # class ids
    tile: np.ndarray  # tile index
    tiles_read: int


def plan_scene(src: rasterio.DatasetReader, path: Path, card: ModelCard, cfg: DictConfig
               ) -> Plan:
    """Resolution, stretch and tile grid for one open scene (no pixel data decoded yet)."""
    mpp = float(cfg.m_per_px) if cfg.get("m_per_px") else scene_m_per_px(src)
    if mpp is None:
        raise DetectorError(f"{path}: resolution unknown (no CRS); pass m_per_px=<metres per "
                            "pixel> or give a georeferenced GeoTIFF")
    if src.crs is None:
        log.warning("%s: no CRS; outputs are in pixel coordinates", path)
    norm = dict(card.normalization)
    if cfg.get("bands"):
        norm["bands"] = list(cfg.bands)
    bands = list(norm["bands"])
    check_bands(src, bands, path)
    if len(bands) not in (1, 3):
        raise DetectorError(f"{path}: the model takes 3 bands but bands={bands}; "
                            "set bands= to three bands (e.g. bands=[3,2,1])")
    imgsz = int(cfg.tiling.get("tile_px") or card.imgsz)
    tile_size = max(1, round(imgsz * card.m_per_px / mpp))
    overlap = math.ceil(float(cfg.tiling.overlap_m) / mpp)
    if overlap * 2 > tile_size:
        raise DetectorError(
            f"{path}: tiling.overlap_m={cfg.tiling.overlap_m} is more than half a tile "
            f"({tile_size * mpp:.0f} m); lower it or raise tiling.tile_px")
    area = (aoi_mod.load_aoi(cfg.aoi, src.crs, src.transform, src.width, src.height)
            if cfg.get("aoi") else None)
    tiles = tile_grid(src.width, src.height, tile_size, overlap)
    if area is not None:
        tiles = [t for t in tiles
                 if area.intersects(box(t.x0, t.y0, t.x0 + t.size, t.y0 + t.size))]
    low, high = scene_stretch(src, norm)
    stretch = Stretch(bands, low, high, int(norm.get("fill", 114)))
    margin = float(cfg.tiling.get("core_margin_m", 0.0)) / mpp
    return Plan(mpp, stretch, tiles, tile_size, overlap, margin, area)


def detect_tiles(path: Path, plan: Plan, predictor: Any, imgsz: int, batch: int,
                 prefetch: int = 16, progress: bool = True) -> Candidates:
    """Stream tiles through ``predictor``; keep what each tile owns (source pixels)."""
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    read = 0
    bar = tqdm(total=len(plan.tiles), desc=path.name, unit="tile", disable=not progress,
               leave=False)
    with PrefetchReader(path, plan.tiles, imgsz, plan.stretch, depth=prefetch) as reader:
        for group, seen in batches(iter(reader), batch):
            if group:
                outputs = predictor(np.stack([item.image for item in group]))
                for item, det in zip(group, outputs, strict=True):
                    offset = np.array([item.tile.x0, item.tile.y0], dtype=float)
                    px = det.corners * (item.tile.size / imgsz) + offset
                    keep = owned(px, item.tile, plan.margin)
                    parts.append((px[keep], det.scores[keep], det.cls[keep],
                                  np.full(int(keep.sum()), item.index)))
                read += len(group)
            bar.update(seen)
    bar.close()
    if not parts:
        return Candidates(np.zeros((0, 4, 2)), np.zeros(0), np.zeros(0, int), np.zeros(0, int),
                          read)
    return Candidates(*(np.concatenate(a) for a in zip(*parts, strict=True)), read)


def build_detections(cands: Candidates, plan: Plan, card: ModelCard, classes: list[str],
                     transform: Any, has_crs: bool) -> list[Detection]:
    """Detections with map coordinates and calibrated probabilities."""
    names = [classes[int(c)] if 0 <= int(c) < len(classes) else str(c) for c in cands.cls]
    p = np.zeros(len(names))
    cal = card.calibration
    for name in set(names):
        mask = np.array([n == name for n in names])
        p[mask] = calibration.apply(cal.get(name), cands.scores[mask])
    out = []
    for k, name in enumerate(names):
        px = cands.corners[k]
        out.append(Detection(px, pixel_to_map(px, transform) if has_crs else px.copy(), name,
                             float(cands.scores[k]), float(p[k]),
                             plan.tiles[int(cands.tile[k])].name))
    return out


def scene_counts(path: Path, detections: list[Detection], bundle: Bundle, plan: Plan,
                 cfg: DictConfig, seconds: float, src: rasterio.DatasetReader,
                 backend: str = "torch") -> dict[str, Any]:
    """The counts JSON dict (docs/design.md, counts JSON) with the run's settings.

    ``backend`` is the backend that actually ran (``auto`` resolved).
    """
    card = bundle.card
    per_class, wagons = summarize_counts(
        bundle.classes, [d.cls for d in detections], np.array([d.score for d in detections]),
        np.array([d.p for d in detections]), card.operating_threshold,
        card.recall_at_candidate_conf, tuple(card.not_wagons),
        recall_evidence=card.recall_counts, dispersion=card.dispersion)
    area_px = plan.area.area if plan.area is not None else src.width * src.height
    return {
        "scene": str(path),
        "model": {"path": str(bundle.weights), "sha256": bundle.sha256},
        "m_per_px": round(plan.m_per_px, 4),
        "classes": per_class,
        "wagons": wagons,
        "area_km2": round(area_px * plan.m_per_px ** 2 / 1e6, 6),
        "seconds": round(seconds, 2),
        "crs": src.crs.to_string() if src.crs else None,
        "aoi": str(cfg.aoi) if cfg.get("aoi") else None,
        "settings": {**run_settings(bundle, cfg), "backend": backend},
        "tiles": len(plan.tiles),
        "n_candidates": len(detections),
        "backend": backend,
    }


def skipped_result(path: Path, paths: dict[str, Path]) -> SceneResult:
    """Result of a scene whose outputs exist already (read back from disk)."""
    import json

    counts = json.loads(paths["counts"].read_text())
    detections = read_detections(paths["geojson"]) if paths["geojson"].exists() else []
    return SceneResult(path, True, None, detections, counts,
                       {k: v for k, v in paths.items() if k != "error" and v.exists()},
                       skipped=True)


def process_scene(path: Path, bundle: Bundle, predictor: Any, cfg: DictConfig,
                  name: str | None = None) -> SceneResult:
    """Run inference on one scene and write its outputs (``<out>/<name>.*``, ``name``
    defaulting to the file stem; see :func:`detector.infer.outputs.output_paths`)."""
    out = Path(cfg.out)
    paths = output_paths(out, name or path.stem)
    if paths["counts"].exists() and not cfg.overwrite:
        log.info("%s: outputs exist in %s; skipping (overwrite=true to redo)", path.name, out)
        return skipped_result(path, paths)
    start = time.perf_counter()
    with open_raster(path) as src:
        plan = plan_scene(src, path, bundle.card, cfg)
        imgsz = int(cfg.tiling.get("tile_px") or bundle.imgsz)
        # Shift alarm: one pooled backbone vector per tile, from a hook (nearly free).
        # Other backends run the first torch layers on every other batch for it (shift.py).
        net = getattr(bundle, "net", None)
        with tile_features(net, (bundle.card.shift or {}).get("layer")) as feats, \
                tapped(predictor, net, feats.layer if bundle.card.shift else None):
            cands = detect_tiles(path, plan, predictor, imgsz, int(cfg.batch or _batch(bundle)),
                                 int(cfg.prefetch), bool(cfg.progress))
        if cands.tiles_read == 0:
            raise DetectorError(f"{path}: every pixel is nodata"
                                f"{' inside the AOI' if plan.area is not None else ''}; "
                                "nothing to detect (check the scene's nodata value)")
        m = cfg.merge
        keep = merge(cands.corners, cands.scores, cands.tile, m.method,
                     threshold=float(m.threshold), metric=str(m.metric),
                     cross_tile_only=bool(m.cross_tile_only))
        cands = Candidates(cands.corners[keep], cands.scores[keep], cands.cls[keep],
                           cands.tile[keep], cands.tiles_read)
        in_aoi = aoi_mod.inside(plan.area, cands.corners.mean(axis=1))
        cands = Candidates(cands.corners[in_aoi], cands.scores[in_aoi], cands.cls[in_aoi],
                           cands.tile[in_aoi], cands.tiles_read)
        detections = build_detections(cands, plan, bundle.card, bundle.classes, src.transform,
                                      src.crs is not None)
        counted = [d for d in detections if d.score >= bundle.card.threshold(d.cls)]
        write_detections(paths["geojson"], counted, src.crs)
        outputs = {"geojson": paths["geojson"], "counts": paths["counts"]}
        counts = scene_counts(path, detections, bundle, plan, cfg, 0.0, src,
                              str(getattr(predictor, "backend", "custom")))
        counts.update(shift_fields(bundle.card.shift, feats.array()))
        counts.update(alarm_fields((bundle.card.shift or {}).get("alarm"), counts["shift"],
                                   np.array([d.p for d in detections]),
                                   np.array([d.score >= bundle.card.threshold(d.cls)
                                             for d in detections], bool), counts["area_km2"]))
        if cfg.quicklook:
            from detector.infer.quicklook import render_quicklook

            render_quicklook(paths["quicklook"], src, plan.stretch,
                             [d.corners_px for d in counted], [d.cls for d in counted], counts,
                             bundle.classes, int(cfg.quicklook_max_side),
                             float(cfg.quicklook_inset_m) / plan.m_per_px)
            outputs["quicklook"] = paths["quicklook"]
    counts["seconds"] = round(time.perf_counter() - start, 2)
    write_counts(paths["counts"], counts)  # last: its presence marks the scene as done
    return SceneResult(path, True, None, detections, counts, outputs, features=feats)


def _batch(bundle: Bundle) -> int:
    return 32 if bundle.device.type == "cuda" else 8


def run_settings(bundle: Bundle, cfg: DictConfig) -> dict[str, Any]:
    """The settings a run actually uses: the config where it sets them, else the card's.

    Recorded under ``settings`` in every counts JSON, and what :func:`make_predictor` uses.
    """
    card = bundle.card
    # The card's NMS produced the candidates its calibration was fitted on: keep it by default.
    return {
        "candidate_conf": float(cfg.conf if cfg.get("conf") is not None else card.candidate_conf),
        "nms": {"iou": float(cfg.iou if cfg.get("iou") is not None else card.nms.iou),
                "agnostic": bool(cfg.agnostic_nms if cfg.get("agnostic_nms") is not None
                                 else card.nms.agnostic),
                "max_det": int(cfg.max_det)},
        "operating_threshold": card.operating_threshold,
        "model_m_per_px": card.m_per_px,
        "bands": list(cfg.bands) if cfg.get("bands") else list(card.normalization["bands"]),
        "tiling": OmegaConf.to_container(cfg.tiling, resolve=True),
        "merge": OmegaConf.to_container(cfg.merge, resolve=True),
        "backend": str(cfg.get("backend") or "auto"),  # as asked; counts JSON: as run
        "device": str(bundle.device),
        "half": bool(bundle.half),
    }


def make_predictor(bundle: Bundle, cfg: DictConfig) -> Predictor:
    """The batched predictor for ``bundle`` with the run's thresholds and backend."""
    from detector.infer.backends import make_runner

    s = run_settings(bundle, cfg)
    imgsz = int(cfg.tiling.get("tile_px") or bundle.imgsz)
    runner = make_runner(bundle, str(cfg.get("backend") or "auto"), imgsz,
                         int(cfg.batch or _batch(bundle)))
    return Predictor(bundle, s["candidate_conf"], s["nms"]["iou"], s["nms"]["max_det"],
                     s["nms"]["agnostic"], runner)
