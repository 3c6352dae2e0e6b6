"""Write scenes to disk (GeoTIFF + labels GeoJSON) and render quicklook PNGs."""

from __future__ import annotations

import multiprocessing as mp
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from omegaconf import DictConfig, OmegaConf

from detector.geometry import map_to_pixel
from detector.labels import write_geojson
from detector.progress import progress
from detector.quicklook import draw_polygons, save_png, to_rgb
from detector.raster import write_geotiff
from detector.synth.scene import SyntheticScene, generate_scene, resolve_config


def scene_seed(seed: int, index: int) -> int:
    """Seed of scene ``index`` in a run seeded ``seed`` (independent of the scene count)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def display_rgb(scene: SyntheticScene) -> np.ndarray:
    """(H, W, 3) uint8 RGB for viewing: 11-bit data stretched by its 0.5–99.5 percentiles."""
    bands = scene.image[:3]
    if bands.dtype != np.uint8:
        valid = np.ones(bands.shape[1:], bool) if scene.nodata is None else (
            bands[0] != scene.nodata)
        pixels = bands[:, valid].astype(np.float32) if valid.any() else bands.reshape(3, -1)
        lo = np.percentile(pixels, 0.5, axis=1)[:, None, None]
        hi = np.percentile(pixels, 99.5, axis=1)[:, None, None]
        bands = np.clip((bands - lo) * (255 / np.maximum(hi - lo, 1)), 0, 255).astype(np.uint8)
    return to_rgb(bands)


def densest_window(scene: SyntheticScene, side: int) -> tuple[int, int]:
    """Top-left pixel (col, row) of the ``side``-pixel window holding the most labels."""
    h, w = scene.image.shape[1:]
    side_w, side_h = min(side, w), min(side, h)
    if not scene.labels:
        return (w - side_w) // 2, (h - side_h) // 2
    centres = np.array([map_to_pixel(p.corners, scene.transform).mean(axis=0)
                        for p in scene.labels])
    cell = max(8, side // 16)
    grid = np.zeros((h // cell + 1, w // cell + 1), np.float32)
    np.add.at(grid, (np.clip(centres[:, 1] // cell, 0, grid.shape[0] - 1).astype(int),
                     np.clip(centres[:, 0] // cell, 0, grid.shape[1] - 1).astype(int)), 1)
    k = max(1, side // cell)
    density = cv2.boxFilter(grid, -1, (k, k), normalize=False, borderType=cv2.BORDER_CONSTANT)
    row, col = np.unravel_index(int(np.argmax(density)), density.shape)
    x = int(np.clip((col + 0.5) * cell - side_w / 2, 0, w - side_w))
    y = int(np.clip((row + 0.5) * cell - side_h / 2, 0, h - side_h))
    best_xy = (x, y)
    return best_xy


def render_quicklook(scene: SyntheticScene, path: str | Path, crop: int | None = 800,
                     labels: bool = True, zoom: float = 1.0) -> None:
    """Write a PNG of the scene (or its densest ``crop``-pixel window) with label outlines.

    Args:
        scene: the scene.
        path: PNG to write.
        crop: window side in pixels (None: whole scene).
        labels: draw label outlines in class colours.
        zoom: picture pixels per scene pixel (nearest-neighbour-free linear upscale).
    """
    rgb = display_rgb(scene)
    x0, y0 = (0, 0) if crop is None else densest_window(scene, crop)
    h, w = rgb.shape[:2]
    x1, y1 = (w, h) if crop is None else (min(w, x0 + crop), min(h, y0 + crop))
    view = rgb[y0:y1, x0:x1]
    if zoom != 1.0:
        view = cv2.resize(view, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_LINEAR)
    if labels:
        polys = [map_to_pixel(p.corners, scene.transform) for p in scene.labels]
        view = draw_polygons(view, polys, [p.cls for p in scene.labels], scale=zoom,
                             offset=(x0, y0), thickness=1)
    save_png(path, view)


def write_scenes(cfg: DictConfig) -> list[Path]:
    """Write ``cfg.n_scenes`` scenes to ``cfg.out``: ``scene_NNN.tif`` + ``.geojson`` (+ ``.png``).

    Scene ``i`` is seeded from ``(cfg.seed, i)``, so it does not depend on ``n_scenes`` nor on
    ``cfg.jobs`` (scenes written by that many worker processes).

    Returns:
        The GeoTIFF paths, in order.
    """
    cfg = resolve_config(cfg)
    out = Path(str(cfg.out))
    out.mkdir(parents=True, exist_ok=True)
    indices = range(int(cfg.n_scenes))
    jobs = max(1, int(cfg.get("jobs") or 1))
    if jobs == 1 or len(indices) < 2:
        return [write_one_scene(cfg, i) for i in progress(indices, desc="scenes", unit="scene")]
    plain = OmegaConf.to_container(cfg, resolve=True)
    with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as pool:
        return list(progress(pool.map(write_one_scene, [plain] * len(indices), indices),
                             total=len(indices), desc="scenes", unit="scene"))


def write_one_scene(cfg: DictConfig | dict, index: int) -> Path:
    """Generate scene ``index`` of a run and write its GeoTIFF, labels (and quicklook)."""
    cfg = resolve_config(cfg)
    out = Path(str(cfg.out))
    site_seed = None if cfg.get("site_seed") is None else int(cfg.site_seed)
    scene = generate_scene(cfg, scene_seed(int(cfg.seed), index), site_seed)
    tif = out / f"scene_{index:03d}.tif"
    write_geotiff(tif, scene.image, scene.transform, scene.crs, nodata=scene.nodata, tiled=True)
    write_geojson(tif.with_suffix(".geojson"), scene.labels, scene.crs)
    if cfg.render:
        crop = None if cfg.render_crop is None else int(cfg.render_crop)
        render_quicklook(scene, tif.with_suffix(".png"), crop=crop, zoom=float(cfg.render_zoom))
    return tif


def class_counts(labels_per_scene: list[list]) -> dict[str, int]:
    """Per-class label counts summed over scenes."""
    counts: Counter[str] = Counter()
    for labels in labels_per_scene:
        counts.update(p.cls for p in labels)
    return dict(counts)
