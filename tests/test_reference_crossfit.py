"""Cross-fitted recalibration on a stand-in detector that finds something, so the held-out
before/after figures differ, and a fold calibrated on itself would show.

Four labelled scenes of 10 freight cars; the stand-in finds 8 of them and adds 3 false
alarms per scene. In fold 0 the true cars score 0.3 and the false alarms 0.1; in fold 1
the true cars score 0.6 and the false alarms 0.3. A calibration fitted on fold 1 calls a
score of 0.3 false, one fitted on fold 0 calls it true: honest held-out figures undercount
fold 0 and overcount fold 1, and only a leak (a fold calibrated on itself) would make both
right.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from detector.adapt.choice import BASE, FINETUNED, RECALIBRATED, format_candidates
from detector.adapt.crossfit import (
    FoldRun,
    calibration_card,
    headline,
    held_out_after,
    pooled_candidates,
    recount,
)
from detector.adapt.inputs import AdaptScene
from detector.geometry import obb_corners
from detector.infer.results import Detection, SceneResult
from detector.labels import LabelledPolygon
from tests.test_data_build import CLASSES, make_scene

ROOT = Path(__file__).resolve().parents[1]
CAL = OmegaConf.load(ROOT / "conf" / "calibration" / "default.yaml")
NOT_WAGONS = ["locomotive"]
# car centres on a grid (pixels of a 300 x 300 scene at 0.5 m/px: 28 x 6 px cars)
CARS = [(50 + 60 * (k % 4), 40 + 50 * (k // 4)) for k in range(10)]
ALARMS = [(50, 270), (150, 270), (250, 270)]  # empty ground


def det(cx: float, cy: float, score: float) -> Detection:
    px = obb_corners(cx, cy, 28, 6, 0.0)
    return Detection(px, px, "freight_car", score, score, "r0c0")


@pytest.fixture(scope="module")
def folds(tmp_path_factory) -> list[FoldRun]:
    root = tmp_path_factory.mktemp("crossfit")
    runs = []
    for fold, (true_score, alarm_score) in enumerate([(0.3, 0.1), (0.6, 0.3)]):
        scenes, results = [], []
        for k in range(2):
            name = f"scene_{fold}{k}"
            cars = [LabelledPolygon(obb_corners(x, y, 28, 6, 0.0), "freight_car")
                    for x, y in CARS]
            image = make_scene(root / f"{name}.tif", cars, seed=fold * 2 + k)
            scenes.append(AdaptScene(name, image, image.with_suffix(".geojson"), 10))
            dets = [det(x + 0.3, y - 0.2, true_score) for x, y in CARS[:8]]  # 2 missed
            dets += [det(x, y, alarm_score) for x, y in ALARMS]
            results.append(SceneResult(image, True, detections=dets))
        runs.append(FoldRun(fold, scenes, results, trained_on=[f"other_{fold}"]))
    return runs


def test_pooled_candidates_leave_the_excluded_fold_out(folds):
    cands, used = pooled_candidates(folds, CLASSES, CAL, exclude=0)
    assert used == ["scene_10", "scene_11"]
    assert cands.scores.size == 22 and cands.correct.sum() == 16
    assert sorted(set(cands.scores[cands.correct].tolist())) == [0.6]
    assert cands.n_truth.tolist() == [20, 0, 0, 0] and cands.truth_found.tolist()[0] == 16
    assert sorted(set(cands.image.tolist())) == [0, 1]
    every, used = pooled_candidates(folds, CLASSES, CAL)
    assert len(used) == 4 and every.scores.size == 44 and every.n_truth[0] == 40


def test_calibration_from_the_other_fold_is_what_that_fold_teaches(folds):
    cands, _ = pooled_candidates(folds, CLASSES, CAL, exclude=0)
    fields, cal = calibration_card(cands, CLASSES, CAL, NOT_WAGONS)
    assert fields["recall_counts"]["freight_car"] == [16, 20]
    assert fields["recall_at_candidate_conf"]["freight_car"] == 0.8
    cmap = fields["calibration"]["freight_car"]
    from detector.calibration import apply
    # fold 1: everything at 0.6 is a car, everything at 0.3 is not (clipped at 0.5 / 22)
    assert apply(cmap, np.array([0.3, 0.6])).tolist() == pytest.approx([0.5 / 22, 1 - 0.5 / 22],
                                                                       abs=1e-4)
    assert set(fields["dispersion"]) == {*CLASSES, "wagons", "vehicles"}
    assert cal["n_candidates"] == 22


def test_held_out_figures_use_the_other_folds_only(folds):
    reports, provenance = held_out_after(folds, CLASSES, CAL, NOT_WAGONS)
    assert [p["calibrated_on"] for p in provenance] == [["scene_10", "scene_11"]] * 2 + [
        ["scene_00", "scene_01"]] * 2
    assert [p["model_trained_on"] for p in provenance] == [["other_0"]] * 2 + [["other_1"]] * 2
    for fold, rep in enumerate(reports):
        assert [r["scene"] for r in rep["scenes"]] == [f"scene_{fold}0", f"scene_{fold}1"]
        for row in rep["scenes"]:
            assert row["wagons"]["truth"] == 10
            # 11 candidates each, all with p = 0.5 / 22 (fold 0, calibrated on fold 1) or
            # 1 - 0.5 / 22 (fold 1, calibrated on fold 0), thinned by a recall seen as 16 of
            # 20 (posterior mean of (1 - r) / r: 5 / 16): far from 10 on both sides, where
            # a fold calibrated on itself would expect about 10.
            p = 0.5 / 22 if fold == 0 else 1 - 0.5 / 22
            assert row["wagons"]["expected"] == pytest.approx(11 * p * (1 + 5 / 16), abs=0.4)
            assert row["wagons"]["covered"] is (fold == 1)  # 0..2 misses 10; 1's is wide
    after = headline(reports, CLASSES)
    assert after["scenes"] == 4 and after["wagons"] == 40
    assert after["coverage"] == 0.5


def test_before_and_after_differ_on_a_detector_that_finds_cars(folds):
    """Before: the base's identity calibration and its 0.5 threshold. After: recounted
    with a calibration fitted on all held-out scores (as the adapted card is)."""
    from detector.adapt.crossfit import report
    base = {"calibration": {}, "operating_threshold": 0.5}
    before_reports, after_reports = [], []
    every, _ = pooled_candidates(folds, CLASSES, CAL)
    fields, _ = calibration_card(every, CLASSES, CAL, NOT_WAGONS)
    for run in folds:
        results = [SceneResult(r.scene, True, detections=r.detections,
                               counts=recount(r.detections, base, CLASSES, NOT_WAGONS)[1])
                   for r in run.results]
        before_reports.append(report(run.scenes, results, CLASSES, 0.5, NOT_WAGONS))
        recounted = [SceneResult(r.scene, True, detections=d, counts=c)
                     for r in run.results
                     for d, c in [recount(r.detections, fields, CLASSES, NOT_WAGONS)]]
        after_reports.append(report(run.scenes, recounted, CLASSES,
                                    fields["operating_threshold"], NOT_WAGONS))
    before, after = headline(before_reports, CLASSES), headline(after_reports, CLASSES)
    # before: counted at 0.5 -> fold 0 counts nothing, fold 1 its 8 cars: errors
    # -10, -10, -2, -2 -> MAE 6, MAPE 60 %, bias -6
    assert (before["wagon_mae"], before["wagon_mape"], before["wagon_bias"]) == (6.0, 60.0, -6.0)
    # after: the count rule keeps as many as there are truths (40 of 44 candidates: 16 at
    # 0.6, 22 at 0.3, then 6 at 0.1), so the threshold is 0.1 and all 11 count: +1 each
    # -> MAE 1, MAPE 10 %, bias +1
    assert (after["wagon_mae"], after["wagon_mape"], after["wagon_bias"]) == (1.0, 10.0, 1.0)
    assert after["f1"] != before["f1"] and after["ece"] != before["ece"]
    table = format_candidates({BASE: before, RECALIBRATED: after}, RECALIBRATED, "base.pt")
    assert "| base (base.pt) | 60.0 | -6.000 |" in table
    assert "| **base recalibrated** (shipped) | 10.0 | 1.000 |" in table


def test_recount_applies_the_fields_by_hand():
    dets = [det(50, 50, 0.5), det(150, 50, 0.25), det(250, 50, 0.9)]
    dets[2] = Detection(dets[2].corners_px, dets[2].corners_map, "locomotive", 0.9, 0.9, "r0c0")
    fields = {"calibration": {"freight_car": {"method": "isotonic", "x": [0.0, 1.0],
                                              "y": [0.2, 1.0]}},
              "operating_threshold": {"freight_car": 0.3, "default": 0.95}}
    out, counts = recount(dets, fields, CLASSES, NOT_WAGONS)
    # p = 0.2 + 0.8 * score: 0.6 and 0.4; the locomotive keeps its score (identity)
    assert [d.p for d in out] == pytest.approx([0.6, 0.4, 0.9])
    assert counts["classes"]["freight_car"]["count"] == 1          # 0.5 >= 0.3
    assert counts["classes"]["freight_car"]["expected"] == pytest.approx(1.0)
    assert counts["classes"]["locomotive"]["count"] == 0           # 0.9 < 0.95
    assert counts["wagons"]["count"] == 1 and counts["wagons"]["expected"] == pytest.approx(1.0)
    fields["recall_at_candidate_conf"] = {"freight_car": 0.5}
    _, counts = recount(dets, fields, CLASSES, NOT_WAGONS)
    assert counts["classes"]["freight_car"]["expected"] == pytest.approx(2.0, abs=1e-3)


def test_headline_and_table_by_hand():
    def rep(rows, tp, fp, fn, n, ece):
        return {"scenes": rows,
                "detection": {"classes": {"covered_car": {"tp": tp, "fp": fp, "fn": fn},
                                          "freight_car": {"tp": 1, "fp": 0, "fn": 1}}},
                "calibration": {"n": n, "ece": ece}}

    def row(truth, count, lo, hi):
        r = {"truth": truth, "count": count, "error": count - truth, "expected": count,
             "ci95": [lo, hi], "covered": lo <= truth <= hi}
        return {"wagons": r, "classes": {c: r for c in CLASSES}}

    reports = [rep([row(10, 12, 9, 14)], 3, 1, 2, 10, 0.1),
               rep([row(20, 15, 14, 18)], 1, 0, 0, 30, 0.3)]
    h = headline(reports, CLASSES)
    # covered_car: tp 4, fp 1, fn 2 -> 8 / 11; all: tp 6, fp 1, fn 4 -> 12 / 17
    # ECE weighted by n: (0.1 * 10 + 0.3 * 30) / 40 = 0.25
    assert h == {"scenes": 2, "wagons": 30, "wagon_mae": 3.5, "wagon_mape": 22.5,
                 "wagon_bias": -1.5, "coverage": 0.5, "width": 4.5,
                 "covered_f1": round(8 / 11, 4), "f1": round(12 / 17, 4), "ece": 0.25}
    empty = headline([rep([], 0, 0, 0, 0, 0.0)], ["tank_car"])
    assert empty["f1"] is None and empty["ece"] is None and empty["wagon_mae"] is None
    table = format_candidates({BASE: h, FINETUNED: {**h, "wagon_mape": 9.5, "covered_f1": None}},
                              BASE, "v0.2")
    lines = table.splitlines()
    assert lines[0] == ("| model | wagon MAPE % | bias | 95% coverage | interval width | "
                        "covered_car F1 | F1 (all) | ECE |")
    assert lines[2] == ("| **base (v0.2)** (shipped) | 22.5 | -1.500 | 0.500 | 4.500 | 0.727 | "
                        "0.706 | 0.250 |")
    assert lines[3] == ("| fine-tuned recalibrated | 9.5 | -1.500 | 0.500 | 4.500 | – | "
                        "0.706 | 0.250 |")
