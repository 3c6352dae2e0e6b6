"""detector.data pure parts: chip grid, min-visible clip rule, splits, label rows."""

import numpy as np
import pytest

from detector.data.chipping import Chip, chip_grid, chip_labels, visible_part
from detector.data.split import (
    assign_splits,
    scene_blocks,
    scenes_are_enough,
)
from detector.data.writer import detect_line, label_lines, obb_line
from detector.errors import DetectorError
from detector.geometry import corners_to_obb, obb_corners, visible_fraction
from detector.labels import LabelledPolygon


def car(x0: float, x1: float, y: float = 50.0, cls: str = "freight_car") -> LabelledPolygon:
    """An axis-aligned car body from x0 to x1, 6 px wide, centred on row ``y``."""
    return LabelledPolygon(obb_corners((x0 + x1) / 2, y, x1 - x0, 6.0, 0.0), cls)


def test_edge_rule_at_exactly_min_visible():
    chip = Chip(0, 0, 100, 100)
    at_limit = car(-4.0, 6.0)  # 6 of 10 px inside: exactly 0.6
    assert visible_fraction(at_limit.corners, chip.bounds) == pytest.approx(0.6)
    [label] = chip_labels([at_limit], chip, min_visible=0.6)
    xs = label.corners[:, 0]
    assert (xs.min(), xs.max()) == pytest.approx((0.0, 6.0))  # clipped to the chip
    assert chip_labels([car(-4.01, 5.99)], chip, min_visible=0.6) == []  # 0.599
    assert len(chip_labels([car(-4.01, 5.99)], chip, min_visible=0.59)) == 1


@pytest.mark.parametrize(("x0", "in_left", "in_right"), [
    (80.0, True, True),     # inside the 20 px overlap: whole in both chips
    (76.0, True, True),     # 16 of 20 px in the right chip (0.8)
    (70.0, True, False),    # 10 of 20 px in the right chip (0.5)
    (92.0, False, True),    # 8 of 20 px in the left chip (0.4)
    (88.0, True, True),     # 12 of 20 px in the left chip: exactly 0.6
])
def test_car_across_a_seam_lands_where_visible_enough(x0, in_left, in_right):
    left, right = chip_grid((0, 0, 180, 100), side=100, stride=80, size=100)
    assert (left.col, right.col) == (0, 80)
    vehicle = car(x0, x0 + 20)
    assert bool(chip_labels([vehicle], left, 0.6)) is in_left
    assert bool(chip_labels([vehicle], right, 0.6)) is in_right


def test_chip_coordinates_round_trip_with_resampling():
    chip = Chip(col=300, row=200, side=256, size=128)  # source at half the target m/px
    corners = obb_corners(400.0, 320.0, 56.0, 12.0, np.deg2rad(25))
    [label] = chip_labels([LabelledPolygon(corners, "tank_car")], chip, 0.6)
    assert np.allclose(label.corners.max(axis=0) - label.corners.min(axis=0),
                       (corners.max(axis=0) - corners.min(axis=0)) / 2)
    assert np.allclose(chip.to_scene(label.corners), corners)


def test_clipped_rotated_car_keeps_its_orientation():
    corners = obb_corners(95.0, 50.0, 30.0, 6.0, np.deg2rad(30))
    part = visible_part(corners, (0, 0, 100, 100), 0.5)
    _, _, length, width, angle = corners_to_obb(part)
    assert angle == pytest.approx(np.deg2rad(30))
    assert width == pytest.approx(6.0)
    assert 15 < length < 30


def test_blocks_tile_the_scene_exactly():
    blocks = scene_blocks(1000, 700, 300)
    area = sum((c1 - c0) * (r1 - r0) for c0, r0, c1, r1 in blocks)
    assert area == 1000 * 700
    assert all(c1 - c0 >= 300 and r1 - r0 >= 300 for c0, r0, c1, r1 in blocks)
    assert len(blocks) == 3 * 2


def test_assign_splits_is_seeded_and_complete():
    names = {f"scene_{i:03d}": 1 for i in range(10)}
    first = assign_splits(names, 0.2, 0.1, seed=0)
    assert first == assign_splits(dict(reversed(names.items())), 0.2, 0.1, seed=0)
    assert sorted(first) == sorted(names)
    assert sorted(first.values()).count("val") == 2
    assert sorted(first.values()).count("test") == 1
    assert first != assign_splits(names, 0.2, 0.1, seed=1)
    with pytest.raises(DetectorError, match="split"):
        assign_splits({"a": 1, "b": 1}, 0.2, 0.1, seed=0)


@pytest.mark.parametrize("seed", range(5))
def test_split_shares_follow_vehicles_not_empty_scenes(seed):
    units = {f"s{i}": (0 if i < 4 else 10) for i in range(12)}  # four empty scenes
    assignment = assign_splits(units, 0.2, 0.1, seed=seed)
    held = {s: sum(units[u] for u, a in assignment.items() if a == s) for s in ("val", "test")}
    assert held["val"] >= 0.2 * 80 and held["test"] >= 0.1 * 80
    assert held["val"] + held["test"] <= 0.3 * 80 + 10


def test_auto_split_needs_enough_scenes():
    assert scenes_are_enough(12, 0.2, 0.1)
    assert not scenes_are_enough(4, 0.2, 0.1)  # test would be rounded up from 0.4
    assert scenes_are_enough(4, 0.25, 0.0)


def test_label_rows_are_normalised_and_deduplicated():
    corners = np.array([[10.0, 20.0], [40.0, 20.0], [40.0, 26.0], [10.0, 26.0]])
    assert obb_line(2, corners, 100) == "2 0.100000 0.200000 0.400000 0.200000 " \
                                        "0.400000 0.260000 0.100000 0.260000"
    assert detect_line(1, corners, 100) == "1 0.250000 0.230000 0.300000 0.060000"
    poly = LabelledPolygon(corners, "tank_car")
    assert len(label_lines([poly, poly], {"tank_car": 2}, "obb", 100)) == 1
