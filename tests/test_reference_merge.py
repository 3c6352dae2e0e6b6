"""Seam merging on boxes whose overlaps are worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from detector.infer.merge import (
    MERGERS,
    centres,
    merge,
    overlap_pairs,
    owned,
    suppress_rotated,
)
from detector.infer.tiling import tile_grid


def rect(x0, y0, x1, y1):
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], float)


A = rect(0, 0, 2, 2)        # area 4
B = rect(1, 0, 3, 2)        # overlaps A by 1 x 2 = 2
C = rect(2, 0, 4, 2)        # overlaps B by 1 x 2 = 2, touches A (no area)
D = rect(0, 0, 1, 1)        # inside A, area 1
FAR = rect(10, 10, 11, 11)


def test_overlap_pairs_by_hand():
    i, j, ios = overlap_pairs(np.stack([A, B, FAR, D]))
    pairs = {(int(a), int(b)): float(v) for a, b, v in zip(i, j, ios, strict=True)}
    # A-B: 2 / min(4, 4); A-D: 1 / 1; B-D touch along x = 1 (no area); FAR alone
    assert pairs[(0, 1)] == pytest.approx(0.5)
    assert pairs[(0, 3)] == pytest.approx(1.0)
    assert all(a < b for a, b in pairs) and 2 not in {x for p in pairs for x in p}
    i, j, iou = overlap_pairs(np.stack([A, B, FAR, D]), metric="iou")
    pairs = {(int(a), int(b)): float(v) for a, b, v in zip(i, j, iou, strict=True)}
    assert pairs[(0, 1)] == pytest.approx(2 / 6)
    assert pairs[(0, 3)] == pytest.approx(1 / 4)
    with pytest.raises(ValueError, match="unknown overlap metric 'dice'"):
        overlap_pairs(np.stack([A, B]), metric="dice")
    for few in (np.zeros((0, 4, 2)), A[None]):
        i, j, v = overlap_pairs(few)
        assert i.size == j.size == v.size == 0
    # a degenerate (zero-area) box overlaps nothing rather than dividing by zero
    flat = np.array([[0, 1], [2, 1], [2, 1], [0, 1]], float)
    _, _, v = overlap_pairs(np.stack([A, flat]))
    assert np.all(v == 0)


def test_suppression_is_greedy_by_score_across_tiles_only():
    boxes = np.stack([A, B, C])
    # A (0.9) suppresses B; B, suppressed, no longer suppresses C -> A and C kept
    assert suppress_rotated(boxes, np.array([0.9, 0.8, 0.7]), np.array([0, 1, 0])
                            ).tolist() == [0, 2]
    # B first (highest) suppresses A and C (ios 0.5 > 0.3) -> B alone
    assert suppress_rotated(boxes, np.array([0.8, 0.9, 0.7]), np.array([0, 1, 0])
                            ).tolist() == [1]
    # same tile: the model's own NMS already ran, nothing competes
    assert suppress_rotated(boxes, np.array([0.9, 0.8, 0.7]), np.array([0, 0, 0])
                            ).tolist() == [0, 1, 2]
    assert suppress_rotated(boxes, np.array([0.9, 0.8, 0.7]), np.array([0, 0, 0]),
                            cross_tile_only=False).tolist() == [0, 2]
    # the threshold is strict: ios 0.5 does not exceed 0.5
    assert suppress_rotated(np.stack([A, B]), np.array([0.9, 0.8]), np.array([0, 1]),
                            threshold=0.5).tolist() == [0, 1]
    assert suppress_rotated(np.stack([A, B]), np.array([0.9, 0.8]), np.array([0, 1]),
                            threshold=0.49).tolist() == [0]
    # iou 1/3 of A-B stays under 0.4; ios 0.5 does not
    assert suppress_rotated(np.stack([A, B]), np.array([0.9, 0.8]), np.array([0, 1]),
                            threshold=0.4, metric="iou").tolist() == [0, 1]
    assert suppress_rotated(np.stack([A, B]), np.array([0.9, 0.8]), np.array([0, 1]),
                            threshold=0.4).tolist() == [0]
    # equal scores: the first listed wins
    assert suppress_rotated(np.stack([A, B]), np.array([0.5, 0.5]), np.array([0, 1])
                            ).tolist() == [0]
    assert suppress_rotated(np.zeros((0, 4, 2)), np.zeros(0), np.zeros(0)).tolist() == []


def test_merge_dispatch_and_ownership():
    boxes = np.stack([A, B, C])
    scores, tiles = np.array([0.9, 0.8, 0.7]), np.array([0, 1, 0])
    assert merge(boxes, scores, tiles, "ownership").tolist() == [0, 1, 2]
    assert merge(boxes, scores, tiles, "ownership_nms").tolist() == [0, 2]
    assert merge(boxes, scores, tiles, "ownership_nms", threshold=0.6).tolist() == [0, 1, 2]
    assert merge(boxes, scores, tiles, "ownership_nms", threshold=0.4,
                 metric="iou").tolist() == [0, 1, 2]
    assert merge(boxes, scores, tiles, "ownership_nms", cross_tile_only=False,
                 threshold=0.45).tolist() == [0, 2]
    assert sorted(MERGERS) == ["ownership", "ownership_nms"]
    with pytest.raises(ValueError, match="unknown merge method 'nms'"):
        merge(boxes, scores, tiles, "nms")
    assert centres(np.stack([A, C])).tolist() == [[1.0, 1.0], [3.0, 1.0]]
    # 300 px wide, 128-px tiles overlapping 48: starts 0, 80, 160, 172; first cut at 104
    first = tile_grid(300, 100, 128, 48)[0]
    assert first.core[2] == 104.0
    boxes = np.stack([rect(100, 0, 107, 2), rect(101, 0, 109, 2)])  # centres 103.5, 105
    assert owned(boxes, first).tolist() == [True, False]
    assert owned(boxes, first, margin=1.5).tolist() == [True, True]
