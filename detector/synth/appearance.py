"""Domain randomisation: every appearance parameter of a scene drawn from wide distributions.

``appearance: randomised`` (the default) replaces the fixed palettes of the ``classic`` look
with colours drawn per scene over the whole hue circle, ground and ballast of several texture
families and colours, rails from invisible to glaring, and a sensor chain with several blur,
noise and sharpening models, band misregistration, white balance, gamma and scale jitter.
The ``classic`` look stays available unchanged (``appearance=classic``).

All draws come from the scene's ``appearance`` stream, so the classic streams (and the
classic scenes) are untouched.
"""

from __future__ import annotations

import colorsys
from typing import Any

import cv2
import numpy as np
from omegaconf import DictConfig, OmegaConf

from detector.synth.draw import sample, smooth_noise

PALETTES = ("car_colors", "tank_colors", "loco_colors", "container_colors", "tarp_colors",
            "coach_colors")
TEXTURES = ("fractal", "cellular", "striped", "speckle", "weeds")


def hsv_color(rng: np.random.Generator, hue_deg: Any, saturation: Any, value: Any
              ) -> list[float]:
    """An RGB colour (0–255) from HSV ranges (hue in degrees, saturation and value 0–1)."""
    h = (sample(rng, hue_deg) % 360.0) / 360.0
    r, g, b = colorsys.hsv_to_rgb(h, sample(rng, saturation), sample(rng, value))
    return [255.0 * r, 255.0 * g, 255.0 * b]


def random_palettes(rng: np.random.Generator, rcfg: DictConfig) -> dict[str, dict[str, list]]:
    """Per-scene palettes of ``rcfg.palette_size`` colours each, hues over the whole circle."""
    out = {}
    for name in PALETTES:
        spec = rcfg.colors[name]
        out[name] = {f"c{i}": hsv_color(rng, [0, 360], spec.saturation, spec.value)
                     for i in range(int(rcfg.palette_size))}
    return out


def ground_colors(rng: np.random.Generator, rcfg: DictConfig) -> dict[str, list]:
    """Grass, soil and ballast colour ranges for one scene: grey to brown to reddish, dry or wet."""
    g = rcfg.ground
    wet = float(rng.uniform(*g.wet_darkening)) if rng.random() < g.wet_prob else 1.0

    def pair(hue: Any, sat: Any, val: Any) -> list[list[float]]:
        a = np.asarray(hsv_color(rng, hue, sat, val)) * wet
        b = np.clip(a * rng.uniform(0.8, 1.25, 3), 0, 255)
        return [a.tolist(), b.tolist()]

    return {
        "grass": pair(g.grass_hue, g.saturation, g.value),
        "soil": pair(g.soil_hue, g.saturation, g.value),
        "ballast": pair(g.soil_hue, g.ballast_saturation, g.ballast_value),
    }


def scene_style(cfg: DictConfig, rng: np.random.Generator) -> DictConfig:
    """``cfg.style`` with this scene's random palettes, ground colours and extra switches."""
    rcfg = cfg.randomised
    style = OmegaConf.to_container(cfg.style, resolve=True)
    style.update(random_palettes(rng, rcfg))
    style.update(ground_colors(rng, rcfg))
    style["randomised"] = OmegaConf.to_container(rcfg.vehicles, resolve=True)
    return OmegaConf.create(style)


def sample_sensor(rcfg: DictConfig, rng: np.random.Generator) -> dict[str, Any]:
    """The scene's sensor model: blur kernel, noise model, sharpening, misregistration, gamma."""
    s = rcfg.sensor
    return {
        "blur_kind": str(rng.choice(list(s.blur_kinds))),
        "blur": sample(rng, s.blur_px),
        "motion_angle": float(rng.uniform(0, 180)),
        "noise_kind": str(rng.choice(list(s.noise_kinds))),
        "noise": sample(rng, s.noise_sigma),
        "sharpen": sample(rng, s.sharpen) if rng.random() < s.sharpen_prob else 0.0,
        "shift_px": rng.uniform(-1, 1, (3, 2)) * sample(rng, s.misregistration_px),
        "white_balance": 1 + rng.uniform(-1, 1, 3) * float(s.white_balance),
        "gamma": sample(rng, s.gamma),
        "scale": sample(rng, s.scale_jitter),
    }


def blur_kernel(kind: str, size_px: float, angle_deg: float) -> np.ndarray | None:
    """A normalised blur kernel for ``motion`` or ``defocus``; None for ``gaussian``."""
    if kind == "gaussian" or size_px < 0.3:
        return None
    radius = max(1, int(np.ceil(size_px * 1.5)))
    k = np.zeros((2 * radius + 1, 2 * radius + 1), np.float32)
    c = (radius, radius)
    if kind == "motion":
        d = np.array([np.cos(np.deg2rad(angle_deg)), np.sin(np.deg2rad(angle_deg))]) * size_px * 1.5
        p0 = tuple(int(round(v)) for v in (c[0] - d[0], c[1] - d[1]))
        p1 = tuple(int(round(v)) for v in (c[0] + d[0], c[1] + d[1]))
        cv2.line(k, p0, p1, 1.0, 1, cv2.LINE_AA)
    else:  # defocus: a uniform disc
        cv2.circle(k, c, max(1, int(round(size_px * 1.5))), 1.0, -1, cv2.LINE_AA)
    return k / max(float(k.sum()), 1e-6)


def sensor_chain(img: np.ndarray, st: dict[str, Any], sen: dict[str, Any],
                 rng: np.random.Generator) -> np.ndarray:
    """The randomised imaging chain on an RGB float image (0–255) at output resolution."""
    out = img
    kernel = blur_kernel(sen["blur_kind"], sen["blur"], sen["motion_angle"])
    if kernel is None:
        out = cv2.GaussianBlur(out, (0, 0), max(sen["blur"], 0.3))
    else:
        out = cv2.filter2D(out, -1, kernel, borderType=cv2.BORDER_REFLECT)
    if sen["sharpen"] > 0:  # unsharp mask: the halos of over-sharpened products
        soft = cv2.GaussianBlur(out, (0, 0), 1.2)
        out = out + sen["sharpen"] * (out - soft)
    h, w = out.shape[:2]
    for band in range(3):  # pan-sharpening leaves bands slightly misregistered
        dx, dy = sen["shift_px"][band]
        m = np.float32([[1, 0, dx], [0, 1, dy]])
        out[..., band] = cv2.warpAffine(np.ascontiguousarray(out[..., band]), m, (w, h),
                                        flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    mean = out.mean(axis=(0, 1), keepdims=True)
    out = (out - mean) * st["contrast"] + mean
    out *= (st["brightness"] * sen["white_balance"]).astype(np.float32)  # own white balance
    out = out * (1 - st["haze"]) + (st["haze_color"] * st["haze"]).astype(np.float32)
    out = 255.0 * (np.clip(out, 0, 255) / 255.0) ** (1.0 / sen["gamma"])
    sigma = sen["noise"]
    if sen["noise_kind"] == "poisson":  # shot noise: larger in bright areas
        out = out + rng.normal(0, 1, out.shape).astype(np.float32) * sigma * np.sqrt(
            np.maximum(out, 1.0) / 128.0)
    elif sen["noise_kind"] == "banding":  # detector lines along one image axis
        lines = rng.normal(0, sigma, (h, 1, 3) if rng.random() < 0.5 else (1, w, 3))
        out = out + lines.astype(np.float32) + rng.normal(0, sigma / 2, out.shape).astype(
            np.float32)
    else:
        out = out + rng.normal(0, sigma, out.shape).astype(np.float32)
    return np.clip(out, 0, 255)


def ground_texture(img: np.ndarray, px_per_m: float, rng: np.random.Generator,
                   rcfg: DictConfig) -> None:
    """Multiply one or two texture families into the ground (in place, before tracks are drawn)."""
    h, w = img.shape[:2]
    tcfg = rcfg.texture
    n = 1 + int(rng.random() < tcfg.second_family_prob)
    families = list(tcfg.families)
    for family in rng.choice(families, size=min(n, len(families)), replace=False):
        strength = sample(rng, tcfg.strength)
        if family == "fractal":
            field = sum(smooth_noise(rng, (h, w), cell=c * px_per_m) / (i + 1)
                        for i, c in enumerate((60.0, 20.0, 6.0, 2.0)))
            img *= (1 + strength * 0.6 * field)[..., None]
        elif family == "cellular":
            img *= (1 + strength * _cells(rng, (h, w), sample(rng, tcfg.cell_m) * px_per_m)
                    )[..., None]
        elif family == "striped":
            img *= (1 + strength * _stripes(rng, (h, w), sample(rng, tcfg.stripe_m) * px_per_m)
                    )[..., None]
        elif family == "speckle":
            dots = (rng.random((h, w)) < 0.02).astype(np.float32)
            dots = cv2.GaussianBlur(dots, (0, 0), max(0.7, 0.4 * px_per_m))
            img *= (1 - strength * 3.0 * dots / max(float(dots.max()), 1e-6) * 0.5)[..., None]
        else:  # weeds: green patches blended over the ground
            mask = np.clip(smooth_noise(rng, (h, w), cell=8 * px_per_m) - 0.6, 0, 1)
            weed = np.asarray(hsv_color(rng, [70, 130], [0.3, 0.6], [0.25, 0.5]), np.float32)
            a = (mask * strength * 2.5)[..., None]
            img[:] = img * (1 - a) + weed * a


def _cells(rng: np.random.Generator, shape: tuple[int, int], cell_px: float) -> np.ndarray:
    """Voronoi-like patches with one random level each, zero mean (cellular texture)."""
    h, w = shape
    gh, gw = max(2, int(h / cell_px) + 1), max(2, int(w / cell_px) + 1)
    levels = rng.normal(0, 1, (gh, gw)).astype(np.float32)
    big = cv2.resize(levels, (w, h), interpolation=cv2.INTER_NEAREST)
    warp = smooth_noise(rng, (h, w), cell=cell_px, channels=2) * cell_px * 0.35
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(big, xs + warp[..., 0], ys + warp[..., 1], cv2.INTER_NEAREST,
                     borderMode=cv2.BORDER_REFLECT)


def _stripes(rng: np.random.Generator, shape: tuple[int, int], period_px: float) -> np.ndarray:
    """Parallel stripes at a random angle (ploughed or mown fields)."""
    h, w = shape
    a = rng.uniform(0, np.pi)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    phase = (xs * np.cos(a) + ys * np.sin(a)) * (2 * np.pi / max(period_px, 2.0))
    return np.sin(phase).astype(np.float32)


def track_style(rng: np.random.Generator, rcfg: DictConfig, base: dict[str, Any]
                ) -> dict[str, Any]:
    """Rails from barely visible to bright, sleepers present or not, gauge varied."""
    t = rcfg.tracks
    out = dict(base)
    look = rng.choice(["dark", "bright", "faint"], p=list(t.rail_look_p))
    bed = np.asarray(out["bed"], float)
    if look == "bright":
        out["rail"] = np.full(3, rng.uniform(170, 240))
    elif look == "faint":
        out["rail"] = bed * rng.uniform(0.85, 1.1)
    out["sleepers"] = bool(rng.random() < t.sleeper_prob)
    out["gauge"] = sample(rng, t.gauge_m)
    out["bed_width"] = sample(rng, t.bed_width_m)
    out["bed"] = bed * rng.uniform(0.7, 1.2)
    return out
