"""Hard negatives: things the model must learn not to count, drawn but never labelled.

Passenger coaches, commuter and metro trains on the tracks; rows of semi-trailers and car
parks; platform canopies beside the tracks. (Trucks on roads, containers on the ground,
sheds, long buildings and catenary masts come from :mod:`detector.synth.terrain` and
:mod:`detector.synth.tracks`.) Everything here draws from the scene's ``negatives`` stream.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from detector.synth.draw import jitter, rect, sample, sample_int
from detector.synth.layout import Occupancy, Vehicle, Yard, free_interval
from detector.synth.terrain import CONCRETE, Thing
from detector.synth.vehicles import pick

COACH = "passenger_coach"


def place_coaches(ncfg: Any, rng: np.random.Generator, yard: Yard) -> list[Vehicle]:
    """Strings of passenger coaches on free track (after the freight vehicles were placed)."""
    tracks = [t for t in yard.tracks if t.usable[1] - t.usable[0] > 60]
    coaches: list[Vehicle] = []
    if not tracks:
        return coaches
    for string in range(sample_int(rng, ncfg.passenger_trains)):
        track = tracks[int(rng.integers(len(tracks)))]
        interval = free_interval(track, float(rng.uniform(*track.usable)))
        if interval is None:
            continue
        lo, hi = interval
        s = lo + 5.0 + rng.uniform(0, max(0.0, (hi - lo) / 2))
        length = sample(rng, ncfg.coach_length_m)  # one length per train
        start = s
        for _ in range(sample_int(rng, ncfg.coaches)):
            if s + length > hi - 5.0:
                break
            a, b = track.at(s), track.at(s + length)
            c, d = (a + b) / 2, b - a
            coaches.append(Vehicle(COACH, "coach", float(c[0]), float(c[1]), length,
                                   sample(rng, ncfg.coach_width_m), float(np.arctan2(d[1], d[0])),
                                   4.0, 10_000 + string, {"seed": int(rng.integers(1 << 30))}))
            s += length + 1.0
        if s > start:
            track.occupied.append((start - 6.0, s + 6.0))
    return coaches


def plan_negatives(ncfg: Any, style: Any, rng: np.random.Generator, extent: tuple[float, float],
                   occ: Occupancy, yard: Yard, canvas: Any) -> list[Thing]:
    """Semi-trailer rows, car parks and platform canopies on free ground."""
    things: list[Thing] = []
    wm, hm = extent
    u = np.array([np.cos(yard.angle), np.sin(yard.angle)])
    v = np.array([-np.sin(yard.angle), np.cos(yard.angle)])
    angle = float(yard.angle)
    for _ in range(sample_int(rng, ncfg.canopies)):  # platform canopy along the yard edge
        edge = yard.band[2] if rng.random() < 0.5 else yard.band[0]
        side = 1 if edge is yard.band[2] else -1
        length, width = sample(rng, ncfg.canopy_length_m), rng.uniform(6, 10)
        p = edge + u * rng.uniform(-0.3, 0.3) * min(wm, hm) + side * v * (width / 2 + 2)
        corners = rect(p[0], p[1], length, width, angle)
        if occ.is_free(corners):
            occ.mark_poly(corners)
            things.append(Thing("canopy", corners, 5.0,
                                np.asarray(jitter(rng, (175, 178, 180), 0.2)), angle))
    for _ in range(sample_int(rng, ncfg.parking_lots)):
        a = float(rng.choice([angle, angle + np.pi / 2, rng.uniform(0, np.pi)]))
        centre = np.array([rng.uniform(0.1, 0.9) * wm, rng.uniform(0.1, 0.9) * hm])
        trailers = rng.random() < ncfg.trailer_lot_prob
        slot_l, slot_w = (13.6, 3.6) if trailers else (4.6, 2.6)
        rows, cols = int(rng.integers(1, 5)), int(rng.integers(4, 24))
        lot = rect(centre[0], centre[1], cols * slot_w + 6, rows * (slot_l + 6) + 4, a)
        if not occ.is_free(lot):
            continue
        occ.mark_poly(lot)
        canvas.poly(lot, np.asarray(jitter(rng, CONCRETE, 0.15)) * rng.uniform(0.55, 0.95))
        du = np.array([np.cos(a), np.sin(a)])
        dv = np.array([-np.sin(a), np.cos(a)])
        for r in range(rows):
            for c in range(cols):
                if rng.random() > ncfg.lot_fill:
                    continue
                p = (centre + du * ((c - (cols - 1) / 2) * slot_w)
                     + dv * ((r - (rows - 1) / 2) * (slot_l + 6)))
                if trailers:
                    corners = rect(p[0], p[1], 13.6, 2.55, a + np.pi / 2)
                    things.append(Thing("trailer", corners, 4.0,
                                        np.asarray(jitter(rng, pick(rng, style.container_colors),
                                                          0.1)), a))
                else:
                    corners = rect(p[0], p[1], 4.5, 1.8, a + np.pi / 2)
                    things.append(Thing("car", corners, 1.5,
                                        np.asarray(jitter(rng, pick(rng, style.container_colors),
                                                          0.2)), a))
    return things
