"""Drawing primitives in metres on a supersampled float canvas, plus noise fields.

All geometry in the generator is in scene metres (x east, y down from the top-left
corner). :class:`Canvas` converts metres to canvas pixels once, so layout code never
thinks about resolution.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

_SHIFT = 4  # cv2 sub-pixel bits
_ONE = 1 << _SHIFT
Color = Sequence[float]


def sample(rng: np.random.Generator, spec: Sequence[float] | float) -> float:
    """A uniform draw from ``[low, high]``, or ``spec`` itself when it is a number."""
    if isinstance(spec, int | float):
        return float(spec)
    low, high = spec
    return float(rng.uniform(low, high))


def sample_int(rng: np.random.Generator, spec: Sequence[int] | int) -> int:
    """An integer draw from the inclusive range ``[low, high]``."""
    if isinstance(spec, int):
        return spec
    low, high = spec
    return int(rng.integers(int(low), int(high) + 1))


def jitter(rng: np.random.Generator, color: Color, amount: float) -> tuple[float, float, float]:
    """``color`` (0–255 RGB) with brightness and per-channel jitter of relative ``amount``."""
    base = np.asarray(color, dtype=float) * (1 + rng.normal(0, amount))
    base = base * (1 + rng.normal(0, amount / 3, 3))
    return tuple(float(c) for c in np.clip(base, 0, 255))


def rect(cx: float, cy: float, length: float, width: float, angle: float) -> np.ndarray:
    """Corners (4, 2) of an oriented rectangle (same order as ``geometry.obb_corners``)."""
    c, s = np.cos(angle), np.sin(angle)
    along = np.array([c, s]) * length / 2
    across = np.array([-s, c]) * width / 2
    centre = np.array([cx, cy])
    return np.stack([centre - along - across, centre + along - across,
                     centre + along + across, centre - along + across])


def local(cx: float, cy: float, angle: float, pts: np.ndarray) -> np.ndarray:
    """Points given in an object's frame (u along, v across) → scene metres."""
    pts = np.asarray(pts, dtype=float)
    c, s = np.cos(angle), np.sin(angle)
    x = cx + pts[..., 0] * c - pts[..., 1] * s
    y = cy + pts[..., 0] * s + pts[..., 1] * c
    return np.stack([x, y], axis=-1)


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cell: float,
                 channels: int = 1) -> np.ndarray:
    """Zero-mean, unit-ish smooth noise of ``shape`` with features ~``cell`` pixels wide."""
    h, w = shape
    gh, gw = max(2, int(np.ceil(h / cell)) + 2), max(2, int(np.ceil(w / cell)) + 2)
    grid = rng.normal(0, 1, (gh, gw, channels)).astype(np.float32)
    big = cv2.resize(grid, (int(gw * cell), int(gh * cell)), interpolation=cv2.INTER_CUBIC)
    big = big.reshape(big.shape[0], big.shape[1], channels)
    return np.ascontiguousarray(big[:h, :w] if channels > 1 else big[:h, :w, 0])


class Canvas:
    """A float32 RGB image (0–255) plus shadow layers, addressed in scene metres.

    Args:
        height: canvas height in pixels.
        width: canvas width in pixels.
        px_per_m: canvas pixels per metre.
    """

    def __init__(self, height: int, width: int, px_per_m: float) -> None:
        self.img = np.zeros((height, width, 3), np.float32)
        self.shadow = np.zeros((height, width), np.uint8)
        self.k = px_per_m

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return self.img.shape[0], self.img.shape[1]

    def px(self, pts_m: np.ndarray) -> np.ndarray:
        """Metres (corner convention) → cv2 fixed-point pixel centres, shaped (N, 1, 2)."""
        pts = (np.asarray(pts_m, dtype=float) * self.k - 0.5) * _ONE
        return np.round(pts).astype(np.int32).reshape(-1, 1, 2)

    def thickness(self, width_m: float) -> int:
        """Line width in pixels (at least 1) for a width in metres."""
        return max(1, round(width_m * self.k))

    def poly(self, pts_m: np.ndarray, color: Color, target: np.ndarray | None = None) -> None:
        """Fill a polygon."""
        cv2.fillPoly(self.img if target is None else target, [self.px(pts_m)],
                     _col(color, target), cv2.LINE_8, _SHIFT)

    def polys(self, many: Sequence[np.ndarray], color: Color,
              target: np.ndarray | None = None) -> None:
        """Fill many polygons with one colour in one call."""
        if len(many):
            cv2.fillPoly(self.img if target is None else target, [self.px(p) for p in many],
                         _col(color, target), cv2.LINE_8, _SHIFT)

    def line(self, pts_m: np.ndarray, color: Color, width_m: float, closed: bool = False,
             target: np.ndarray | None = None) -> None:
        """Draw a polyline ``width_m`` wide."""
        cv2.polylines(self.img if target is None else target, [self.px(pts_m)], closed,
                      _col(color, target), self.thickness(width_m), cv2.LINE_8, _SHIFT)

    def lines(self, segments: np.ndarray, color: Color, width_m: float,
              target: np.ndarray | None = None) -> None:
        """Draw many 2-point segments (M, 2, 2) in one call."""
        if len(segments):
            pts = [self.px(s) for s in segments]
            cv2.polylines(self.img if target is None else target, pts, False,
                          _col(color, target), self.thickness(width_m), cv2.LINE_8, _SHIFT)

    def circle(self, centre_m: Sequence[float], radius_m: float, color: Color,
               target: np.ndarray | None = None) -> None:
        """Fill a disc."""
        c = self.px(np.asarray(centre_m)[None])[0, 0]
        cv2.circle(self.img if target is None else target, (int(c[0]), int(c[1])),
                   max(_ONE // 2, round(radius_m * self.k * _ONE)), _col(color, target), -1,
                   cv2.LINE_8, _SHIFT)

    def cast(self, pts_m: np.ndarray, value: int = 255) -> None:
        """Add a polygon to the shadow layer."""
        cv2.fillPoly(self.shadow, [self.px(pts_m)], value, cv2.LINE_8, _SHIFT)

    def blend(self, pts_m: np.ndarray, color: Color, alpha: float) -> None:
        """Blend a filled polygon over the image with opacity ``alpha`` (local ROI only)."""
        pts = self.px(pts_m)
        x0, y0 = np.maximum(pts.min(axis=(0, 1)) // _ONE - 1, 0)
        x1, y1 = pts.max(axis=(0, 1)) // _ONE + 2
        h, w = self.shape
        x1, y1 = min(x1, w), min(y1, h)
        if x1 <= x0 or y1 <= y0:
            return
        mask = np.zeros((y1 - y0, x1 - x0), np.float32)
        cv2.fillPoly(mask, [pts - np.array([x0, y0], np.int32) * _ONE], 1.0, cv2.LINE_8, _SHIFT)
        roi = self.img[y0:y1, x0:x1]
        roi += (np.asarray(color, np.float32) - roi) * (mask[..., None] * alpha)


def _col(color: Color, target: np.ndarray | None) -> tuple[float, ...] | float:
    if target is not None and target.ndim == 2:
        return float(color if isinstance(color, int | float) else color[0])
    return tuple(float(c) for c in color)
