"""Draw the rail part of a scene: yard ground, ballast, sleepers, rails, catenary."""

from __future__ import annotations

from typing import Any

import numpy as np

from detector.synth.draw import Canvas, sample
from detector.synth.layout import Track, Yard

GAUGE_M = 1.435
SLEEPER_M = 0.6


def _clip(pts: np.ndarray, extent: tuple[float, float], pad: float = 10.0) -> np.ndarray:
    """The run of polyline points near the scene (keeps drawing work proportional to view)."""
    w, h = extent
    inside = ((pts[:, 0] > -pad) & (pts[:, 0] < w + pad)
              & (pts[:, 1] > -pad) & (pts[:, 1] < h + pad))
    if not inside.any():
        return pts[:0]
    idx = np.flatnonzero(inside)
    return pts[max(idx[0] - 1, 0): idx[-1] + 2]


def _resample(pts: np.ndarray, step: float) -> tuple[np.ndarray, np.ndarray]:
    """Points every ``step`` metres along a polyline and unit tangents there."""
    seg = np.hypot(*np.diff(pts, axis=0).T)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    if s[-1] <= step:
        return pts[:0], pts[:0]
    q = np.arange(step / 2, s[-1], step)
    xy = np.stack([np.interp(q, s, pts[:, 0]), np.interp(q, s, pts[:, 1])], 1)
    ahead = np.stack([np.interp(q + 0.5, s, pts[:, 0]), np.interp(q + 0.5, s, pts[:, 1])], 1)
    back = np.stack([np.interp(q - 0.5, s, pts[:, 0]), np.interp(q - 0.5, s, pts[:, 1])], 1)
    t = ahead - back
    t /= np.maximum(np.hypot(t[:, 0], t[:, 1]), 1e-9)[:, None]
    return xy, t


def _offset(pts: np.ndarray, d: float) -> np.ndarray:
    xy, t = _resample(pts, 2.0)
    if not len(xy):
        return xy
    return xy + d * np.stack([-t[:, 1], t[:, 0]], 1)


def draw_tracks(canvas: Canvas, yard: Yard, rng: np.random.Generator, style: dict[str, Any],
                extent: tuple[float, float]) -> None:
    """Draw the yard ground, then every track's ballast, sleepers and rails.

    Args:
        canvas: target canvas.
        yard: the planned yard.
        rng: generator.
        style: this scene's drawn colours (``ballast``, ``yard_ground``, ``sleeper``, ``rail``).
        extent: scene (width, height) in metres.
    """
    canvas.poly(yard.band, style["yard_ground"])
    tracks: list[Track] = yard.tracks + yard.connectors
    clipped = [_clip(t.pts, extent) for t in tracks]
    clipped = [c for c in clipped if len(c) >= 2]
    for pts in clipped:  # ballast beds, rust-stained and varied per track
        canvas.line(pts, np.asarray(style["bed"]) * rng.uniform(0.85, 1.1),
                    style.get("bed_width", 3.2))
    gauge = style.get("gauge", GAUGE_M)
    for pts in clipped if style.get("sleepers", True) else []:
        xy, t = _resample(pts, SLEEPER_M)
        if not len(xy):
            continue
        n = np.stack([-t[:, 1], t[:, 0]], 1) * 1.3 * (gauge / GAUGE_M)
        canvas.lines(np.stack([xy - n, xy + n], 1), style["sleeper"], 0.22)
    for pts in clipped:
        for side in (-1, 1):
            rail = _offset(pts, side * gauge / 2)
            if len(rail) >= 2:
                canvas.line(rail, style["rail"], 0.2)
    for track in yard.tracks:  # buffer stops at siding ends inside the scene
        for end in (track.pts[0], track.pts[-1]):
            if 0 < end[0] < extent[0] and 0 < end[1] < extent[1]:
                canvas.circle(end, 1.0, (150, 60, 50))


def cast_catenary(canvas: Canvas, yard: Yard, shadow: np.ndarray, height: float) -> None:
    """Cast the long thin shadows of catenary masts and their cross-spans."""
    for a, b in yard.masts:
        for base in (a, b):
            canvas.line(np.stack([base, base + shadow * height]), 255, 0.45,
                        target=canvas.shadow)
        off = shadow * (height - 1.0)
        canvas.line(np.stack([a + off, b + off]), 255, 0.25, target=canvas.shadow)


def draw_catenary(canvas: Canvas, yard: Yard, color: Any) -> None:
    """Draw masts and cross-span beams seen from above (thin, light)."""
    for a, b in yard.masts:
        canvas.line(np.stack([a, b]), color, 0.2)
        for base in (a, b):
            canvas.circle(base, 0.4, np.asarray(color) * 0.8)


def sample_track_style(rng: np.random.Generator, cfg: Any) -> dict[str, Any]:
    """Per-scene colours of ballast, yard ground, sleepers and rails."""
    lo, hi = (np.asarray(c, float) for c in cfg.style.ballast)
    ballast = lo + (hi - lo) * rng.uniform(0, 1)
    soil_lo, soil_hi = (np.asarray(c, float) for c in cfg.style.soil)
    soil = soil_lo + (soil_hi - soil_lo) * rng.uniform(0, 1)
    mix = rng.uniform(0.3, 0.8)
    concrete = rng.random() < 0.6
    rust = np.array([0.78, 0.68, 0.58]) * rng.uniform(0.75, 0.95)
    return {
        "bed": ballast * rust,
        "yard_ground": (ballast * mix + soil * (1 - mix)) * rng.uniform(1.0, 1.15),
        "sleeper": (np.array([150, 145, 138]) if concrete else np.array([70, 58, 48]))
        * rng.uniform(0.85, 1.05),
        "rail": np.array([42, 38, 36]) * rng.uniform(0.8, 1.2),
        "catenary": np.array([170, 170, 165]) * rng.uniform(0.8, 1.1),
        "mast_height": sample(rng, cfg.yard.mast_height_m),
    }
