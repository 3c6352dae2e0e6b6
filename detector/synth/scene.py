"""Assemble one synthetic rail-yard scene: layout, drawing, sensor, georeferencing, labels."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Any

import cv2
import numpy as np
from affine import Affine
from omegaconf import DictConfig, OmegaConf
from rasterio.crs import CRS
from shapely.geometry import Polygon, box

from detector.errors import DetectorError
from detector.geometry import pixel_to_map
from detector.labels import LabelledPolygon
from detector.synth import appearance, negatives, sensor, terrain, tracks
from detector.synth.draw import Canvas, sample
from detector.synth.layout import CLASSES, Occupancy, place_vehicles, plan_yard
from detector.synth.vehicles import cast_vehicle_shadows, draw_vehicles

# Append new streams at the end: SeedSequence children depend on their index only, so the
# earlier streams (and the classic scenes) stay the same.
_STREAMS = ("yard", "vehicles", "terrain", "style", "draw", "sensor", "georef", "appearance",
            "negatives")
# Streams that belong to the place rather than the day: with a ``site_seed`` they are drawn
# from it, so scenes of one site on different dates share layout, ground and georeferencing.
SITE_STREAMS = ("yard", "terrain", "georef")
APPEARANCES = ("randomised", "classic")
# Bump when the same config and seed give different pixels or labels: synthetic dataset caches
# are keyed on it (detector.data.synthetic.synth_fingerprint).
GENERATOR_VERSION = "2"


@dataclass
class SyntheticScene:
    """One generated scene: pixels, georeferencing and ground-truth labels.

    Attributes:
        image: (C, H, W) uint8, or uint16 with 11-bit values when ``dtype`` is uint16.
        transform: pixel → map affine (north up).
        crs: projected (UTM) CRS of the map coordinates.
        nodata: nodata value, or None when the scene has no nodata margin.
        m_per_px: ground sampling distance.
        labels: one body rectangle per vehicle in map coordinates (full body, even when
            partly outside the image).
        body_mask: (H, W) bool, where car bodies were drawn.
    """

    image: np.ndarray
    transform: Affine
    crs: CRS
    nodata: int | None
    m_per_px: float
    labels: list[LabelledPolygon]
    body_mask: np.ndarray


def default_config() -> DictConfig:
    """The packaged ``conf/synth.yaml`` without its Hydra defaults list."""
    text = resources.files("detector.conf").joinpath("synth.yaml").read_text()
    cfg = OmegaConf.create(text)
    cfg.pop("defaults", None)
    return cfg


def resolve_config(cfg: DictConfig | dict | None) -> DictConfig:
    """Overlay ``cfg`` (full or partial) on the packaged defaults and check it."""
    merged = OmegaConf.merge(default_config(), OmegaConf.create(cfg or {}))
    validate(merged)
    return merged


def validate(cfg: DictConfig) -> None:
    """Raise a one-line :class:`DetectorError` for settings the generator cannot honour."""
    where = "synth config"
    if cfg.dtype not in ("uint8", "uint16"):
        raise DetectorError(f"{where}: dtype={cfg.dtype!r} is not supported; use uint8 or uint16")
    if not 0.05 <= float(cfg.m_per_px) <= 5:
        raise DetectorError(f"{where}: m_per_px={cfg.m_per_px} is out of range; use 0.3–1.0")
    if len(cfg.size) != 2 or min(int(s) for s in cfg.size) < 64:
        raise DetectorError(f"{where}: size={list(cfg.size)} is invalid; give [width, height] "
                            ">= 64 px, e.g. size=[2000,2000]")
    mix = {k: float(v) for k, v in cfg.class_mix.items()}
    if set(mix) - set(CLASSES) or min(mix.values(), default=0) < 0 or sum(mix.values()) <= 0:
        raise DetectorError(f"{where}: class_mix={mix} is invalid; give non-negative "
                            f"proportions for {list(CLASSES)}")
    if int(cfg.vehicles.min) < 0 or int(cfg.vehicles.max) < int(cfg.vehicles.min):
        raise DetectorError(f"{where}: vehicles.min/max must satisfy 0 <= min <= max")
    if int(cfg.supersample) < 1:
        raise DetectorError(f"{where}: supersample must be >= 1")
    if cfg.appearance not in APPEARANCES:
        raise DetectorError(f"{where}: appearance={cfg.appearance!r} is unknown; use one of "
                            f"{list(APPEARANCES)}")


def _footprint(rng: np.random.Generator, cfg: DictConfig, width: int, height: int
               ) -> np.ndarray:
    """Pixel corners of a rotated image footprint (data inside, nodata outside)."""
    angle = np.deg2rad(sample(rng, cfg.footprint.angle_deg)) * rng.choice([-1, 1])
    scale = sample(rng, cfg.footprint.scale)
    c, s = np.cos(angle), np.sin(angle)
    half = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * np.array([width, height]) * scale / 2
    rot = half @ np.array([[c, s], [-s, c]])
    return rot + np.array([width, height]) / 2


def stream_rngs(seed: int, site_seed: int | None = None) -> dict[str, np.random.Generator]:
    """One generator per named stream; the site streams come from ``site_seed`` when given."""
    day = dict(zip(_STREAMS, np.random.SeedSequence(int(seed)).spawn(len(_STREAMS)),
                   strict=True))
    if site_seed is not None:
        site = np.random.SeedSequence(int(site_seed)).spawn(len(_STREAMS))
        day.update({name: site[_STREAMS.index(name)] for name in SITE_STREAMS})
    return {name: np.random.default_rng(s) for name, s in day.items()}


def generate_scene(cfg: DictConfig | dict, seed: int, site_seed: int | None = None
                   ) -> SyntheticScene:
    """Generate one scene; the same ``cfg``, ``seed`` and ``site_seed`` give the same scene.

    Args:
        cfg: synth config (``conf/synth.yaml``); a partial dict is overlaid on the defaults.
        seed: scene seed (the day: traffic, light, sensor; and the site when ``site_seed``
            is None).
        site_seed: seed of the place (yard layout, ground, lots, georeferencing); scenes
            with one ``site_seed`` and different ``seed`` show one site on different days.
    """
    cfg = resolve_config(cfg)
    rngs = stream_rngs(seed, site_seed)
    sen = None
    if cfg.appearance == "randomised":  # this scene's palettes, ground colours and sensor
        cfg = cfg.copy()
        cfg.style = appearance.scene_style(cfg, rngs["appearance"])
        sen = appearance.sample_sensor(cfg.randomised, rngs["appearance"])
    m = float(cfg.m_per_px)
    m_draw = m * sen["scale"] if sen else m  # scale jitter: objects look bigger or smaller
    st = sensor.sample_style(cfg.style, rngs["style"])
    track_style = tracks.sample_track_style(rngs["style"], cfg)
    if sen:
        track_style = appearance.track_style(rngs["appearance"], cfg.randomised, track_style)
    clean, body_mask, vehicles = paint_scene(cfg, rngs, m_draw, st, track_style)
    image = sensor_image(cfg, rngs["sensor"], clean, st, sen)
    del clean
    return georeference(cfg, rngs["georef"], image, body_mask, vehicles, m, m_draw)


def paint_scene(cfg: DictConfig, rngs: dict[str, np.random.Generator], m_draw: float,
                st: dict[str, Any], track_style: dict[str, Any]
                ) -> tuple[np.ndarray, np.ndarray, list]:
    """Lay out and draw a scene as the ground would look (before the sensor), downsampled.

    Returns:
        (clean RGB float image (H, W, 3), body mask (H, W) of labelled vehicles, the
        labelled vehicles).
    """
    width, height = (int(s) for s in cfg.size)
    ss = int(cfg.supersample)
    extent = (width * m_draw, height * m_draw)
    canvas = Canvas(height * ss, width * ss, ss / m_draw)
    randomised = cfg.appearance == "randomised"
    yard = plan_yard(cfg.yard, rngs["yard"], extent)
    vehicles = place_vehicles(cfg, rngs["vehicles"], yard)
    coaches = (negatives.place_coaches(cfg.negatives, rngs["negatives"], yard)
               if cfg.negatives.enabled else [])

    rail = Occupancy(*extent)
    for t in yard.tracks + yard.connectors:
        rail.mark_line(t.pts, 7.0)
    rail.mark_poly(yard.band)
    occ = Occupancy(*extent)
    occ.grid[:] = rail.grid

    terrain_rng = rngs["terrain"]
    terrain.draw_ground(canvas, cfg, terrain_rng, extent)
    if randomised:
        appearance.ground_texture(canvas.img, canvas.k, rngs["appearance"], cfg.randomised)
    roads = terrain.draw_roads(canvas, cfg, terrain_rng, extent, occ, yard)
    tracks.draw_tracks(canvas, yard, rngs["draw"], track_style, extent)
    things = terrain.plan_things(cfg, terrain_rng, extent, occ, rail, yard, roads, canvas)
    if cfg.negatives.enabled:
        things += negatives.plan_negatives(cfg.negatives, cfg.style, rngs["negatives"], extent,
                                           occ, yard, canvas)
    sensor.add_texture(canvas.img, st["texture"], canvas.k, rngs["draw"])

    terrain.cast_things(canvas, things, st["shadow"])
    cast_vehicle_shadows(canvas, vehicles + coaches, st["shadow"])
    tracks.cast_catenary(canvas, yard, st["shadow"], track_style["mast_height"])
    sensor.apply_shadows(canvas.img, canvas.shadow, st["shadow_strength"], canvas.k)
    canvas.shadow = None  # free memory early

    body = np.zeros(canvas.shape, np.uint8)
    terrain.draw_things(canvas, things, st["sun"], rngs["draw"])
    draw_vehicles(canvas, vehicles + coaches, cfg.style, st["sun"], rngs["draw"], body)
    tracks.draw_catenary(canvas, yard, track_style["catenary"])

    size = (width, height)
    clean = cv2.resize(canvas.img, size, interpolation=cv2.INTER_AREA) if ss > 1 else canvas.img
    body_mask = (cv2.resize(body.astype(np.float32), size, interpolation=cv2.INTER_AREA) > 0.5
                 if ss > 1 else body.astype(bool))
    return clean, body_mask, vehicles


def sensor_image(cfg: DictConfig, rng: np.random.Generator, clean: np.ndarray,
                 st: dict[str, Any], sen: dict[str, Any] | None) -> np.ndarray:
    """The imaging chain: blur, noise, JPEG, an optional NIR band, quantisation (C, H, W)."""
    rgb = appearance.sensor_chain(clean, st, sen, rng) if sen else sensor.imaging(clean, st, rng)
    rgb8 = sensor.jpeg(np.clip(np.round(rgb), 0, 255).astype(np.uint8), st["jpeg"])
    bands = [rgb8.astype(np.float32)[..., i] for i in range(3)]
    if cfg.nir:
        bands.append(sensor.nir_band(clean, rng))
    return sensor.quantise(np.stack(bands), str(cfg.dtype), st, rng)


def georeference(cfg: DictConfig, rng: np.random.Generator, image: np.ndarray,
                 body_mask: np.ndarray, vehicles: list, m: float, m_draw: float
                 ) -> SyntheticScene:
    """Place the image on the map, cut the nodata footprint, and label what is visible."""
    height, width = image.shape[1:]
    easting = round(sample(rng, cfg.crs.easting))
    northing = round(sample(rng, cfg.crs.northing))
    transform = Affine(m, 0.0, float(easting), 0.0, -m, float(northing))
    crs = CRS.from_epsg(int(cfg.crs.epsg))
    frame = box(0, 0, width, height)
    nodata = None
    if cfg.nodata_margin:
        nodata = int(cfg.nodata)
        corners = _footprint(rng, cfg, width, height)
        valid = np.zeros((height, width), np.uint8)
        cv2.fillPoly(valid, [np.round((corners - 0.5) * 16).astype(np.int32)], 1,
                     cv2.LINE_8, 4)
        valid = valid.astype(bool)
        image[:, ~valid] = nodata
        data = image[:, valid]
        data[data == nodata] = nodata + 1  # valid pixels never read as nodata
        image[:, valid] = data
        body_mask &= valid
        frame = frame.intersection(Polygon(corners))
    labels = []
    for v in vehicles:
        pix = v.corners / m_draw
        if Polygon(pix).intersects(frame):
            labels.append(LabelledPolygon(pixel_to_map(pix, transform), v.cls, {"kind": v.kind}))
    return SyntheticScene(image, transform, crs, nodata, m, labels, body_mask)
