"""Draw rail vehicles seen from above: boxcars, open wagons with loads, flats with
containers or machinery, tank cars, locomotives and tarp-covered wagons, with shadows.

Each vehicle is drawn in its own frame (u along the body, v across), in metres.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from detector.synth.draw import Canvas, jitter, local
from detector.synth.layout import CLASSES, Vehicle


def pick(rng: np.random.Generator, colors: Any) -> np.ndarray:
    """A random colour (RGB float array) from a ``{name: [r, g, b]}`` palette."""
    names = sorted(colors)
    return np.asarray(colors[names[int(rng.integers(len(names)))]], dtype=float)


def shadow_vector(azimuth_deg: float, elevation_deg: float) -> np.ndarray:
    """Ground shadow offset (x east, y down) per metre of object height."""
    az = np.deg2rad(azimuth_deg)
    towards_sun = np.array([np.sin(az), -np.cos(az)])
    return -towards_sun / np.tan(np.deg2rad(elevation_deg))


def cast_shadow(canvas: Canvas, corners: np.ndarray, height: float, shadow: np.ndarray) -> None:
    """Cast the shadow of a box with footprint ``corners`` and ``height`` onto the ground."""
    pts = np.concatenate([corners, corners + shadow * height])
    canvas.cast(_hull(pts))


def _hull(pts: np.ndarray) -> np.ndarray:
    return cv2.convexHull(pts.astype(np.float32)).reshape(-1, 2).astype(float)


class _Frame:
    """Helpers to draw rectangles and lines in a vehicle's own frame."""

    def __init__(self, canvas: Canvas, v: Vehicle, sun: np.ndarray) -> None:
        self.c, self.v = canvas, v
        across = np.array([-np.sin(v.angle), np.cos(v.angle)])
        self.lit = float(np.dot(across, sun))  # >0: the +v side faces the sun

    def pts(self, uv: np.ndarray) -> np.ndarray:
        return local(self.v.cx, self.v.cy, self.v.angle, uv)

    def box(self, u0: float, u1: float, v0: float, v1: float, color: Any,
            alpha: float = 1.0) -> None:
        uv = np.array([[u0, v0], [u1, v0], [u1, v1], [u0, v1]])
        if alpha >= 1:
            self.c.poly(self.pts(uv), color)
        else:
            self.c.blend(self.pts(uv), color, alpha)

    def seg(self, u0: float, v0: float, u1: float, v1: float, color: Any, width: float) -> None:
        self.c.line(self.pts(np.array([[u0, v0], [u1, v1]])), color, width)

    def cross_lines(self, u0: float, u1: float, half: float, step: float, color: Any,
                    width: float) -> None:
        us = np.arange(u0 + step / 2, u1, step)
        segs = np.stack([self.pts(np.array([[u, -half], [u, half]])) for u in us]) if len(
            us) else np.zeros((0, 2, 2))
        self.c.lines(segs, color, width)


def draw_vehicle(canvas: Canvas, v: Vehicle, style: Any, sun: np.ndarray,
                 rng: np.random.Generator) -> None:
    """Draw one vehicle's body (its shadow is cast separately, before all bodies).

    Args:
        canvas: target canvas.
        v: the vehicle.
        style: the ``style`` config block (palettes).
        sun: unit vector towards the sun in scene axes (x east, y down).
        rng: per-vehicle generator for small variations.
    """
    block = np.random.default_rng(v.style["seed"])  # shared by a block of similar cars
    f = _Frame(canvas, v, sun)
    drawer = _DRAWERS[v.kind.split("_")[0]]
    drawer(f, v, style, block, rng)
    extra = style.get("randomised")
    if extra and v.kind != "coach" and rng.random() < extra["weathered_prob"]:
        _weather(f, v, rng)


def _weather(f: _Frame, v: Vehicle, rng: np.random.Generator) -> None:
    """Rust streaks and faded patches on a car body (randomised appearance only)."""
    L, W = v.length / 2, v.width / 2
    rust = np.asarray(jitter(rng, (125, 70, 45), 0.15))
    for _ in range(int(rng.integers(2, 7))):
        u = rng.uniform(-L, L - 1)
        f.box(u, u + rng.uniform(0.4, 3.0), -W + 0.1, W - 0.1, rust, rng.uniform(0.2, 0.55))


def _shade(color: np.ndarray, factor: float) -> np.ndarray:
    return np.clip(np.asarray(color) * factor, 0, 255)


def _boxcar(f: _Frame, v: Vehicle, style: Any, block: np.random.Generator,
            rng: np.random.Generator) -> None:
    L, W = v.length / 2, v.width / 2
    paint = pick(block, style.car_colors)
    roof = jitter(rng, paint * 0.55 + np.array([128, 126, 122]) * block.uniform(0.3, 0.6), 0.05)
    roof = np.asarray(roof)
    f.box(-L, L, -W, W, _shade(paint, 0.7))
    sun_side = 1 if f.lit > 0 else -1
    f.box(-L + 0.25, L - 0.25, 0, sun_side * (W - 0.1), _shade(roof, 1.08 + 0.1 * abs(f.lit)))
    f.box(-L + 0.25, L - 0.25, 0, -sun_side * (W - 0.1), _shade(roof, 0.9 - 0.1 * abs(f.lit)))
    f.cross_lines(-L + 0.3, L - 0.3, W - 0.15, block.uniform(0.55, 1.0), _shade(roof, 0.8), 0.1)
    if rng.random() < 0.3:  # a door/hatch or patch of rust
        u = rng.uniform(-L + 2, L - 4)
        f.box(u, u + rng.uniform(1, 3), -W + 0.2, W - 0.2, _shade(roof, rng.uniform(0.7, 1.2)),
              0.6)


def _open_wagon(f: _Frame, v: Vehicle, style: Any, block: np.random.Generator,
                rng: np.random.Generator, bays: int) -> None:
    L, W = v.length / 2, v.width / 2
    rim = pick(block, style.car_colors) * block.uniform(0.6, 0.95)
    load_names = sorted(style.loads)
    load_name = load_names[int(block.integers(len(load_names)))]
    load = np.asarray(jitter(rng, style.loads[load_name], 0.08))
    f.box(-L, L, -W, W, rim)
    wall = 0.18
    f.box(-L + wall, L - wall, -W + wall, W - wall, load)
    if load_name != "empty":  # heaped load: lit ridge and a darker lee side
        side = 1 if f.lit > 0 else -1
        f.box(-L + 0.5, L - 0.5, 0, side * (W - 0.4), _shade(load, 1.15), 0.6)
        f.box(-L + 0.5, L - 0.5, 0, -side * (W - 0.4), _shade(load, 0.85), 0.6)
        for _ in range(int(rng.integers(2, 6))):
            u = rng.uniform(-L + 0.5, L - 1.5)
            f.box(u, u + rng.uniform(0.4, 1.5), -W + 0.4, W - 0.4,
                  _shade(load, rng.uniform(0.8, 1.25)), 0.5)
    else:
        f.cross_lines(-L, L, W - wall, 1.2, _shade(load, 0.75), 0.12)
    # The wall on the sun side shades the inside next to it.
    side = 1 if f.lit > 0 else -1
    f.box(-L + wall, L - wall, side * (W - wall), side * (W - wall - 0.45), (20, 20, 25),
          0.45 if load_name == "empty" else 0.25)
    if bays > 1:
        for u in np.linspace(-L, L, bays + 1)[1:-1]:
            f.box(u - 0.12, u + 0.12, -W, W, rim)


def _gondola(f: _Frame, v: Vehicle, style: Any, block: np.random.Generator,
             rng: np.random.Generator) -> None:
    _open_wagon(f, v, style, block, rng, bays=1)


def _hopper(f: _Frame, v: Vehicle, style: Any, block: np.random.Generator,
            rng: np.random.Generator) -> None:
    if block.random() < 0.35:  # covered hopper: rounded roof with a hatch line
        L, W = v.length / 2, v.width / 2
        body = np.asarray(jitter(rng, pick(block, style.car_colors) * 0.5 + 80, 0.05))
        f.box(-L, L, -W, W, _shade(body, 0.8))
        side = 1 if f.lit > 0 else -1
        f.box(-L + 0.6, L - 0.6, 0, side * (W - 0.05), _shade(body, 1.15))
        f.box(-L + 0.6, L - 0.6, 0, -side * (W - 0.05), _shade(body, 0.85))
        f.box(-L + 0.9, L - 0.9, -0.25, 0.25, _shade(body, 1.05))
        f.cross_lines(-L + 0.6, L - 0.6, 0.35, 1.8, _shade(body, 0.7), 0.12)
        return
    _open_wagon(f, v, style, block, rng, bays=int(block.integers(2, 5)))


def _deck(f: _Frame, v: Vehicle, rng: np.random.Generator) -> np.ndarray:
    L, W = v.length / 2, v.width / 2
    deck = np.asarray(jitter(rng, (72, 64, 58), 0.12))
    f.box(-L, L, -W, W, deck)
    f.cross_lines(-L, L, W, 1.0, _shade(deck, 0.75), 0.1)
    return deck


def _flat(f: _Frame, v: Vehicle, style: Any, block: np.random.Generator,
          rng: np.random.Generator) -> None:
    L, W = v.length / 2, v.width / 2
    deck = _deck(f, v, rng)
    if v.kind == "flat_empty":
        f.box(-L, L, -0.25, 0.25, _shade(deck, 0.7))
        return
    if v.kind == "flat_container":
        lengths = [12.19] if v.length >= 13 and block.random() < 0.6 else [6.06, 6.06]
        if sum(lengths) > v.length - 0.4:
            lengths = [6.06]
        u = -sum(lengths) / 2 - (len(lengths) - 1) * 0.15
        for cl in lengths:
            col = np.asarray(jitter(rng, pick(rng, style.container_colors), 0.06))
            roof = col * 0.6 + 70
            cw = 2.44 / 2
            f.box(u, u + cl, -cw, cw, _shade(roof, 0.9))
            f.cross_lines(u, u + cl, cw - 0.05, 0.45, _shade(roof, 1.15), 0.08)
            side = 1 if f.lit > 0 else -1
            f.box(u, u + cl, side * (cw - 0.15), side * cw, _shade(col, 1.1))
            u += cl + 0.3
        return
    # Machinery, timber or steel on a flat.
    what = block.random()
    if what < 0.4:
        col = np.asarray(jitter(rng, [(200, 170, 40), (60, 110, 60), (150, 150, 150)][
            int(rng.integers(3))], 0.08))
        for _ in range(int(rng.integers(1, 3))):
            u = rng.uniform(-L + 0.5, L - 5)
            ln = rng.uniform(2.5, 5.0)
            f.box(u, u + ln, -W + 0.3, W - 0.3, col)
            f.box(u + 0.4, u + ln * 0.5, -0.6, 0.6, _shade(col, 0.55))
    elif what < 0.7:
        col = np.asarray(jitter(rng, (130, 96, 66), 0.1))
        for vv in np.linspace(-W + 0.4, W - 0.4, 5):
            f.seg(-L + 0.8, vv, L - 0.8, vv, _shade(col, rng.uniform(0.8, 1.2)), 0.35)
    else:
        col = np.asarray(jitter(rng, (110, 110, 114), 0.1))
        f.box(-L + 1, L - 1, -W + 0.5, W - 0.5, col)
        f.cross_lines(-L + 1, L - 1, W - 0.5, 0.4, _shade(col, 1.3), 0.08)


def _tank(f: _Frame, v: Vehicle, style: Any, block: np.random.Generator,
          rng: np.random.Generator) -> None:
    L, W = v.length / 2, v.width / 2
    base = np.asarray(jitter(rng, pick(block, style.tank_colors), 0.06))
    f.box(-L, L, -W * 0.85, W * 0.85, (50, 46, 44))  # underframe and end platforms
    # Cylinder shading: brightness across the width follows the angle to the sun.
    n = 7
    edges = np.linspace(-W, W, n + 1)
    tilt = 0.9 * f.lit
    for i in range(n):
        mid = (edges[i] + edges[i + 1]) / 2 / W
        normal_v = mid
        normal_z = np.sqrt(max(0.0, 1 - mid ** 2))
        light = 0.45 + 0.75 * max(0.0, normal_z * 0.8 + normal_v * tilt)
        cap = 0.9 * np.sqrt(max(0.0, 1 - mid ** 2))  # rounded tank heads
        f.box(-L + 1.0 - cap, L - 1.0 + cap, edges[i], edges[i + 1], _shade(base, light))
    f.seg(-L + 1.5, 0.2 * np.sign(f.lit), L - 1.5, 0.2 * np.sign(f.lit), _shade(base, 1.35), 0.25)
    dome_u = rng.uniform(-0.5, 0.5)
    f.c.circle(f.pts(np.array([dome_u, 0.0])), block.uniform(0.5, 0.8), _shade(base, 1.2))
    f.c.circle(f.pts(np.array([dome_u, 0.0])), 0.25, _shade(base, 0.6))
    if block.random() < 0.5:  # walkway along the top
        f.box(-2.0, 2.0, -0.35, 0.35, (95, 95, 95), 0.7)


def _locomotive(f: _Frame, v: Vehicle, style: Any, block: np.random.Generator,
                rng: np.random.Generator) -> None:
    L, W = v.length / 2, v.width / 2
    paint = np.asarray(jitter(rng, pick(block, style.loco_colors), 0.05))
    roof = np.asarray(jitter(rng, (96, 98, 100), 0.1)) * 0.6 + paint * 0.4
    f.box(-L, L, -W, W, _shade(paint, 0.75))
    f.box(-L + 0.3, L - 0.3, -W + 0.35, W - 0.35, roof)
    side = 1 if f.lit > 0 else -1
    f.box(-L + 0.3, L - 0.3, side * (W - 0.35), side * W, _shade(paint, 1.15))
    cabs = (-1, 1) if block.random() < 0.6 else (int(block.choice([-1, 1])),)
    for end in cabs:  # cab roof in paint colour, windscreen dark
        u_out = end * (L - 0.2)
        u_in = end * (L - 2.8)
        f.box(min(u_out, u_in), max(u_out, u_in), -W + 0.1, W - 0.1, _shade(paint, 1.0))
        f.box(u_out - end * 0.5, u_out, -W + 0.4, W - 0.4, (30, 36, 44))
    # Roof equipment: fans, boxes, exhaust.
    for u in np.linspace(-L + 4.5, L - 4.5, int(block.integers(2, 5))):
        f.c.circle(f.pts(np.array([u, 0.0])), 0.65, (40, 42, 45))
        f.c.circle(f.pts(np.array([u, 0.0])), 0.3, (80, 82, 85))
    if rng.random() < 0.7:
        u = rng.uniform(-L + 4, L - 6)
        f.box(u, u + rng.uniform(1.0, 2.5), -0.8, 0.8, _shade(roof, 1.3))


def _tarp(f: _Frame, v: Vehicle, style: Any, block: np.random.Generator,
          rng: np.random.Generator) -> None:
    """A tarp over a wagon: irregular overhanging outline, folds, ropes, patchy colour."""
    L, W = v.length / 2, v.width / 2
    f.box(-L, L, -W, W, (60, 55, 52))  # wagon body under the tarp edges
    base = np.asarray(jitter(rng, pick(block, style.tarp_colors), 0.1))
    over_end = block.uniform(0.15, 0.6)
    over_side = block.uniform(0.05, 0.35)
    n = int(rng.integers(6, 11))
    us = np.linspace(-L - over_end, L + over_end, n)
    top = W + over_side + rng.normal(0, 0.12, n)
    bottom = -(W + over_side + rng.normal(0, 0.12, n))
    end_a = -L - over_end - np.abs(rng.normal(0, 0.2, 3))
    end_b = L + over_end + np.abs(rng.normal(0, 0.2, 3))
    ring = np.concatenate([
        np.stack([us, bottom], 1),
        np.stack([end_b, np.linspace(-W * 0.6, W * 0.6, 3)], 1),
        np.stack([us[::-1], top[::-1]], 1),
        np.stack([end_a, np.linspace(W * 0.6, -W * 0.6, 3)], 1),
    ])
    f.c.poly(f.pts(ring), base)
    # Ridge over the load: lit and lee halves.
    side = 1 if f.lit > 0 else -1
    ridge = rng.normal(0, 0.15)
    f.box(-L, L, ridge, side * (W + over_side * 0.6), _shade(base, 1.12 + 0.1 * abs(f.lit)), 0.7)
    f.box(-L, L, ridge, -side * (W + over_side * 0.6), _shade(base, 0.85 - 0.08 * abs(f.lit)),
          0.7)
    for _ in range(int(rng.integers(0, 3))):  # patch of a second tarp sheet
        u = rng.uniform(-L, L - 3)
        f.box(u, u + rng.uniform(2, 6), -W, W, jitter(rng, base, 0.12), 0.6)
    for end in (-1, 1):  # the tarp drapes down over the wagon ends: darker there
        f.box(end * (L + over_end), end * (L - rng.uniform(0.5, 1.2)), -W - over_side,
              W + over_side, _shade(base, 0.72), 0.45)
    for _ in range(int(rng.integers(6, 16))):  # folds and creases: soft diagonal wrinkles
        u, du = rng.uniform(-L, L), rng.normal(0, 1.5)
        half = rng.uniform(0.12, 0.4)
        quad = np.array([[u - half, -W], [u + half, -W], [u + du + half, W], [u + du - half, W]])
        f.c.blend(f.pts(quad), _shade(base, rng.choice([0.72, 1.25])), rng.uniform(0.2, 0.45))
    extra = style.get("randomised")
    if extra:
        _tarp_variant(f, v, base, over_side, extra, style, block, rng)
    rope = (205, 200, 180) if block.random() < 0.6 else (40, 40, 40)
    step = block.uniform(1.2, 2.6)
    for u in np.arange(-L + step / 2, L, step) + rng.normal(0, 0.15):
        if rng.random() < 0.2:
            continue
        f.c.blend(f.pts(np.array([[u - 0.06, -W - over_side], [u + 0.06, -W - over_side],
                                  [u + 0.06, W + over_side], [u - 0.06, W + over_side]])),
                  rope, 0.3)
    if block.random() < 0.5:  # longitudinal rope along the ridge
        f.c.blend(f.pts(np.array([[-L, ridge - 0.05], [L, ridge - 0.05], [L, ridge + 0.05],
                                  [-L, ridge + 0.05]])), rope, 0.35)


def _tarp_variant(f: _Frame, v: Vehicle, base: np.ndarray, over_side: float, extra: Any,
                 style: Any, block: np.random.Generator, rng: np.random.Generator) -> None:
    """Randomised tarps: faded, two-tone, patterned, or partly folded back over the load."""
    L, W = v.length / 2, v.width / 2
    half = W + over_side
    if block.random() < extra["tarp_faded_prob"]:  # sun-bleached: washed towards pale grey
        f.box(-L, L, -half, half, (205, 205, 200), rng.uniform(0.25, 0.55))
    other = np.asarray(jitter(rng, pick(block, style.tarp_colors), 0.1))
    r = block.random()
    if r < extra["tarp_two_tone_prob"]:  # two sheets of different colours
        split = rng.uniform(-L * 0.6, L * 0.6)
        f.box(split, L, -half, half, other, 0.9)
    elif r < extra["tarp_two_tone_prob"] + extra["tarp_pattern_prob"]:
        step = rng.uniform(0.5, 2.0)
        if rng.random() < 0.5:  # stripes across the car
            for u in np.arange(-L, L, 2 * step):
                f.box(u, min(u + step, L), -half, half, other, 0.7)
        else:  # stripes along it
            for vv in np.arange(-half, half, 2 * step / 3):
                f.box(-L, L, vv, min(vv + step / 3, half), other, 0.7)
    if rng.random() < extra["tarp_folded_prob"]:  # folded back: the load shows at one end
        end = 1 if rng.random() < 0.5 else -1
        fold = rng.uniform(0.2, 0.5) * 2 * L
        u0, u1 = sorted((end * L, end * (L - fold)))
        load_names = sorted(style.loads)
        load = np.asarray(jitter(rng, style.loads[load_names[int(rng.integers(len(load_names)))]],
                                 0.1))
        f.box(u0, u1, -W, W, (70, 62, 56))
        f.box(u0 + 0.2, u1 - 0.2, -W + 0.2, W - 0.2, load)
        roll = end * (L - fold)
        f.box(roll - 0.5, roll + 0.5, -half, half, _shade(base, 0.7))


def _coach(f: _Frame, v: Vehicle, style: Any, block: np.random.Generator,
           rng: np.random.Generator) -> None:
    """A passenger, commuter or metro coach: long roof, roof units, window rows (not counted)."""
    L, W = v.length / 2, v.width / 2
    paint = np.asarray(jitter(rng, pick(block, style.coach_colors), 0.05))
    roof = np.asarray(jitter(rng, paint * 0.5 + np.array([110, 110, 110]) * block.uniform(0.4, 1.0),
                             0.05))
    f.box(-L, L, -W, W, _shade(paint, 0.8))
    f.box(-L + 0.6, L - 0.6, -W + 0.25, W - 0.25, roof)
    side = 1 if f.lit > 0 else -1
    f.box(-L + 0.6, L - 0.6, side * (W - 0.25), side * W, _shade(paint, 1.1))
    for u in np.arange(-L + 1.5, L - 1.5, block.uniform(1.4, 2.2)):  # window row at the edge
        f.box(u, u + 0.8, -side * W, -side * (W - 0.22), (28, 32, 40))
    for u in np.linspace(-L + 3, L - 3, int(block.integers(1, 4))):  # roof units
        f.box(u - 1.1, u + 1.1, -0.8, 0.8, _shade(roof, block.uniform(0.7, 1.3)))
    for end in (-1, 1):  # gangway bellows, dark
        f.box(end * L - 0.3, end * L + 0.3, -0.9, 0.9, (40, 40, 42))


_DRAWERS = {
    "boxcar": _boxcar,
    "gondola": _gondola,
    "hopper": _hopper,
    "flat": _flat,
    "tank": _tank,
    "locomotive": _locomotive,
    "tarp": _tarp,
    "coach": _coach,
}


def cast_vehicle_shadows(canvas: Canvas, vehicles: list[Vehicle], shadow: np.ndarray) -> None:
    """Cast every vehicle's shadow into the canvas shadow layer (before bodies are drawn)."""
    for v in vehicles:
        cast_shadow(canvas, v.corners, v.height, shadow)


def draw_vehicles(canvas: Canvas, vehicles: list[Vehicle], style: Any, sun: np.ndarray,
                  rng: np.random.Generator, body: np.ndarray) -> None:
    """Draw the vehicles' bodies and record their body rectangles in ``body``.

    Args:
        canvas: target canvas.
        vehicles: vehicles in metres.
        style: the ``style`` config block (palettes).
        sun: unit vector towards the sun (x east, y down).
        rng: generator for per-car variation.
        body: uint8 (H, W) layer at canvas resolution; body rectangles are set to 1.
    """
    for v in vehicles:
        draw_vehicle(canvas, v, style, sun, rng)
        if v.cls in CLASSES:  # passenger coaches are drawn but never labelled
            canvas.poly(v.corners, 1, target=body)
