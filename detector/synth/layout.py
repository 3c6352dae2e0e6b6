"""Rail-yard geometry: parallel tracks at any angle, sidings, curved branches, switches,
catenary, and strings of coupled vehicles placed on the tracks.

Everything is in scene metres (x east, y down from the scene's top-left corner).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from detector.synth.draw import rect, sample, sample_int

CLASSES = ("freight_car", "covered_car", "tank_car", "locomotive")


@dataclass
class Track:
    """A track centreline: points (N, 2) in metres and where vehicles may stand on it."""

    pts: np.ndarray
    usable: tuple[float, float] = (0.0, 0.0)
    kind: str = "yard"  # yard | branch | connector
    occupied: list[tuple[float, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        seg = np.hypot(*np.diff(self.pts, axis=0).T)
        self.s = np.concatenate([[0.0], np.cumsum(seg)])

    @property
    def length(self) -> float:
        """Length along the centreline in metres."""
        return float(self.s[-1])

    def at(self, s: float) -> np.ndarray:
        """Point (2,) at arc length ``s``."""
        return np.array([np.interp(s, self.s, self.pts[:, 0]),
                         np.interp(s, self.s, self.pts[:, 1])])


@dataclass
class Vehicle:
    """One rail vehicle: oriented body rectangle (metres), class, drawing kind and style."""

    cls: str
    kind: str
    cx: float
    cy: float
    length: float
    width: float
    angle: float
    height: float
    string: int
    style: dict[str, Any] = field(default_factory=dict)

    @property
    def corners(self) -> np.ndarray:
        """Body rectangle corners (4, 2) in metres."""
        return rect(self.cx, self.cy, self.length, self.width, self.angle)


@dataclass
class Yard:
    """The rail part of a scene."""

    origin: np.ndarray
    angle: float
    tracks: list[Track]
    connectors: list[Track]
    masts: list[tuple[np.ndarray, np.ndarray]]  # portal: (mast base A, mast base B)
    band: np.ndarray  # yard ground polygon (metres)


class Occupancy:
    """A coarse (1 m) grid of reserved ground, so distractors never stand on track."""

    def __init__(self, width_m: float, height_m: float, cell_m: float = 1.0) -> None:
        self.cell = cell_m
        self.grid = np.zeros((int(np.ceil(height_m / cell_m)) + 1,
                              int(np.ceil(width_m / cell_m)) + 1), np.uint8)

    def _px(self, pts: np.ndarray) -> np.ndarray:
        return np.round(np.asarray(pts) / self.cell * 16).astype(np.int32).reshape(-1, 1, 2)

    def mark_poly(self, pts: np.ndarray) -> None:
        """Reserve a polygon."""
        cv2.fillPoly(self.grid, [self._px(pts)], 1, cv2.LINE_8, 4)

    def mark_line(self, pts: np.ndarray, width_m: float) -> None:
        """Reserve a band ``width_m`` wide along a polyline."""
        cv2.polylines(self.grid, [self._px(pts)], False, 1,
                      max(1, round(width_m / self.cell)), cv2.LINE_8, 4)

    def is_free(self, pts: np.ndarray) -> bool:
        """True when no reserved cell lies under the polygon (and it is on the grid)."""
        p = np.asarray(pts) / self.cell
        x0, y0 = np.floor(p.min(axis=0)).astype(int) - 1
        x1, y1 = np.ceil(p.max(axis=0)).astype(int) + 2
        h, w = self.grid.shape
        if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
            return False
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.fillPoly(mask, [self._px(pts - np.array([x0, y0]) * self.cell)], 1, cv2.LINE_8, 4)
        return not np.any(mask & self.grid[y0:y1, x0:x1])


def _usable(pts: np.ndarray, s: np.ndarray, extent: tuple[float, float], pad: float
            ) -> tuple[float, float]:
    w, h = extent
    inside = ((pts[:, 0] > -pad) & (pts[:, 0] < w + pad)
              & (pts[:, 1] > -pad) & (pts[:, 1] < h + pad))
    if not inside.any():
        return (0.0, 0.0)
    return float(s[inside].min()), float(s[inside].max())


def _track(pts: np.ndarray, extent: tuple[float, float], kind: str, pad: float) -> Track:
    track = Track(pts, kind=kind)
    track.usable = _usable(pts, track.s, extent, pad)
    return track


@dataclass
class _Frame:
    """The yard's frame: origin, unit vectors along (u) and across (v) the tracks, reach."""

    origin: np.ndarray
    u: np.ndarray
    v: np.ndarray
    reach: float

    def at(self, along: np.ndarray | float, across: np.ndarray | float) -> np.ndarray:
        """Scene points at (along, across) in the yard frame."""
        along, across = np.asarray(along, float), np.asarray(across, float)
        return self.origin + along[..., None] * self.u + across[..., None] * self.v


def plan_yard(cfg: Any, rng: np.random.Generator, extent: tuple[float, float]) -> Yard:
    """Lay out a yard: parallel tracks at a random angle, sidings, a curved branch, switches.

    The parts draw from ``rng`` in a fixed order, so layouts do not change with the code's
    organisation.

    Args:
        cfg: the ``yard`` config block.
        rng: random generator.
        extent: scene (width, height) in metres.
    """
    w, h = extent
    reach = float(np.hypot(w, h))
    angle = float(rng.uniform(0, np.pi))
    origin = np.array([w, h]) / 2 + rng.uniform(-0.2, 0.2, 2) * np.array([w, h])
    frame = _Frame(origin, np.array([np.cos(angle), np.sin(angle)]),
                   np.array([-np.sin(angle), np.cos(angle)]), reach)
    pad = float(cfg.edge_pad_m)
    offsets = _track_offsets(cfg, rng)
    tracks = _parallel_tracks(cfg, rng, frame, offsets, extent, pad)
    connectors = _switch_ladders(cfg, rng, frame, offsets)
    if rng.random() < cfg.curve_prob:
        tracks += _curved_branch(cfg, rng, frame, offsets, extent, pad)
    masts = _catenary(cfg, rng, frame, offsets) if rng.random() < cfg.catenary_prob else []
    margin = sample(rng, cfg.ground_margin_m)
    band = np.stack([frame.at(-reach, offsets[0] - margin), frame.at(reach, offsets[0] - margin),
                     frame.at(reach, offsets[-1] + margin), frame.at(-reach, offsets[-1] + margin)])
    return Yard(origin, angle, tracks, connectors, masts, band)


def _track_offsets(cfg: Any, rng: np.random.Generator) -> np.ndarray:
    """Across-track positions of the parallel tracks, centred on 0 (some wide gaps)."""
    offsets = [0.0]
    for _ in range(sample_int(rng, cfg.tracks) - 1):
        gap = sample(rng, cfg.spacing_m)
        if rng.random() < cfg.wide_gap_prob:
            gap += sample(rng, cfg.wide_gap_m)
        offsets.append(offsets[-1] + gap)
    return np.array(offsets) - np.mean(offsets)


def _parallel_tracks(cfg: Any, rng: np.random.Generator, frame: _Frame, offsets: np.ndarray,
                     extent: tuple[float, float], pad: float) -> list[Track]:
    """Straight tracks across the scene; sidings end at a buffer stop inside it."""
    reach = frame.reach
    tracks = []
    for off in offsets:
        u0, u1 = -reach, reach
        if rng.random() < cfg.siding_prob:
            if rng.random() < 0.5:
                u0 = float(rng.uniform(-0.6, 0.3) * reach / 2)
            else:
                u1 = float(rng.uniform(-0.3, 0.6) * reach / 2)
        us = np.linspace(u0, u1, max(2, int((u1 - u0) / 10) + 2))
        tracks.append(_track(frame.at(us, np.full(len(us), off)), extent, "yard", pad))
    return tracks


def _switch_ladders(cfg: Any, rng: np.random.Generator, frame: _Frame, offsets: np.ndarray
                    ) -> list[Track]:
    """Diagonal connectors between neighbouring tracks, at either end of the yard."""
    connectors = []
    for direction in (-1, 1):
        if rng.random() < cfg.ladder_prob:
            u_l = float(rng.uniform(0.1, 0.5) * frame.reach / 2) * direction
            step = float(sample(rng, cfg.switch_length_m))
            for i in range(len(offsets) - 1):
                a = frame.at(u_l + i * step * direction * 0.9, offsets[i])
                b = a + step * direction * frame.u + (offsets[i + 1] - offsets[i]) * frame.v
                connectors.append(Track(np.stack([a, b]), kind="connector"))
    return connectors


def _curved_branch(cfg: Any, rng: np.random.Generator, frame: _Frame, offsets: np.ndarray,
                   extent: tuple[float, float], pad: float) -> list[Track]:
    """A group of branch tracks peeling off the yard edge on a curve."""
    reach = frame.reach
    side = 1 if rng.random() < 0.5 else -1
    d = 1 if rng.random() < 0.5 else -1
    edge = offsets[-1] if side > 0 else offsets[0]
    radius = sample(rng, cfg.curve_radius_m)
    sweep = np.deg2rad(sample(rng, cfg.curve_sweep_deg))
    u0 = float(rng.uniform(-0.3, 0.3) * reach / 2)
    spacing = sample(rng, cfg.spacing_m)
    tracks = []
    for j in range(1, sample_int(rng, cfg.curve_tracks) + 1):
        r = radius - j * spacing
        phi = np.linspace(0, sweep, max(8, int(r * sweep / 4)))
        arc_u = u0 + d * r * np.sin(phi)
        arc_v = edge + side * (j * spacing + r * (1 - np.cos(phi)))
        tail = np.linspace(0, reach, 20)[1:]
        tail_u = arc_u[-1] + d * np.cos(sweep) * tail
        tail_v = arc_v[-1] + side * np.sin(sweep) * tail
        lead_u = np.linspace(u0 - d * reach, u0, 40)[:-1]
        uu = np.concatenate([lead_u, arc_u, tail_u])
        vv = np.concatenate([np.full(len(lead_u), edge + side * j * spacing), arc_v, tail_v])
        if d < 0:
            uu, vv = uu[::-1], vv[::-1]
        tracks.append(_track(frame.at(uu, vv), extent, "branch", pad))
    return tracks


def _catenary(cfg: Any, rng: np.random.Generator, frame: _Frame, offsets: np.ndarray
              ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Portal masts (pairs of bases) spanning the yard at regular spacing."""
    spacing = sample(rng, cfg.mast_spacing_m)
    lo, hi = offsets[0] - 3.5, offsets[-1] + 3.5
    return [(frame.at(uu, lo), frame.at(uu, hi))
            for uu in np.arange(-frame.reach / 2 + rng.uniform(0, spacing), frame.reach / 2,
                                spacing)]


def class_pool(rng: np.random.Generator, n: int, mix: dict[str, float]) -> dict[str, int]:
    """How many vehicles of each class a scene gets: a multinomial draw from ``mix``."""
    p = np.array([max(0.0, float(mix.get(c, 0.0))) for c in CLASSES])
    if n <= 0 or p.sum() <= 0:
        return dict.fromkeys(CLASSES, 0)
    counts = rng.multinomial(n, p / p.sum())
    return {c: int(k) for c, k in zip(CLASSES, counts, strict=True)}


def _string_classes(rng: np.random.Generator, pool: dict[str, int], n: int,
                    loco_front_prob: float, covered_string_prob: float,
                    block_cars: list[int]) -> list[str]:
    """Classes for one string of up to ``n`` cars, drawn from (and consuming) ``pool``."""
    out: list[str] = []
    if pool["locomotive"] and rng.random() < loco_front_prob:
        for _ in range(min(pool["locomotive"], 1 + int(rng.random() < 0.3))):
            out.append("locomotive")
            pool["locomotive"] -= 1
    covered_string = pool["covered_car"] > 0 and rng.random() < covered_string_prob
    wagons = ("freight_car", "covered_car", "tank_car")
    while len(out) < n:
        if covered_string and pool["covered_car"]:
            cls, block = "covered_car", n - len(out)
        else:
            weights = np.array([pool[c] for c in wagons], dtype=float)
            if weights.sum() == 0:
                # Wagons are used up: what is left are light engines, a few per string.
                if pool["locomotive"] and len(out) < 3:
                    cls, block = "locomotive", 1
                else:
                    break
            else:
                cls = wagons[int(rng.choice(3, p=weights / weights.sum()))]
                block = sample_int(rng, block_cars)
        block = min(block, n - len(out), pool[cls])
        out += [cls] * block
        pool[cls] -= block
    return out


def _choose_kind(rng: np.random.Generator, cls: str, kinds: dict[str, float]) -> str:
    if cls == "tank_car":
        return "tank"
    if cls == "locomotive":
        return "locomotive"
    names = list(kinds)
    p = np.array([float(kinds[k]) for k in names])
    kind = names[int(rng.choice(len(names), p=p / p.sum()))]
    if cls == "covered_car":  # tarps go over open wagons and flats
        return "tarp_" + ("flat" if kind.startswith("flat") else "gondola")
    return kind


def free_interval(track: Track, s: float) -> tuple[float, float] | None:
    """The free stretch ``(lo, hi)`` of ``track`` around arc length ``s``, or None if taken."""
    lo, hi = track.usable
    if not lo <= s < hi:
        return None
    for a, b in track.occupied:
        if a <= s < b:
            return None
        if b <= s:
            lo = max(lo, b)
        elif a > s:
            hi = min(hi, a)
    return lo, hi


def place_vehicles(cfg: Any, rng: np.random.Generator, yard: Yard) -> list[Vehicle]:
    """Fill the yard's tracks with strings of coupled vehicles.

    The scene's vehicle count and class mix are drawn first; strings are then placed at
    random free spots until the pool is used up or the tracks are full.

    Args:
        cfg: the whole synth config (uses ``vehicles``, ``class_mix``, ``covered_string_prob``,
            ``trains`` and ``dims``).
        rng: random generator.
        yard: tracks to place on.
    """
    vcfg = cfg.vehicles
    n_total = 0 if rng.random() < vcfg.empty_prob else sample_int(rng, [vcfg.min, vcfg.max])
    pool = class_pool(rng, n_total, dict(cfg.class_mix))
    tcfg, dims = cfg.trains, cfg.dims
    tracks = [t for t in yard.tracks if t.usable[1] - t.usable[0] > 20]
    if not tracks:
        return []
    weights = np.array([t.usable[1] - t.usable[0] for t in tracks])
    vehicles: list[Vehicle] = []
    string_id = 0
    for _ in range(int(tcfg.attempts)):
        if sum(pool.values()) == 0:
            break
        track = tracks[int(rng.choice(len(tracks), p=weights / weights.sum()))]
        interval = free_interval(track, float(rng.uniform(*track.usable)))
        if interval is None or interval[1] - interval[0] < 25:
            continue
        lo, hi = interval
        start = max(lo + 4.0, float(rng.uniform(lo, hi)) - rng.uniform(0, 200))
        classes = _string_classes(rng, pool, sample_int(rng, tcfg.string_cars),
                                  tcfg.loco_front_prob, cfg.covered_string_prob,
                                  list(tcfg.block_cars))
        s = start
        kind_style: dict[str, tuple[str, int]] = {}
        placed = 0
        for i, cls in enumerate(classes):
            length = sample(rng, dims.length_m[cls])
            if s + length > hi - 4.0:
                for rest in classes[i:]:  # not placed: back to the pool
                    pool[rest] += 1
                break
            # Consecutive cars of a class usually share kind and paint (one block).
            if cls not in kind_style or rng.random() < tcfg.kind_change_prob:
                kind_style[cls] = (_choose_kind(rng, cls, dict(cfg.freight_kinds)),
                                   int(rng.integers(1 << 30)))
            kind, style_seed = kind_style[cls]
            a, b = track.at(s), track.at(s + length)
            centre, d = (a + b) / 2, b - a
            width = sample(rng, dims.width_m[cls])
            vehicles.append(Vehicle(cls, kind, float(centre[0]), float(centre[1]), length,
                                    width, float(np.arctan2(d[1], d[0])),
                                    sample(rng, dims.height_m[kind.split("_")[0]]), string_id,
                                    {"seed": style_seed}))
            s += length + sample(rng, dims.gap_m)
            placed += 1
        if placed:
            track.occupied.append((start - 6.0, s + 6.0))
            string_id += 1
    return vehicles

