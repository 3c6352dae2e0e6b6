"""Evaluation metrics on planted detections: matching, AP, counting, confusion, duplicates."""

import re
from dataclasses import dataclass

import numpy as np
import pytest
from shapely.geometry import box

from detector.evaluate.confusion import confusion_matrix, covered_vs_others
from detector.evaluate.count_metrics import count_errors, summarize, truth_mask
from detector.evaluate.detection_metrics import average_precision, detection_metrics
from detector.evaluate.matching import (
    IGNORED,
    UNMATCHED,
    SceneMatches,
    duplicate_count,
    greedy_match,
    iou_matrix,
)
from detector.evaluate.plots import write_plots
from detector.evaluate.report import write_report
from detector.evaluate.scoring import SceneEval, build_report
from detector.geometry import obb_corners
from detector.labels import LabelledPolygon

CLASSES = ["freight_car", "covered_car", "tank_car", "locomotive"]


@dataclass
class Det:
    corners_px: np.ndarray
    cls: str
    score: float
    p: float
    tile: str = "r0c0"


def car(cx, cy, angle_deg=30.0, length=28.0, width=6.0):
    return obb_corners(cx, cy, length, width, np.deg2rad(angle_deg))


def string_of_cars(n, angle_deg, start=(60.0, 60.0), pitch=30.0):
    """Centres of a coupled string of cars along a diagonal track."""
    a = np.deg2rad(angle_deg)
    return [(start[0] + i * pitch * np.cos(a), start[1] + i * pitch * np.sin(a))
            for i in range(n)]


def test_iou_matrix_rotated_and_sparse():
    a = car(50, 50, 45)
    far = car(400, 400, 45)
    shifted = car(50 + 14 * np.cos(np.pi / 4), 50 + 14 * np.sin(np.pi / 4), 45)
    iou = iou_matrix([a, far], [a, shifted])
    assert iou[0, 0] == pytest.approx(1.0)
    assert iou[0, 1] == pytest.approx(1 / 3, abs=1e-6)  # half a car's length along its axis
    assert iou[1].tolist() == [0.0, 0.0]
    assert iou_matrix([], [a]).shape == (0, 1)


def test_greedy_match_by_score_and_class():
    iou = np.array([[0.9, 0.6], [0.8, 0.0], [0.55, 0.0]])
    # the higher-scoring det 1 takes truth 0 first; det 0 falls back to truth 1
    assert greedy_match(iou, np.array([0.5, 0.9, 0.3]), 0.5).tolist() == [1, 0, UNMATCHED]
    allowed = np.array([[True, False], [False, True], [True, True]])
    assert greedy_match(iou, np.array([0.5, 0.9, 0.3]), 0.5, allowed).tolist() == [
        0, UNMATCHED, UNMATCHED]
    ignore = np.array([True, False])
    assert greedy_match(iou, np.array([0.5, 0.9, 0.3]), 0.5, None, ignore).tolist() == [
        1, IGNORED, IGNORED]


def test_average_precision_known_values():
    assert average_precision(np.array([0.9, 0.8]), np.array([True, True]), 2) == pytest.approx(1)
    # one hit ranked below one miss: precision 0.5 over the whole recall range
    ap = average_precision(np.array([0.9, 0.8]), np.array([False, True]), 1)
    assert ap == pytest.approx(0.5)
    # half the truth never found: AP covers recall 0..0.5 only
    assert average_precision(np.array([0.9]), np.array([True]), 2) == pytest.approx(51 / 101)
    assert average_precision(np.zeros(0), np.zeros(0, bool), 0) is None


def _scene_matches(det_corners, det_cls, scores, truth_corners, truth_cls, ignore=None):
    return SceneMatches(iou_matrix(det_corners, truth_corners), np.asarray(scores, float),
                        np.array(det_cls, dtype=object), np.array(truth_cls, dtype=object),
                        np.zeros(len(truth_corners), bool) if ignore is None else ignore)


def test_detection_metrics_precision_recall_f1_and_map():
    truth = [car(x, y) for x, y in string_of_cars(4, 30)]
    dets = [truth[0], truth[1], truth[2], car(300, 40)]  # 3 hits, 1 false, 1 car missed
    m = _scene_matches(dets, ["freight_car"] * 4, [0.9, 0.8, 0.3, 0.7], truth,
                       ["freight_car"] * 4)
    out = detection_metrics([m], CLASSES, operating_threshold=0.5)
    fc = out["classes"]["freight_car"]
    # at threshold 0.5: dets 0, 1 (hits) and 3 (false); det 2 (a hit) is below it
    assert (fc["tp"], fc["fp"], fc["fn"]) == (2, 1, 2)
    assert fc["precision"] == pytest.approx(2 / 3) and fc["recall"] == pytest.approx(0.5)
    assert fc["f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 2))
    assert out["classes"]["tank_car"]["ap50"] is None  # no truth: excluded from the mean
    assert out["map50"] == pytest.approx(fc["ap50"])
    assert 0 < fc["ap50_95"] <= fc["ap50"] < 1
    per_class = detection_metrics([m], CLASSES, {"freight_car": 0.2})["classes"]["freight_car"]
    assert per_class["tp"] == 3


def test_wrong_class_is_a_false_positive_for_that_class():
    truth = [car(60, 60), car(200, 60)]
    m = _scene_matches(truth, ["freight_car", "freight_car"], [0.9, 0.9], truth,
                       ["freight_car", "covered_car"])
    out = detection_metrics([m], CLASSES, 0.5)["classes"]
    assert (out["freight_car"]["tp"], out["freight_car"]["fp"]) == (1, 1)
    assert (out["covered_car"]["tp"], out["covered_car"]["fn"]) == (0, 1)
    assert out["covered_car"]["f1"] == 0.0


def test_truth_mask_half_inside_and_aoi():
    inside, half_out, mostly_out = car(50, 50, 0), car(100, 50, 0), car(105, 50, 0)
    assert truth_mask([inside, half_out, mostly_out], 100, 100).tolist() == [True, True, False]
    aoi = box(0, 0, 60, 100)
    assert truth_mask([inside, half_out], 100, 100, aoi).tolist() == [True, False]


def test_count_rows_and_summary():
    counts = {"classes": {"freight_car": {"count": 9, "expected": 9.4, "ci95": [8, 11]},
                          "covered_car": {"count": 5, "expected": 5.1, "ci95": [4, 6]}},
              "wagons": {"count": 14, "expected": 14.5, "ci95": [12, 16]}}
    row = count_errors(counts, {"freight_car": 10, "covered_car": 7, "locomotive": 1},
                       CLASSES)
    assert row["wagons"] == {"truth": 17, "count": 14, "error": -3, "expected": 14.5,
                             "ci95": [12, 16], "covered": False}
    assert row["classes"]["freight_car"]["covered"] is True
    assert row["classes"]["locomotive"]["count"] == 0  # absent from counts: nothing found
    rows = [{"truth": 10, "error": -1, "ci95": [8, 12], "covered": True},
            {"truth": 20, "error": 3, "ci95": [18, 22], "covered": False},
            {"truth": 0, "error": 1, "ci95": [0, 2], "covered": True}]
    s = summarize(rows)
    assert s["mae"] == pytest.approx(5 / 3)
    assert s["mape"] == pytest.approx((0.1 + 0.15) / 2 * 100)  # truth-0 scene skipped
    assert s["wape"] == pytest.approx(5 / 30 * 100)
    assert s["bias"] == pytest.approx(1.0)
    assert s["rmse"] == pytest.approx(np.sqrt(11 / 3))
    assert s["coverage"] == pytest.approx(2 / 3)
    assert s["mean_width"] == pytest.approx(4 - 2 / 3)


def test_seam_duplicates_count_extra_detections_on_one_car():
    truth = [car(60, 60), car(120, 60)]
    dets = [truth[0], truth[0] + 0.5, truth[0] - 0.5, truth[1]]
    assert duplicate_count(iou_matrix(dets, truth)) == 2
    assert duplicate_count(iou_matrix(dets[::3], truth)) == 0


def test_confusion_covered_vs_others():
    truth = [car(60, 60), car(120, 60), car(180, 60), car(240, 60)]
    tcls = ["covered_car", "covered_car", "freight_car", "freight_car"]
    dets = [truth[0], truth[1], truth[2], car(400, 400)]
    dcls = ["covered_car", "freight_car", "covered_car", "covered_car"]
    m = _scene_matches(dets, dcls, [0.9] * 4, truth, tcls)
    conf = confusion_matrix([m], [np.ones(4, bool)], CLASSES)
    mat = dict(zip(conf["rows"], conf["matrix"], strict=True))
    assert mat["covered_car"][:2] == [1, 1] and mat["freight_car"][:2] == [0, 1]
    assert mat["freight_car"][-1] == 1  # one freight car missed
    assert mat["background"][1] == 1
    cov = covered_vs_others(conf)
    assert cov["covered_as_covered"] == 1 and cov["covered_as_other"] == 1
    assert cov["other_as_covered"] == 1 and cov["background_as_covered"] == 1
    assert cov["precision"] == pytest.approx(1 / 3) and cov["recall"] == pytest.approx(1 / 2)


def _planted_scene(name, angle, n, rng, dup=False):
    centres = string_of_cars(n, angle)
    truth = [LabelledPolygon(car(x, y, angle), "covered_car" if i % 3 == 0 else "freight_car")
             for i, (x, y) in enumerate(centres)]
    dets = [Det(t.corners + rng.normal(0, 0.3, (4, 2)), t.cls, 0.9, 0.9) for t in truth[:-1]]
    dets.append(Det(car(500, 20, 0), "freight_car", 0.2, 0.1))  # low-score false candidate
    if dup:
        dets.append(Det(truth[0].corners + 0.7, truth[0].cls, 0.8, 0.8))
    counted = [d for d in dets if d.score >= 0.5]
    counts = {"classes": {c: {"count": sum(d.cls == c for d in counted), "expected": 0.0,
                              "ci95": [sum(d.cls == c for d in counted) - 1,
                                       sum(d.cls == c for d in counted) + 1]}
                          for c in CLASSES},
              "wagons": {"count": len(counted), "expected": float(len(counted)),
                         "ci95": [len(counted) - 1, len(counted) + 2]}}
    return SceneEval(name, dets, counts, truth, 600, 400)


def test_build_report_end_to_end_and_outputs(tmp_path):
    rng = np.random.default_rng(0)
    scenes = [_planted_scene("a", 30, 8, rng), _planted_scene("b", 45, 6, rng, dup=True)]
    report = build_report(scenes, CLASSES, 0.5)
    wagons = report["counting"]["wagons"]
    assert [r["wagons"]["truth"] for r in report["scenes"]] == [8, 6]
    assert [r["wagons"]["error"] for r in report["scenes"]] == [-1, 0]
    assert wagons["mae"] == pytest.approx(0.5)
    assert report["seam_duplicates"]["total"] == 1
    assert report["detection"]["classes"]["freight_car"]["recall"] < 1
    assert report["confusion"]["covered_vs_others"]["covered_as_other"] == 0
    report["plots"] = write_plots(report, tmp_path)
    paths = write_report(report, tmp_path)
    md = paths["md"].read_text()
    assert re.search(r"\| \*\*wagons\*\* +\|", md) and "covered_car" in md
    assert all((tmp_path / f).stat().st_size > 1000 for f in report["plots"].values())


def test_aoi_drops_detections_and_truth_outside():
    rng = np.random.default_rng(1)
    scene = _planted_scene("a", 0, 8, rng)
    scene.aoi = box(0, 0, 140, 400)  # holds the first 3 car centres (x = 60, 90, 120)
    report = build_report([scene], CLASSES, 0.5)
    assert report["scenes"][0]["wagons"]["truth"] == 3
    assert report["detection"]["classes"]["freight_car"]["fp"] == 0


def test_axis_aligned_matching_for_detect_models():
    truth = [LabelledPolygon(car(60, 60, 45), "freight_car")]
    xs, ys = truth[0].corners[:, 0], truth[0].corners[:, 1]
    aabb = np.array([[xs.min(), ys.min()], [xs.max(), ys.min()], [xs.max(), ys.max()],
                     [xs.min(), ys.max()]])
    counts = {"classes": {"freight_car": {"count": 1, "ci95": [1, 1]}},
              "wagons": {"count": 1, "ci95": [1, 1]}}
    scene = SceneEval("d", [Det(aabb, "freight_car", 0.9, 0.9)], counts, truth, 200, 200)
    rotated = build_report([scene], CLASSES, 0.5)["detection"]["classes"]["freight_car"]
    aligned = build_report([scene], CLASSES, 0.5, axis_aligned=True)
    assert rotated["tp"] == 0  # a 45° car fills little of its axis-aligned box
    assert aligned["detection"]["classes"]["freight_car"]["tp"] == 1
    assert aligned["matching"]["geometry"] == "axis-aligned"
