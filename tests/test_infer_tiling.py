"""Tile grid and seam merging with planted detections (no model involved)."""

import numpy as np
import pytest
from shapely.geometry import Polygon, box

from detector.geometry import obb_corners, polygon_iou
from detector.infer.merge import merge, owned
from detector.infer.tiling import tile_grid
from tests.helpers import car_string

CAR_LEN, CAR_WID = 30.0, 6.0  # px: a 15 m car at 0.5 m/px (car_string's defaults)
TILE, OVERLAP = 128, 48
MARGIN = 3.0  # px of core growth: several times the per-tile centre jitter


def test_tile_grid_covers_the_scene_and_keeps_the_overlap():
    for length in (1, 127, 128, 129, 300, 1000):
        starts = sorted({t.x0 for t in tile_grid(length, 1, TILE, OVERLAP)})
        assert starts[0] == 0
        assert starts[-1] + TILE >= length
        gaps = np.diff(starts)
        assert (gaps <= TILE - OVERLAP).all() and (gaps > 0).all()
    assert [t.x0 for t in tile_grid(50, 50, TILE, OVERLAP)] == [0]  # smaller than one tile


def test_cores_partition_the_plane_with_margin_from_tile_edges():
    tiles = tile_grid(500, 333, TILE, OVERLAP)
    pts = np.random.default_rng(0).uniform(-20, 520, size=(5000, 2))
    owners = np.stack([t.owns(pts) for t in tiles])
    assert (owners.sum(axis=0) == 1).all()
    for t in tiles:
        xmin, ymin, xmax, ymax = t.core
        # a core edge inside the scene lies at least overlap/2 from the tile's edge
        assert np.isinf(xmin) or xmin - t.x0 >= OVERLAP / 2
        assert np.isinf(xmax) or t.x0 + t.size - xmax >= OVERLAP / 2
        assert np.isinf(ymin) or ymin - t.y0 >= OVERLAP / 2
        assert np.isinf(ymax) or t.y0 + t.size - ymax >= OVERLAP / 2


def simulate_tiles(cars, tiles, rng, jitter=0.6, min_visible=0.15):
    """What an ideal-but-noisy model reports per tile: each car's visible part, jittered.

    A car cut by the tile edge is reported as its visible part (a shorter box), which is
    what makes seams dangerous.
    """
    out = []
    for t in tiles:
        clip = box(t.x0, t.y0, t.x0 + t.size, t.y0 + t.size)
        corners, scores = [], []
        for car in cars:
            poly = Polygon(car)
            part = poly.intersection(clip)
            if part.area < min_visible * poly.area:
                continue
            rect = np.asarray(part.minimum_rotated_rectangle.exterior.coords)[:4]
            corners.append(rect + rng.normal(0, jitter, size=2))
            scores.append(0.5 + 0.5 * part.area / poly.area)
        out.append((np.array(corners).reshape(-1, 4, 2), np.array(scores)))
    return out


def merged(cars, tiles, rng, method="ownership_nms", margin=MARGIN, **options):
    kept_c, kept_s, kept_t = [], [], []
    for k, (corners, scores) in enumerate(simulate_tiles(cars, tiles, rng)):
        mask = (owned(corners, tiles[k], margin) if method != "naive"
                else np.ones(len(scores), bool))
        kept_c.append(corners[mask])
        kept_s.append(scores[mask])
        kept_t.append(np.full(int(mask.sum()), k))
    corners, scores, tile_ids = (np.concatenate(kept_c), np.concatenate(kept_s),
                                 np.concatenate(kept_t))
    if method == "naive":
        return corners
    keep = merge(corners, scores, tile_ids, method, **options)
    return corners[keep]


def match_one_to_one(cars, found):
    """Each car matched by exactly one detection with IoU > 0.5, and no extras."""
    iou = np.array([[polygon_iou(c, f) for f in found] for c in cars])
    return (len(found) == len(cars) and (iou > 0.5).sum(axis=1).tolist() == [1] * len(cars)
            and (iou > 0.5).sum(axis=0).tolist() == [1] * len(found))


@pytest.mark.parametrize("angle", [0, 30, 45, 90, 135])
def test_long_string_across_several_tiles_is_counted_once_each(angle):
    rng = np.random.default_rng(angle)
    # Strings heading left of straight down start near the right edge to stay in the scene.
    x0, n = (20, 14) if angle <= 90 else (400, 12)
    cars = car_string(x0, 20, angle, n)
    assert all(((c >= 0) & (c <= 460)).all() for c in cars)
    tiles = tile_grid(460, 460, TILE, OVERLAP)
    assert len({t.name for t in tiles for c in cars if t.owns(c.mean(axis=0)[None])[0]}) > 1
    found = merged(cars, tiles, rng)
    assert match_one_to_one(cars, found)


def test_naive_concatenation_double_counts_the_same_string():
    # guards the test above: without ownership and suppression, seams break the count
    cars = car_string(20, 20, 30, 14)
    tiles = tile_grid(460, 460, TILE, OVERLAP)
    assert len(merged(cars, tiles, np.random.default_rng(0), method="naive")) > len(cars)


def test_car_cut_by_a_planted_seam_is_counted_once():
    tiles = tile_grid(300, 128, TILE, OVERLAP)
    cut = tiles[0].core[2]  # the core boundary between the first two tiles
    rng = np.random.default_rng(1)
    for dx in np.linspace(-CAR_LEN, CAR_LEN, 13):
        car = [obb_corners(cut + dx, 60, CAR_LEN, CAR_WID, 0.0)]
        assert match_one_to_one(car, merged(car, tiles, rng))


def test_cars_exactly_on_tile_corners_are_counted_once():
    tiles = tile_grid(400, 400, TILE, OVERLAP)
    corners_x = sorted({t.core[2] for t in tiles if np.isfinite(t.core[2])})
    corners_y = sorted({t.core[3] for t in tiles if np.isfinite(t.core[3])})
    rng = np.random.default_rng(2)
    for cx in corners_x:
        for cy in corners_y:
            for angle in (0, 30, 45, 90):
                car = [obb_corners(cx, cy, CAR_LEN, CAR_WID, np.deg2rad(angle))]
                assert match_one_to_one(car, merged(car, tiles, rng)), (cx, cy, angle)
    # tile window corners too (not just core corners)
    for t in tiles[:4]:
        car = [obb_corners(t.x0 + t.size, t.y0 + t.size, CAR_LEN, CAR_WID, 0.5)]
        assert match_one_to_one(car, merged(car, tiles, rng))


def test_suppression_keeps_coupled_neighbours_from_different_tiles():
    # two coupled cars on a 45° track, reported by two tiles: both must survive
    cars = car_string(100, 100, 45, 2)
    corners = np.stack(cars)
    keep = merge(corners, np.array([0.9, 0.8]), np.array([0, 1]), "ownership_nms",
                 threshold=0.6, metric="ios")
    assert keep.tolist() == [0, 1]
    dup = np.stack([cars[0], cars[0] + 1.0])
    keep = merge(dup, np.array([0.7, 0.9]), np.array([0, 1]), "ownership_nms",
                 threshold=0.6, metric="ios")
    assert keep.tolist() == [1]
    # the same pair within one tile is left to the model's NMS
    keep = merge(dup, np.array([0.7, 0.9]), np.array([0, 0]), "ownership_nms")
    assert keep.tolist() == [0, 1]
