"""One scene end to end: plan tiles, stream them through the model, merge, count, write."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import shapely
from omegaconf import DictConfig, OmegaConf
from shapely.geometry import box

from detector import calibration
from detector.atomic import OUTPUT_ERRNOS, atomic_files
from detector.bundle import ModelCard
from detector.errors import DetectorError, OutputError
from detector.geometry import pixel_to_map
from detector.infer import aoi as aoi_mod
from detector.infer import reuse
from detector.infer.counting import summarize_counts
from detector.infer.merge import merge, owned
from detector.infer.model import Bundle, Predictor, tile_sizes
from detector.infer.outputs import output_paths, read_detections, write_counts, write_detections
from detector.infer.reader import PrefetchReader, Stretch, batches
from detector.infer.results import Detection, SceneResult
from detector.infer.tiling import Tile, tile_grid
from detector.progress import progress as progress_bar
from detector.raster import (
    GroundResolution,
    band_map_hint,
    check_bands,
    check_resolution,
    open_scene,
    scene_resolution,
    scene_stretch,
)
from detector.remote import Scene, SceneRef
from detector.shift import FeatureLog, alarm_fields, shift_fields, tapped, tile_features

log = logging.getLogger(__name__)


@dataclass
class Plan:
    """How a scene is read: resolution, band stretch, tile grid, optional AOI (pixels).

    Tile sizes, overlaps and margins are source pixels along columns (x) and rows (y).
    """

    resolution: GroundResolution
    stretch: Stretch
    tiles: list[Tile]
    tile_size: int
    overlap: int
    margin: tuple[float, float]  # px a tile's core grows by when deciding ownership
    area: shapely.Geometry | None
    tile_size_y: int | None = None
    overlap_y: int | None = None
    clip: tuple[int, int, int, int] | None = None  # pixels read: AOI bounds + overlap

    @property
    def m_per_px(self) -> float:
        """The scene's metres per pixel (side of a square pixel of the same ground area)."""
        return self.resolution.mean


@dataclass
class Candidates:
    """Merged candidates of a scene in source pixels."""

    corners: np.ndarray  # (N, 4, 2)
    scores: np.ndarray
    cls: np.ndarray  # class ids
    tile: np.ndarray  # tile index
    tiles_read: int
    valid_px: float = 0.0  # source pixels holding data (inside the AOI)

    def subset(self, keep: np.ndarray) -> Candidates:
        """The candidates selected by index or mask ``keep``, same tallies."""
        return Candidates(self.corners[keep], self.scores[keep], self.cls[keep],
                          self.tile[keep], self.tiles_read, self.valid_px)


def check_tiling(cfg: DictConfig, card: ModelCard) -> None:
    """Check the tiling config against the model before any scene is read.

    A tile spans ``tiling.tile_px`` × the model's m/px on the ground whatever the scene, so
    an overlap of more than half of that can never work.

    Raises:
        DetectorError: one line naming ``tiling.overlap_m`` and ``tiling.tile_px``.
    """
    imgsz = int(cfg.tiling.get("tile_px") or card.imgsz)
    ground = imgsz * card.m_per_px
    if 2 * float(cfg.tiling.overlap_m) > ground:
        raise DetectorError(
            f"tiling.overlap_m={cfg.tiling.overlap_m} is more than half a tile ({ground:g} m = "
            f"{imgsz} px at the model's {card.m_per_px:g} m/px); lower it or raise "
            "tiling.tile_px")


def plan_scene(src: rasterio.DatasetReader, path: Scene, card: ModelCard, cfg: DictConfig
               ) -> Plan:
    """Resolution, stretch and tile grid for one open scene (no pixel data decoded yet).

    Each image axis is read at the model's m/px (tiles cover the same ground along both),
    from the scene's ground resolution (:func:`detector.raster.ground_resolution`) or
    ``m_per_px=``.

    Raises:
        DetectorError: unknown or unusable resolution (:func:`check_resolution`), a band map
            the scene or model cannot take, an overlap over half a tile, or a bad AOI.
    """
    res = (GroundResolution.square(float(cfg.m_per_px)) if cfg.get("m_per_px")
           else scene_resolution(src))
    if res is None:
        raise DetectorError(f"{path}: resolution unknown (no CRS); pass m_per_px=<metres per "
                            "pixel> or give a georeferenced GeoTIFF")
    if src.crs is None:
        log.warning("%s: no CRS; outputs are in pixel coordinates", path)
    check_resolution(res, card.m_per_px, path)
    norm = dict(card.normalization)
    if cfg.get("bands"):
        norm["bands"] = list(cfg.bands)
    bands = list(norm["bands"])
    check_bands(src, bands, path)
    if len(bands) not in (1, 3):
        raise DetectorError(f"{path}: the model takes 3 bands (or 1 read as grey) but "
                            f"bands={bands}; set {band_map_hint(src.count)}")
    imgsz = int(cfg.tiling.get("tile_px") or card.imgsz)
    ground = imgsz * card.m_per_px  # metres a tile spans along each axis
    size_x, size_y = (max(1, round(ground / m)) for m in (res.x, res.y))
    overlap_m = float(cfg.tiling.overlap_m)
    over_x, over_y = (math.ceil(overlap_m / m) for m in (res.x, res.y))
    if over_x * 2 > size_x or over_y * 2 > size_y:
        raise DetectorError(
            f"{path}: tiling.overlap_m={cfg.tiling.overlap_m} is more than half a tile "
            f"({ground:.0f} m); lower it or raise tiling.tile_px")
    area = (aoi_mod.load_aoi(cfg.aoi, src.crs, src.transform, src.width, src.height)
            if cfg.get("aoi") else None)
    tiles = tile_grid(src.width, src.height, (size_x, size_y), (over_x, over_y))
    clip = None
    if area is not None:
        tiles = [t for t in tiles
                 if area.intersects(box(t.x0, t.y0, t.x0 + t.size, t.y0 + t.height))]
        # Only pixels within the overlap of the AOI are read: a car counted (centre
        # inside) lies whole within it; beyond, pixels are nodata and a COG's blocks unread.
        x0, y0, x1, y1 = area.bounds
        clip = (math.floor(x0) - over_x, math.floor(y0) - over_y,
                math.ceil(x1) + over_x, math.ceil(y1) + over_y)
    low, high = scene_stretch(src, norm)
    stretch = Stretch(bands, low, high, int(norm.get("fill", 114)))
    margin_m = float(cfg.tiling.get("core_margin_m", 0.0))
    return Plan(res, stretch, tiles, size_x, over_x, (margin_m / res.x, margin_m / res.y),
                area, size_y, over_y, clip)


def detect_tiles(path: Scene, plan: Plan, predictor: Any, imgsz: int, batch: int,
                 prefetch: int = 16, progress: bool = True, net_size: int | None = None,
                 overview: Any = None) -> Candidates:
    """Stream tiles through ``predictor``; keep what each tile owns (source pixels).

    Tiles are read at ``imgsz`` model pixels and padded to ``net_size`` (see
    :func:`detector.infer.model.tile_sizes`), only inside ``plan.clip`` when set; the valid
    source pixels of the tiles' cores are summed into ``valid_px``. ``overview`` (a
    quicklook :class:`detector.infer.quicklook.Overview`) gets every tile.
    """
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    read, valid_px = 0, 0.0
    bar = progress_bar(total=len(plan.tiles), desc=path.name, unit="tile", enabled=progress,
                       leave=False)
    with PrefetchReader(path, plan.tiles, imgsz, plan.stretch, depth=prefetch,
                        net_size=net_size, area=plan.area, overview=overview,
                        clip=plan.clip) as reader:
        for group, seen in batches(iter(reader), batch):
            if group:
                outputs = predictor(np.stack([item.image for item in group]))
                for item, det in zip(group, outputs, strict=True):
                    offset = np.array([item.tile.x0, item.tile.y0], dtype=float)
                    scale = np.array(item.tile.shape, dtype=float) / imgsz
                    px = det.corners * scale + offset
                    keep = owned(px, item.tile, plan.margin)
                    parts.append((px[keep], det.scores[keep], det.cls[keep],
                                  np.full(int(keep.sum()), item.index)))
                    valid_px += item.valid_px
                read += len(group)
            bar.update(seen)
    bar.close()
    if not parts:
        return Candidates(np.zeros((0, 4, 2)), np.zeros(0), np.zeros(0, int), np.zeros(0, int),
                          read, valid_px)
    return Candidates(*(np.concatenate(a) for a in zip(*parts, strict=True)), read, valid_px)


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


def scene_counts(path: Scene, detections: list[Detection], bundle: Bundle, plan: Plan,
                 cfg: DictConfig, seconds: float, src: rasterio.DatasetReader,
                 backend: str = "torch", valid_px: float | None = None,
                 precision: str = "fp32") -> dict[str, Any]:
    """The counts JSON dict (docs/design.md, counts JSON) with the run's settings.

    ``backend`` and ``precision`` are the ones that actually ran (``auto`` resolved);
    ``valid_px`` the source pixels holding data inside the AOI (default: all of the AOI or
    scene), which ``area_km2`` measures. ``scene`` is the path, or the URL without query
    string; a STAC asset adds its item's fields under ``stac``.
    """
    if valid_px is None:
        valid_px = plan.area.area if plan.area is not None else src.width * src.height
    card = bundle.card
    per_class, wagons = summarize_counts(
        bundle.classes, [d.cls for d in detections], np.array([d.score for d in detections]),
        np.array([d.p for d in detections]), card.operating_threshold,
        card.recall_at_candidate_conf, tuple(card.not_wagons),
        recall_evidence=card.recall_counts, dispersion=card.dispersion)
    # Imaged area: pixels holding data (inside the AOI), each of its ground area.
    return {
        "scene": str(path),
        "model": {"path": str(bundle.weights), "sha256": bundle.sha256},
        "m_per_px": round(plan.m_per_px, 4),
        "classes": per_class,
        "wagons": wagons,
        "area_km2": round(valid_px * plan.resolution.pixel_area / 1e6, 6),
        "seconds": round(seconds, 2),
        "crs": src.crs.to_string() if src.crs else None,
        "aoi": str(cfg.aoi) if cfg.get("aoi") else None,
        "settings": {**run_settings(bundle, cfg), "backend": backend, "precision": precision},
        "tiles": len(plan.tiles),
        "n_candidates": len(detections),
        "backend": backend,
        "precision": precision,
        **({"stac": dict(path.meta)} if isinstance(path, SceneRef) and path.meta else {}),
    }


def skipped_result(path: Scene, paths: dict[str, Path]) -> SceneResult:
    """Result of a scene whose outputs exist already (read back from disk)."""
    import json

    counts = json.loads(paths["counts"].read_text())
    detections = read_detections(paths["geojson"]) if paths["geojson"].exists() else []
    return SceneResult(path, True, None, detections, counts,
                       {k: v for k, v in paths.items() if k != "error" and v.exists()},
                       skipped=True)


def scene_inputs(path: Scene, bundle: Bundle, cfg: DictConfig) -> dict[str, Any]:
    """What this run counts ``path`` from (:mod:`detector.infer.reuse`).

    The precision is the one ``auto`` resolves to, so that installing NNCF (INT8) recounts
    finished scenes rather than mixing FP32 and INT8 counts in one output folder.
    """
    from detector.infer.backends import resolve_backend, resolve_precision

    backend = resolve_backend(str(cfg.get("backend") or "auto"), bundle.device)
    settings = {**run_settings(bundle, cfg), "m_per_px": cfg.get("m_per_px"),
                "precision": resolve_precision(cfg.get("precision"), backend)}
    return reuse.run_inputs(path, bundle.sha256, bundle.card, cfg.get("aoi"), settings)


def reused_result(path: Scene, paths: dict[str, Path], inputs: dict[str, Any], out: Path
                  ) -> SceneResult | None:
    """The finished scene in ``out`` when it was made from ``inputs``, else None (after
    removing its outputs and saying in one line why it is counted again)."""
    if not paths["counts"].exists():
        return None
    reason = reuse.stale_reason(paths["counts"], inputs)
    if reason is None:
        log.info("%s: reusing its finished outputs in %s (same scene file, model, AOI and "
                 "settings; overwrite=true to redo)", path.name, out)
        return skipped_result(path, paths)
    log.info("%s: counting again, not reusing %s: %s", path.name, paths["counts"], reason)
    for key in ("counts", "geojson", "quicklook"):  # the done marker first
        paths[key].unlink(missing_ok=True)
    return None


@contextmanager
def output_errors(out: Path) -> Iterator[None]:
    """Turn a write that the output folder refuses (full, read-only) into one line that
    stops the run (:class:`detector.errors.OutputError`)."""
    try:
        yield
    except OSError as err:
        if err.errno not in OUTPUT_ERRNOS:
            raise
        raise OutputError(f"out={out}: cannot write the outputs ({err.strerror}); free space "
                          "there or choose another out=") from err


def process_scene(path: Scene, bundle: Bundle, predictor: Any, cfg: DictConfig,
                  name: str | None = None) -> SceneResult:
    """Run inference on one scene and write its outputs (``<out>/<name>.*``, ``name``
    defaulting to the file stem; see :func:`detector.infer.outputs.output_paths`).

    A finished scene is reused only when made from the same inputs (:func:`reused_result`);
    its files are written to temporary names and renamed only when all succeeded.

    Raises:
        DetectorError: a problem with this scene (its own one-line reason).
        OutputError: the output folder cannot take the files.
    """
    out = Path(cfg.out)
    paths = output_paths(out, name or path.stem)
    inputs = scene_inputs(path, bundle, cfg)
    if not cfg.overwrite and (done := reused_result(path, paths, inputs, out)) is not None:
        return done
    start = time.perf_counter()
    with open_scene(path) as src:
        plan = plan_scene(src, path, bundle.card, cfg)
        imgsz, net_size = tile_sizes(bundle, cfg.tiling.get("tile_px"))
        # Shift alarm: pooled early-backbone features of every tile, from the same forward
        # pass (an exported graph's second output, or a hook on the torch network).
        overview = None
        if cfg.quicklook:
            from detector.infer.quicklook import Overview

            overview = Overview(src.width, src.height, int(cfg.quicklook_max_side),
                                plan.stretch.fill)
        with scene_features(bundle, predictor) as feats:
            cands = detect_tiles(path, plan, predictor, imgsz, int(cfg.batch or _batch(bundle)),
                                 int(cfg.prefetch), bool(cfg.progress), net_size, overview)
        if cands.tiles_read == 0:
            raise DetectorError(f"{path}: every pixel is nodata"
                                f"{' inside the AOI' if plan.area is not None else ''}; "
                                "nothing to detect (check the scene's nodata value)")
        m = cfg.merge
        keep = merge(cands.corners, cands.scores, cands.tile, m.method,
                     threshold=float(m.threshold), metric=str(m.metric),
                     cross_tile_only=bool(m.cross_tile_only))
        cands = cands.subset(keep)
        cands = cands.subset(aoi_mod.inside(plan.area, cands.corners.mean(axis=1)))
        detections = build_detections(cands, plan, bundle.card, bundle.classes, src.transform,
                                      src.crs is not None)
        counted = [d for d in detections if d.score >= bundle.card.threshold(d.cls)]
        counts = scene_counts(path, detections, bundle, plan, cfg, 0.0, src,
                              str(getattr(predictor, "backend", "custom")), cands.valid_px,
                              str(getattr(predictor, "precision", "fp32")))
        counts.update(shift_fields(bundle.card.shift, feats.array()))
        # The signals as calibrated: candidates at the card's candidate threshold (a lower
        # conf= would add faint candidates and density that are not a shift).
        signalled = [d for d in detections if d.score >= bundle.card.candidate_conf]
        counts.update(alarm_fields((bundle.card.shift or {}).get("alarm"), counts["shift"],
                                   np.array([d.p for d in signalled]),
                                   np.array([d.score >= bundle.card.threshold(d.cls)
                                             for d in signalled], bool), counts["area_km2"]))
        counts["inputs"] = inputs
        kinds = ["geojson", "counts"] + (["quicklook"] if cfg.quicklook else [])
        outputs = {k: paths[k] for k in kinds}
        with output_errors(out), atomic_files(outputs, last="counts") as tmp:
            write_detections(tmp["geojson"], counted, src.crs)
            if cfg.quicklook:
                from detector.infer.quicklook import render_quicklook

                render_quicklook(tmp["quicklook"], overview, src, plan.stretch,
                                 [d.corners_px for d in counted], [d.cls for d in counted],
                                 counts, bundle.classes,
                                 float(cfg.quicklook_inset_m) / plan.m_per_px, plan.area)
            counts["seconds"] = round(time.perf_counter() - start, 2)
            write_counts(tmp["counts"], counts)  # renamed last: it marks the scene as done
    return SceneResult(path, True, None, detections, counts, outputs, features=feats)


@contextmanager
def scene_features(bundle: Bundle, predictor: Any) -> Iterator[FeatureLog]:
    """The shift features of the tiles ``predictor`` runs inside the block.

    An exported runner hands them over from its graph's second output; the torch network
    gets a forward hook; another runner (a stand-in) without a loaded network records none,
    and one with a network runs its first layers for them (:func:`detector.shift.tapped`).
    """
    runner = getattr(predictor, "runner", None)
    layer = getattr(runner, "feature_layer", None)
    if runner is not None and hasattr(runner, "sink") and layer is not None:
        feats = FeatureLog(int(layer))
        runner.sink = feats.parts.append
        try:
            yield feats
        finally:
            runner.sink = None
        return
    net = bundle.net  # loaded by the torch runner; not loaded here for a stand-in
    with tile_features(net, (bundle.card.shift or {}).get("layer")) as feats, \
            tapped(predictor, net, feats.layer if bundle.card.shift else None):
        yield feats


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
        "precision": str(cfg.get("precision") or "auto"),  # as asked; counts JSON: as run
    }


def make_predictor(bundle: Bundle, cfg: DictConfig) -> Predictor:
    """The batched predictor for ``bundle`` with the run's thresholds and backend."""
    from detector.infer.backends import make_runner

    s = run_settings(bundle, cfg)
    _, net_size = tile_sizes(bundle, cfg.tiling.get("tile_px"))
    runner = make_runner(bundle, str(cfg.get("backend") or "auto"), net_size,
                         int(cfg.batch or _batch(bundle)), str(cfg.get("precision") or "auto"))
    return Predictor(bundle, s["candidate_conf"], s["nms"]["iou"], s["nms"]["max_det"],
                     s["nms"]["agnostic"], runner)
