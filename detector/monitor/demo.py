"""The offline demo site: one synthetic yard on many dates, with a surge at the end.

Scenes share the site (``site_seed``: layout, ground, georeferencing) and differ by day
(traffic, light, sensor). Ordinary dates over several years carry light traffic; the last
dates bring a surge of wagons, most under tarps. Dates are written into
``TIFFTAG_DATETIME`` (file names carry none), so the demo reads them as it would real
scenes. Generated once and cached, like the inference demo scene.
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import shapely
from omegaconf import DictConfig, OmegaConf
from shapely.geometry import MultiPoint, Polygon, box

from detector.atomic import atomic_dir, write_text
from detector.geometry import map_to_pixel, pixel_to_map
from detector.infer.demo import cache_dir
from detector.labels import LabelledPolygon, write_geojson
from detector.progress import progress as progress_bar
from detector.raster import write_geotiff

NOT_WAGONS = ("locomotive",)


@dataclass(frozen=True)
class DemoDate:
    """One date of the demo: its day, scene seed, kind and generator overrides."""

    day: date
    seed: int
    kind: str  # ordinary | partial | surge
    overrides: dict[str, Any]


def season(day: date, seasons: DictConfig) -> str:
    """The season whose ``months`` hold the day's month."""
    for name, spec in seasons.items():
        if day.month in spec.months:
            return str(name)
    raise ValueError(f"month {day.month} is in no season of the demo config")


def plan_dates(demo: DictConfig) -> list[DemoDate]:
    """The demo's dates (sorted) with the generator settings of each."""
    from detector.synth import scene_seed

    rng = np.random.default_rng(int(demo.seed))
    end = date.fromisoformat(str(demo.end))
    n_surge, n_ordinary = int(demo.surge_dates), int(demo.ordinary_dates)
    first_surge = end - timedelta(days=int(demo.surge_days_apart) * (n_surge - 1))
    span = round(365.25 * float(demo.years))
    offsets = np.sort(rng.choice(np.arange(span - int(demo.quiet_days_before_surge)),
                                 n_ordinary, replace=False))
    ordinary = [first_surge - timedelta(days=span) + timedelta(days=int(d)) for d in offsets]
    partial = set(rng.choice(np.arange(int(demo.min_history), n_ordinary),
                             int(demo.partial_dates), replace=False).tolist())
    days = ordinary + [first_surge + timedelta(days=int(demo.surge_days_apart) * k)
                       for k in range(n_surge)]
    plan = []
    for i, day in enumerate(days):
        kind = "surge" if i >= n_ordinary else ("partial" if i in partial else "ordinary")
        traffic = demo.surge if kind == "surge" else demo.ordinary
        sensor = demo.sensors[int(rng.integers(len(demo.sensors)))]
        parts = [demo.scene, traffic, sensor, {"style": demo.seasons[season(day, demo.seasons)]
                                               .style}]
        if kind == "partial":
            parts.append(demo.partial)
        plain = [OmegaConf.to_container(p, resolve=True) if OmegaConf.is_config(p) else p
                 for p in parts]  # plain dicts: the demo block is in struct mode
        overrides = OmegaConf.to_container(OmegaConf.merge(*plain), resolve=True)
        plan.append(DemoDate(day, scene_seed(int(demo.seed), i), kind, overrides))
    return plan


def site_key(demo: DictConfig) -> str:
    """A short digest of the demo settings and the generator version (the cache folder's name)."""
    from detector.synth.scene import GENERATOR_VERSION

    text = OmegaConf.to_yaml(demo, resolve=True) + GENERATOR_VERSION
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def aoi_around(labels: list[LabelledPolygon], transform: Any, width: int, height: int,
               buffer_px: float) -> Polygon:
    """The station outline: the hull of every car seen on any date, buffered, in the scene."""
    centres = [map_to_pixel(p.corners, transform).mean(axis=0) for p in labels]
    hull = MultiPoint(centres).convex_hull.buffer(buffer_px, join_style="mitre")
    area = hull.intersection(box(0, 0, width, height))
    return shapely.oriented_envelope(area).intersection(box(0, 0, width, height))


def in_aoi(labels: list[LabelledPolygon], transform: Any, area: Polygon) -> list[str]:
    """Classes of the labels whose centre lies inside ``area`` (scene pixels)."""
    return [p.cls for p in labels
            if area.contains(shapely.Point(map_to_pixel(p.corners, transform).mean(axis=0)))]


def demo_site(demo: DictConfig, progress: bool = True) -> tuple[Path, Path]:
    """The cached demo site folder and its AOI GeoJSON, generating them on first use.

    The folder holds ``pass_NN.tif`` scenes (dates in ``TIFFTAG_DATETIME``), ``aoi.geojson``
    and ``truth.csv`` (the true wagon and covered_car totals inside the AOI per date).
    """
    folder = cache_dir() / f"monitor_site_{site_key(demo)}"
    aoi = folder / "aoi.geojson"
    if aoi.exists():
        return folder, aoi
    from detector.synth import generate_scene

    plan = plan_dates(demo)
    with atomic_dir(folder) as tmp:
        scenes = []
        dates = progress_bar(plan, desc="demo site", unit="date", enabled=progress)
        for i, item in enumerate(dates):
            scene = generate_scene(item.overrides, item.seed, site_seed=int(demo.site_seed))
            tif = tmp / f"pass_{i + 1:02d}.tif"
            write_geotiff(tif, scene.image, scene.transform, scene.crs, nodata=scene.nodata)
            with rasterio.open(tif, "r+") as dst:
                dst.update_tags(TIFFTAG_DATETIME=f"{item.day:%Y:%m:%d} 01:30:00")
            scenes.append((tif, scene.labels))
            # One site: every date shares the georeferencing and size.
            transform, crs, m_per_px = scene.transform, scene.crs, scene.m_per_px
            height, width = scene.image.shape[1:]
        area = aoi_around([p for _, labels in scenes for p in labels], transform, width,
                          height, float(demo.aoi_buffer_m) / m_per_px)
        ring = pixel_to_map(np.asarray(area.exterior.coords)[:-1], transform)
        write_geojson(tmp / "aoi.geojson", [LabelledPolygon(ring, "aoi")], crs)
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["date", "scene", "kind", "wagons", "covered_car"])
        for item, (tif, labels) in zip(plan, scenes, strict=True):
            classes = in_aoi(labels, transform, area)
            writer.writerow([item.day.isoformat(), tif.name, item.kind,
                             sum(c not in NOT_WAGONS for c in classes),
                             classes.count("covered_car")])
        write_text(tmp / "truth.csv", buffer.getvalue())
    return folder, aoi
