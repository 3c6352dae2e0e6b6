"""Train/val/test splits by scene or by spatial block, never by chip.

Overlapping chips of one place must not sit in two splits, so the unit of a split is a
whole scene or a block of a scene; chips are cut inside one block and never cross into
the next.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from detector.errors import DetectorError

SPLITS = ("train", "val", "test")


def split_sizes(n_units: int, val: float, test: float) -> tuple[int, int]:
    """Units for val and test: a non-zero share gets at least one unit."""
    n_val = max(1, round(val * n_units)) if val > 0 else 0
    n_test = max(1, round(test * n_units)) if test > 0 else 0
    return n_val, n_test


def scenes_are_enough(n_scenes: int, val: float, test: float) -> bool:
    """True when a split by scene gives every requested split its share without rounding up.

    ``by: auto`` falls back to blocks otherwise: with three scenes, a 20 % val split by
    scene would hold a third of the data.
    """
    n_val, n_test = split_sizes(n_scenes, val, test)
    fair = (val <= 0 or round(val * n_scenes) >= 1) and (test <= 0 or round(test * n_scenes) >= 1)
    return fair and n_scenes - n_val - n_test >= 1


def assign_splits(units: Mapping[str, int], val: float, test: float, seed: int) -> dict[str, str]:
    """Assign each unit (a scene or block name) to train, val or test, seeded.

    Units are shuffled, then val and test each take units until they hold their share of
    the vehicles (``units`` maps a unit to its vehicle count), so an empty scene does not
    make a whole split empty. With no vehicles at all, every unit counts one.

    Raises:
        DetectorError: bad shares, or too few units to give train at least one.
    """
    if not 0 <= val < 1 or not 0 <= test < 1 or val + test >= 1:
        raise DetectorError(
            f"data.split: val={val} and test={test} must be shares in [0, 1) that sum "
            "below 1; fix data.split.val / data.split.test")
    order = sorted(units)
    n_val, n_test = split_sizes(len(order), val, test)
    if len(order) - n_val - n_test < 1:
        raise DetectorError(
            f"data.split: {len(order)} unit(s) cannot fill train, val and test; add scenes, "
            "use data.split.by=block, or lower data.split.block_m")
    weights = {name: units[name] for name in order}
    if not any(weights.values()):
        weights = dict.fromkeys(order, 1)
    total = sum(weights.values())
    targets = {"val": val * total, "test": test * total}
    filled = {"val": 0.0, "test": 0.0}
    rng = np.random.default_rng(seed)
    assignment = {}
    for index in rng.permutation(len(order)):
        name = order[index]
        split = next((s for s in ("val", "test") if targets[s] > 0 and filled[s] < targets[s]),
                     "train")
        assignment[name] = split
        if split != "train":
            filled[split] += weights[name]
    if "train" not in assignment.values():
        raise DetectorError(
            f"data.split: the {len(order)} unit(s) left none for train (one holds most "
            "vehicles); add scenes, use data.split.by=block or lower data.split.block_m")
    return assignment


def axis_edges(length: int, block: int) -> list[int]:
    """Block edges along one axis: blocks of ``block`` pixels or more, evenly spread."""
    count = max(1, length // max(1, block))
    return [round(i * length / count) for i in range(count + 1)]


def scene_blocks(width: int, height: int, block: int | tuple[int, int]
                 ) -> list[tuple[int, int, int, int]]:
    """Regions (col0, row0, col1, row1) tiling a ``width`` x ``height`` scene in blocks of
    ``block`` px (or (columns, rows))."""
    bx, by = (block, block) if isinstance(block, int) else block
    cols, rows = axis_edges(width, bx), axis_edges(height, by)
    return [(c0, r0, c1, r1)
            for r0, r1 in zip(rows[:-1], rows[1:], strict=True)
            for c0, c1 in zip(cols[:-1], cols[1:], strict=True)]


def block_name(scene: str, region: tuple[int, int, int, int]) -> str:
    """Unit name of a block: the scene name and the block's top-left pixel."""
    return f"{scene}@{region[0]},{region[1]}"
