"""Everything around the tracks: ground, fields, roads, built-up areas, trees, and the
distractors that look like rail cars but stand off track (trucks, containers on the
ground, sheds, long buildings).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from detector.synth.draw import Canvas, jitter, local, rect, sample, sample_int, smooth_noise
from detector.synth.layout import Occupancy, Yard
from detector.synth.vehicles import cast_shadow, pick

ROOFS = [(150, 70, 55), (120, 60, 50), (110, 110, 112), (80, 80, 85), (170, 150, 130),
         (60, 70, 80)]
ASPHALT = (92, 92, 94)
CONCRETE = (165, 162, 155)


@dataclass
class Thing:
    """An off-track object: footprint (metres), height for its shadow, how to draw it."""

    kind: str
    corners: np.ndarray
    height: float
    color: np.ndarray
    angle: float = 0.0


def _mix(rng: np.random.Generator, pair: Any) -> np.ndarray:
    lo, hi = (np.asarray(c, float) for c in pair)
    return lo + (hi - lo) * rng.uniform(0, 1)


def draw_ground(canvas: Canvas, cfg: Any, rng: np.random.Generator,
                extent: tuple[float, float]) -> None:
    """Base ground (grass/soil mixture) and agricultural fields with furrows."""
    h, w = canvas.shape
    grass, soil = _mix(rng, cfg.style.grass), _mix(rng, cfg.style.soil)
    blend = smooth_noise(rng, (h, w), cell=120 * canvas.k)
    weight = np.clip(0.5 + 0.35 * blend, 0, 1)[..., None]
    canvas.img[:] = grass * weight + soil * (1 - weight)
    tcfg = cfg.terrain
    wm, hm = extent
    for _ in range(sample_int(rng, tcfg.fields)):
        cx, cy = rng.uniform(0, wm), rng.uniform(0, hm)
        a = rng.uniform(0, np.pi)
        fl, fw = sample(rng, tcfg.field_size_m), sample(rng, tcfg.field_size_m)
        color = grass * rng.uniform(0.7, 1.3) if rng.random() < 0.5 else (
            soil * rng.uniform(0.75, 1.2))
        if rng.random() < 0.2:
            color = np.array([190, 175, 120]) * rng.uniform(0.85, 1.1)  # ripe crop
        corners = rect(cx, cy, fl, fw, a)
        canvas.poly(corners, color)
        step = rng.uniform(1.5, 4.0)
        vs = np.arange(-fw / 2, fw / 2, step)
        segs = np.stack([local(cx, cy, a, np.array([[-fl / 2, v], [fl / 2, v]])) for v in vs])
        canvas.lines(segs, np.clip(color * rng.uniform(0.8, 0.92), 0, 255), 0.6)
    for _ in range(sample_int(rng, tcfg.paved)):  # industrial yards, car parks, bare ground
        cx, cy = rng.uniform(0, wm), rng.uniform(0, hm)
        corners = rect(cx, cy, sample(rng, tcfg.field_size_m), sample(rng, tcfg.field_size_m),
                       rng.uniform(0, np.pi))
        canvas.poly(corners, np.asarray(jitter(rng, CONCRETE, 0.15)) * rng.uniform(0.65, 1.0))


def draw_roads(canvas: Canvas, cfg: Any, rng: np.random.Generator, extent: tuple[float, float],
               occ: Occupancy, yard: Yard) -> list[np.ndarray]:
    """Straight roads across the scene plus a service road along the yard; returns centrelines."""
    wm, hm = extent
    reach = float(np.hypot(wm, hm))
    roads = []
    for _ in range(sample_int(rng, cfg.terrain.roads)):
        c = np.array([rng.uniform(0, wm), rng.uniform(0, hm)])
        a = rng.uniform(0, np.pi)
        d = np.array([np.cos(a), np.sin(a)])
        roads.append((np.stack([c - reach * d, c + reach * d]), rng.uniform(6, 10)))
    u = np.array([np.cos(yard.angle), np.sin(yard.angle)])
    v = np.array([-np.sin(yard.angle), np.cos(yard.angle)])
    edge = yard.band[2] if rng.random() < 0.5 else yard.band[0]
    side = 1 if edge is yard.band[2] else -1
    start = edge + side * v * rng.uniform(4, 10)
    roads.append((np.stack([start - 2 * reach * u, start + 2 * reach * u]), rng.uniform(4, 6)))
    lines = []
    for line, width in roads:
        color = np.asarray(jitter(rng, ASPHALT, 0.12))
        canvas.line(line, np.clip(color * 1.25, 0, 255), width + 1.0)  # kerbs/shoulders
        canvas.line(line, color, width)
        occ.mark_line(line, width + 2)
        lines.append(line)
    return lines


def _try_place(occ: Occupancy, corners: np.ndarray, margin: float = 1.0) -> bool:
    c = corners.mean(axis=0)
    grown = c + (corners - c) * (1 + margin / max(np.ptp(corners, axis=0).max(), 1))
    if occ.is_free(grown):
        occ.mark_poly(corners)
        return True
    return False


def plan_things(cfg: Any, rng: np.random.Generator, extent: tuple[float, float],
                occ: Occupancy, rail: Occupancy, yard: Yard, roads: list[np.ndarray],
                canvas: Canvas) -> list[Thing]:
    """Place off-track objects (and paint the lots and yards they stand on).

    The parts draw from ``rng`` in a fixed order (lot, trucks, buildings, houses, cars,
    trees), so a scene does not change when one part's code is reorganised.

    Args:
        cfg: the whole synth config.
        rng: generator.
        extent: scene (width, height) in metres.
        occ: reserved ground (tracks, roads); placed objects are added to it.
        rail: ground reserved by tracks alone (vehicles on roads must avoid it).
        yard: the yard (for lots parallel to the tracks).
        roads: road centrelines (trucks drive on them).
        canvas: target canvas for paved lots.
    """
    tcfg, style = cfg.terrain, cfg.style
    things: list[Thing] = []
    if rng.random() < tcfg.lot_prob:
        things += freight_lot(tcfg, style, rng, extent, occ, yard, canvas)
    things += road_vehicles(rng, extent, rail, roads, sample_int(rng, tcfg.trucks), "truck",
                            style)
    things += buildings(tcfg, rng, extent, occ)
    if rng.random() < tcfg.built_prob:
        things += houses(tcfg, rng, extent, occ)
    things += road_vehicles(rng, extent, rail, roads, sample_int(rng, tcfg.cars), "car", style)
    things += trees(rng, extent, occ, sample_int(rng, tcfg.trees))
    return things


def freight_lot(tcfg: Any, style: Any, rng: np.random.Generator, extent: tuple[float, float],
                occ: Occupancy, yard: Yard, canvas: Canvas) -> list[Thing]:
    """A paved freight lot beside the yard: containers in rows parallel to the tracks and a
    long warehouse, the strongest look-alikes of rail cars."""
    wm, hm = extent
    u = np.array([np.cos(yard.angle), np.sin(yard.angle)])
    v = np.array([-np.sin(yard.angle), np.cos(yard.angle)])
    side = 1 if rng.random() < 0.5 else -1
    edge = yard.band[2] if side > 0 else yard.band[0]
    along = float(np.dot(np.array([wm, hm]) / 2 - yard.origin, u))
    along += rng.uniform(-0.3, 0.3) * min(wm, hm)
    depth = rng.uniform(40, 110)
    length = rng.uniform(120, 0.8 * min(wm, hm) + 120)
    gap = rng.uniform(14, 30)
    base = edge + u * (along - float(np.dot(edge - yard.origin, u))) + side * v * gap
    lot = np.stack([base - u * length / 2, base + u * length / 2,
                    base + u * length / 2 + side * v * depth,
                    base - u * length / 2 + side * v * depth])
    things: list[Thing] = []
    if not occ.is_free(lot):
        return things
    canvas.poly(lot, np.asarray(jitter(rng, CONCRETE, 0.08)))
    angle = float(np.arctan2(u[1], u[0]))
    # Containers stand in rows parallel to the tracks, nearly end to end.
    n_containers = sample_int(rng, tcfg.containers_on_ground)
    row_v = rng.uniform(4, max(5, depth / 2))
    row_u = rng.uniform(-length / 2 + 8, 0)
    for _ in range(n_containers):
        cl = 12.19 if rng.random() < 0.5 else 6.06
        if row_u + cl > length / 2 - 4 or rng.random() < 0.05:
            row_v += rng.uniform(2.8, 6.0)
            row_u = rng.uniform(-length / 2 + 4, 0)
        if row_v > depth - 3:
            break
        p = base + u * (row_u + cl / 2) + side * v * row_v
        row_u += cl + rng.uniform(0.3, 1.5) + (rng.random() < 0.15) * rng.uniform(3, 20)
        corners = rect(p[0], p[1], cl, 2.44, angle)
        if _try_place(occ, corners, 0.1):
            things.append(Thing("container", corners, 2.6 * rng.integers(1, 3),
                                np.asarray(jitter(rng, pick(rng, style.container_colors),
                                                  0.06)), angle))
    if rng.random() < 0.7:
        bl = rng.uniform(60, min(220, length))
        bw = rng.uniform(15, 30)
        p = base + u * rng.uniform(-length / 4, length / 4) + side * v * (depth - bw / 2)
        corners = rect(p[0], p[1], bl, bw, angle)
        if _try_place(occ, corners, 0.5):
            things.append(Thing("long_building", corners, rng.uniform(6, 12),
                                np.asarray(jitter(rng, (175, 175, 172), 0.12)), angle))
    return things


# Road vehicles: length range, width, lateral offsets from the centreline, height, colour jitter.
_ROAD_VEHICLES = {"truck": ((8, 16.5), 2.5, (-1.8, 1.8), 3.8, 0.1),
                  "car": ((4.5, 4.5), 1.8, (-1.6, 1.6, 6.0), 1.5, 0.2)}


def road_vehicles(rng: np.random.Generator, extent: tuple[float, float], rail: Occupancy,
                  roads: list[np.ndarray], count: int, kind: str, style: Any) -> list[Thing]:
    """Trucks or cars on the roads, never across a level crossing."""
    wm, hm = extent
    lengths, width, offsets, height, color_jitter = _ROAD_VEHICLES[kind]
    things = []
    for _ in range(count):
        road = roads[int(rng.integers(len(roads)))]
        p = road[0] + (road[1] - road[0]) * rng.uniform(0, 1)
        a = float(np.arctan2(*(road[1] - road[0])[::-1]))
        p = p + np.array([-np.sin(a), np.cos(a)]) * rng.choice(list(offsets))
        if not (0 < p[0] < wm and 0 < p[1] < hm):
            continue
        length = lengths[0] if lengths[0] == lengths[1] else rng.uniform(*lengths)
        corners = rect(p[0], p[1], length, width, a)
        if not rail.is_free(corners):
            continue
        things.append(Thing(kind, corners, height,
                            np.asarray(jitter(rng, pick(rng, style.container_colors),
                                              color_jitter)), a))
    return things


def buildings(tcfg: Any, rng: np.random.Generator, extent: tuple[float, float],
              occ: Occupancy) -> list[Thing]:
    """Long buildings, then sheds, on free ground."""
    wm, hm = extent
    things = []
    # kind, count, length, width, margin, height, roof jitter
    for kind, count, lengths, widths, margin, heights, roof_jitter in (
            ("long_building", tcfg.long_buildings, (50, 200), (12, 40), 3.0, (6, 14), 0.1),
            ("shed", tcfg.sheds, (10, 30), (3, 9), 2.0, (3, 5), 0.15)):
        for _ in range(sample_int(rng, count)):
            a = float(rng.uniform(0, np.pi))
            p = np.array([rng.uniform(0, wm), rng.uniform(0, hm)])
            corners = rect(p[0], p[1], rng.uniform(*lengths), rng.uniform(*widths), a)
            if _try_place(occ, corners, margin):
                height = rng.uniform(*heights)  # drawn before the roof colour, as always
                roof = ROOFS[int(rng.integers(len(ROOFS)))]
                things.append(Thing(kind, corners, height,
                                    np.asarray(jitter(rng, roof, roof_jitter)), a))
    return things


def houses(tcfg: Any, rng: np.random.Generator, extent: tuple[float, float],
           occ: Occupancy) -> list[Thing]:
    """A built-up area: houses on a street grid."""
    wm, hm = extent
    a = float(rng.uniform(0, np.pi))
    centre = np.array([rng.uniform(0.1, 0.9) * wm, rng.uniform(0.1, 0.9) * hm])
    pitch_u, pitch_v = rng.uniform(16, 26), rng.uniform(18, 30)
    n_houses = sample_int(rng, tcfg.houses)
    half = max(1, int(np.sqrt(n_houses) * 0.6))
    things = []
    for _ in range(n_houses):
        i, j = rng.integers(-half, half + 1, 2)
        jit = rng.normal(0, 1.5, 2)
        p = local(centre[0], centre[1], a, np.array([i * pitch_u + jit[0], j * pitch_v + jit[1]]))
        hl, hw = rng.uniform(8, 16), rng.uniform(7, 11)
        corners = rect(p[0], p[1], hl, hw, a + rng.choice([0, np.pi / 2]))
        if _try_place(occ, corners, 1.5):
            things.append(Thing("house", corners, rng.uniform(5, 9),
                                np.asarray(jitter(rng, ROOFS[int(rng.integers(len(ROOFS)))],
                                                  0.1)), a))
    return things


def trees(rng: np.random.Generator, extent: tuple[float, float], occ: Occupancy,
          n_trees: int) -> list[Thing]:
    """Clusters of tree crowns on free ground."""
    wm, hm = extent
    centres = rng.uniform(0, 1, (max(1, n_trees // 12), 2)) * np.array([wm, hm])
    things = []
    for _ in range(n_trees):
        c = centres[int(rng.integers(len(centres)))] + rng.normal(0, 25, 2)
        r = rng.uniform(1.8, 5.0)
        ang = np.linspace(0, 2 * np.pi, 9)[:-1]
        corners = c + np.stack([np.cos(ang), np.sin(ang)], 1) * r * rng.uniform(0.8, 1.1, (8, 1))
        if _try_place(occ, corners, 0.0):
            things.append(Thing("tree", corners, rng.uniform(4, 10),
                                np.asarray(jitter(rng, (52, 76, 40), 0.15))))
    return things


def cast_things(canvas: Canvas, things: list[Thing], shadow: np.ndarray) -> None:
    """Cast the shadows of off-track objects."""
    for t in things:
        cast_shadow(canvas, t.corners, t.height, shadow)


def draw_things(canvas: Canvas, things: list[Thing], sun: np.ndarray,
                rng: np.random.Generator) -> None:
    """Draw off-track objects from above."""
    for t in things:
        c = t.corners
        centre = c.mean(axis=0)
        if t.kind == "tree":
            canvas.poly(c, t.color)
            lit = centre + (c - centre) * 0.55 + sun * 0.8
            canvas.poly(lit, np.clip(t.color * 1.25, 0, 255))
            continue
        canvas.poly(c, t.color * 0.85)
        if t.kind == "house":  # pitched roof: lit and shaded halves along the ridge
            a, b = (c[0] + c[3]) / 2, (c[1] + c[2]) / 2
            half1 = np.stack([c[0], c[1], b, a])
            lit = np.dot((c[0] + c[1]) / 2 - centre, sun) > 0
            canvas.poly(half1, np.clip(t.color * (1.15 if lit else 0.8), 0, 255))
            canvas.poly(np.stack([a, b, c[2], c[3]]),
                        np.clip(t.color * (0.8 if lit else 1.15), 0, 255))
        elif t.kind in ("long_building", "shed", "canopy"):
            inner = centre + (c - centre) * 0.96
            canvas.poly(inner, t.color)
            length = np.hypot(*(c[1] - c[0]))
            d = (c[1] - c[0]) / max(length, 1e-6)
            step = rng.uniform(3, 8)
            segs = np.stack([np.stack([c[0] + d * s, c[3] + d * s])
                             for s in np.arange(step, length, step)]) if length > step else (
                np.zeros((0, 2, 2)))
            canvas.lines(segs, np.clip(t.color * 0.88, 0, 255), 0.25)
        elif t.kind == "container":
            inner = centre + (c - centre) * 0.92
            canvas.poly(inner, np.clip(t.color * 0.6 + 70, 0, 255))
        elif t.kind == "truck":
            d = (c[1] - c[0]) / np.hypot(*(c[1] - c[0]))
            cab = np.stack([c[1] - d * 2.3, c[1], c[2], c[2] - d * 2.3])
            trailer = np.stack([c[0], c[1] - d * 2.8, c[2] - d * 2.8, c[3]])
            canvas.poly(trailer, np.clip(rng.choice([0.6, 1.0]) * t.color * 0.5 + 100, 0, 255))
            canvas.poly(cab, t.color)
        elif t.kind == "trailer":  # semi-trailer without its tractor: ribbed roof
            inner = centre + (c - centre) * 0.94
            canvas.poly(inner, np.clip(t.color * 0.5 + 100, 0, 255))
            length = np.hypot(*(c[1] - c[0]))
            d = (c[1] - c[0]) / max(length, 1e-6)
            segs = np.stack([np.stack([c[0] + d * s, c[3] + d * s])
                             for s in np.arange(0.6, length, 0.6)])
            canvas.lines(segs, np.clip(t.color * 0.4 + 80, 0, 255), 0.08)
        elif t.kind == "car":
            canvas.poly(centre + (c - centre) * 0.6, (40, 44, 50))
