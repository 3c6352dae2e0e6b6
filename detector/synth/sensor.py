"""Illumination and the imaging chain: per-scene style, shadows, blur, haze, colour cast,
noise, JPEG-like compression, 11-bit sensor values and a near-infrared band.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from detector.synth.draw import sample, sample_int, smooth_noise

SHADOW_TINT = np.array([1.0, 0.96, 0.86], np.float32)  # skylight makes shadows bluish
MAX_11BIT = 2047


def sample_style(style: Any, rng: np.random.Generator) -> dict[str, Any]:
    """Draw one scene's look from the ``style`` config ranges."""
    az, el = sample(rng, style.sun_azimuth_deg), sample(rng, style.sun_elevation_deg)
    azr = np.deg2rad(az)
    towards_sun = np.array([np.sin(azr), -np.cos(azr)])
    lo, hi = (np.asarray(c, float) for c in style.haze_color)
    quality = sample_int(rng, style.jpeg_quality)
    return {
        "sun_azimuth": az,
        "sun_elevation": el,
        "sun": towards_sun,
        "shadow": -towards_sun / np.tan(np.deg2rad(el)),
        "shadow_strength": sample(rng, style.shadow_strength),
        "haze": sample(rng, style.haze),
        "haze_color": lo + (hi - lo) * rng.uniform(0, 1),
        "blur": sample(rng, style.blur_sigma_px),
        "noise": sample(rng, style.noise_sigma),
        "gains": 1 + rng.uniform(-1, 1, 3) * float(style.color_cast),
        "brightness": sample(rng, style.brightness),
        "contrast": sample(rng, style.contrast),
        "jpeg": quality if rng.random() < style.jpeg_prob else None,
        "texture": sample(rng, style.texture),
        "dn_gain": sample(rng, style.dn_gain),
        "dn_offset": sample(rng, style.dn_offset),
    }


def add_texture(img: np.ndarray, strength: float, px_per_m: float,
                rng: np.random.Generator) -> None:
    """Multiply in grain (gravel, grass) and blotches (wear, moisture), in place."""
    h, w = img.shape[:2]
    grain = rng.standard_normal((h, w), dtype=np.float32)
    grain = cv2.GaussianBlur(grain, (0, 0), max(0.6, 0.15 * px_per_m))
    blotch = smooth_noise(rng, (h, w), cell=max(4.0, 3 * px_per_m))
    factor = 1 + strength * (1.6 * grain + 0.35 * blotch)
    img *= factor[..., None]


def apply_shadows(img: np.ndarray, layer: np.ndarray, strength: float, px_per_m: float) -> None:
    """Darken ``img`` in place where the shadow layer is set (soft-edged, bluish)."""
    soft = cv2.GaussianBlur(layer, (0, 0), max(0.5, 0.12 * px_per_m)).astype(np.float32)
    soft *= strength / 255.0
    img *= 1 - soft[..., None] * SHADOW_TINT


def imaging(img: np.ndarray, st: dict[str, Any], rng: np.random.Generator) -> np.ndarray:
    """Blur, colour cast, brightness/contrast, haze and noise on an RGB float image (0–255)."""
    out = cv2.GaussianBlur(img, (0, 0), st["blur"]) if st["blur"] > 0 else img.copy()
    mean = out.mean(axis=(0, 1), keepdims=True)
    out = (out - mean) * st["contrast"] + mean
    out *= (st["gains"] * st["brightness"]).astype(np.float32)
    out = out * (1 - st["haze"]) + (st["haze_color"] * st["haze"]).astype(np.float32)
    out += rng.normal(0, st["noise"], out.shape).astype(np.float32)
    return np.clip(out, 0, 255)


def jpeg(img8: np.ndarray, quality: int | None) -> np.ndarray:
    """JPEG round trip of an RGB uint8 image (block artefacts, chroma smearing)."""
    if quality is None:
        return img8
    ok, buf = cv2.imencode(".jpg", img8[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        return img8
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]


def nir_band(clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A near-infrared band (H, W) from clean RGB: vegetation bright, water/asphalt dark."""
    r, g, b = clean[..., 0], clean[..., 1], clean[..., 2]
    veg = np.clip((g - r) / 25.0 + (g - b) / 40.0, 0, 1)
    nir = 0.55 * (r + g + b) / 3 + 0.15 * r + 110 * veg
    return np.clip(nir + rng.normal(0, 2.0, nir.shape), 0, 255).astype(np.float32)


def quantise(bands: np.ndarray, dtype: str, st: dict[str, Any],
             rng: np.random.Generator) -> np.ndarray:
    """(C, H, W) float 0–255 → uint8, or uint16 with 11-bit values (gain, dark offset, noise)."""
    if dtype == "uint8":
        return np.clip(np.round(bands), 0, 255).astype(np.uint8)
    dn = bands * (st["dn_gain"] / 255.0) + st["dn_offset"]
    dn += rng.normal(0, 1.5, dn.shape)
    return np.clip(np.round(dn), 0, MAX_11BIT).astype(np.uint16)
