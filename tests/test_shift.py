"""Shift alarm: the reference in the card, the score per scene, the table and the null case."""

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from detector.bundle import BUNDLED_WEIGHTS, read_card
from detector.config import compose
from detector.infer import run
from detector.infer.outputs import format_table
from detector.raster import open_raster, write_geotiff
from detector.shift import (
    NO_REFERENCE,
    alarm_fields,
    auroc,
    fit_alarm,
    fit_reference,
    output_signals,
    scene_score,
    shift_fields,
)
from detector.synth import write_scenes
from detector.train.recalibrate import recalibrate


def test_reference_scores_shifted_features_higher_and_needs_two_scenes():
    rng = np.random.default_rng(0)
    mix = rng.normal(size=(6, 32))

    def scene(shift: float = 0.0) -> np.ndarray:
        return rng.normal(size=(200, 6)) @ mix + rng.normal(0, 0.3, (200, 32)) + shift

    ref = fit_reference([scene() for _ in range(4)], layer=10, components=4, margin=1.25)
    assert ref["layer"] == 10 and len(ref["reference"]["loo_scores"]) == 4
    assert ref["threshold"] == pytest.approx(1.25 * max(ref["reference"]["loo_scores"]), abs=1e-3)
    inside = [scene_score(ref, scene()) for _ in range(5)]
    off = [scene_score(ref, scene(shift=1.5)) for _ in range(5)]
    assert auroc(inside, off) == 1.0
    assert all(s < ref["threshold"] for s in inside) and all(s > ref["threshold"] for s in off)
    assert fit_reference([scene()], layer=10) is None
    assert shift_fields(None, np.zeros((3, 32))) == {"shift": None, "shift_note": NO_REFERENCE}
    json.dumps(ref)  # goes into the card as is


def test_output_signals_and_the_rule_fire_on_trouble_only():
    rng = np.random.default_rng(1)

    def scene(sure: float, n: int = 60, area: float = 0.25, low: int | None = None):
        # ``sure``: share of candidates the model is confident about (p 0.9-1) vs unsure
        p = np.where(rng.random(n) < sure, rng.uniform(0.9, 1.0, n), rng.uniform(0.25, 0.7, n))
        p = np.concatenate([p, rng.uniform(0.0, 0.1, n if low is None else low)])  # low scores
        return p, p >= 0.5, area

    sig = output_signals(*scene(0.9))
    assert 0 <= sig["uncertain"] <= 0.3 and sig["top_p"] > 0.85 and sig["feature"] is None
    assert sig["faint"] == 0.5  # n low-score candidates beside n plausible ones
    assert output_signals(np.zeros(0), np.zeros(0, bool), 1.0)["top_p"] is None
    rows = [output_signals(*scene(0.9)) for _ in range(6)]
    rule = fit_alarm(rows, ["uncertain", "top_p", "log_density"], 3.0)
    assert rule["use"] == ["uncertain", "top_p", "log_density"]  # feature: never measured
    assert rule["reference"]["scenes"] == 6 and len(rule["reference"]["loo_scores"]) == 6
    json.dumps(rule)
    quiet = [alarm_fields(rule, None, *scene(0.9)) for _ in range(20)]
    assert sum(q["shift"]["alarm"] for q in quiet) <= 2
    assert all(q["interval_calibrated"] != q["shift"]["alarm"] for q in quiet)
    unsure = alarm_fields(rule, None, *scene(0.3))  # most candidates now uncertain
    assert unsure["shift"]["alarm"] and "uncertain" in unsure["shift"]["fired"]
    assert not unsure["interval_calibrated"] and "not calibrated" in unsure["interval_note"]
    crowded = alarm_fields(rule, None, *scene(0.9, n=600))  # ten times the candidates/km2
    assert crowded["shift"]["alarm"] and "log_density" in crowded["shift"]["fired"]
    # Half the candidates uncertain: noise in a scene of 6 candidates, trouble in one of 600.
    def half_unsure(n: int):
        p = np.repeat([0.5, 0.95], n // 2)
        return p, p >= 0.8, 0.25 * n / 120

    assert "uncertain" not in alarm_fields(rule, None, *half_unsure(6))["shift"]["fired"]
    assert "uncertain" in alarm_fields(rule, None, *half_unsure(600))["shift"]["fired"]
    faint_rule = fit_alarm(rows, ["faint"], 3.0)
    assert not alarm_fields(faint_rule, None, *scene(0.9))["shift"]["alarm"]
    fainter = alarm_fields(faint_rule, None, *scene(0.9, low=600))  # cars scored under 0.2
    assert fainter["shift"]["fired"].keys() == {"faint"}
    assert fit_alarm(rows[:1], ["uncertain"], 3.0) is None
    # The feature score past its own threshold alarms only for a model too blind to measure
    # the output signals, unless the rule watches it.
    unfamiliar = {"score": 9.0, "alarm": True, "threshold": 2.0}
    assert not alarm_fields(rule, unfamiliar, *scene(0.9))["shift"]["alarm"]
    blind = alarm_fields(rule, unfamiliar, np.array([0.1, 0.3]), np.zeros(2, bool), 0.25)
    assert blind["shift"]["alarm"] and not blind["shift"]["fired"]
    watched = fit_alarm([{**r, "feature": 1.0 + k / 10} for k, r in enumerate(rows)],
                        ["uncertain", "feature"], 3.0)
    assert alarm_fields(watched, unfamiliar, *scene(0.9))["shift"]["alarm"]
    # No rule (older cards): the feature entry passes through unchanged.
    old = {"score": 1.0, "alarm": False, "threshold": 2.0}
    assert alarm_fields(None, old, *scene(0.3)) == {"shift": old, "interval_calibrated": True}


def _restyle(src: Path, dst: Path) -> Path:
    """A strongly recoloured (inverted), blurred and noisy copy of a scene (same place and
    georef): far outside any training style, for any bundled model."""
    with open_raster(src) as s:
        data, transform, crs = s.read(), s.transform, s.crs
    data = 255 - data[[2, 0, 1]].astype(np.float32)  # colours rotated and inverted
    data = np.stack([cv2.GaussianBlur(b, (0, 0), 4.0) for b in data])
    data += np.random.default_rng(0).normal(0, 30, data.shape)  # heavy sensor noise
    write_geotiff(dst, np.clip(data, 0, 255).astype(np.uint8), transform, crs)
    return dst


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """The bundled model recalibrated (shift reference included) on three in-style scenes."""
    root = tmp_path_factory.mktemp("shift")
    scenes = root / "scenes"
    # One fixed look (classic), so "in style" is a narrow family the restyled copy leaves.
    write_scenes(compose("synth", [f"out={scenes}", "n_scenes=4", "seed=21", "size=[600,600]",
                                   "appearance=classic",
                                   "vehicles.min=20", "vehicles.max=40",
                                   "vehicles.empty_prob=0"]))
    cal = root / "cal"
    cal.mkdir()
    for k in range(3):
        for suffix in (".tif", ".geojson"):
            shutil.copy(scenes / f"scene_{k:03d}{suffix}", cal / f"scene_{k:03d}{suffix}")
    weights = root / "model.pt"
    shutil.copy(BUNDLED_WEIGHTS, weights)
    shutil.copy(BUNDLED_WEIGHTS.with_suffix(".json"), weights.with_suffix(".json"))
    recalibrate(weights, compose("recalibrate").calibration, scenes=cal)
    return weights, scenes / "scene_003.tif", root


def test_a_card_without_reference_gives_null_shift_with_a_note(calibrated, tmp_path):
    weights, scene, _ = calibrated
    bare = tmp_path / "bare.pt"  # the calibrated bundle with its shift reference removed
    shutil.copy(weights, bare)
    card = json.loads(weights.with_suffix(".json").read_text())
    card.pop("shift", None)
    bare.with_suffix(".json").write_text(json.dumps(card))
    [res] = run(scene, bare, out=tmp_path / "out", quicklook=False, progress=False)
    counts = json.loads(res.outputs["counts"].read_text())
    assert counts["shift"] is None and "recalibrate" in counts["shift_note"]
    assert "SHIFT" not in format_table([res], list(counts["classes"]))


def test_recalibration_records_a_reference_and_off_style_scenes_alarm(calibrated, tmp_path):
    weights, in_style, root = calibrated
    ref = read_card(weights).shift
    assert ref["reference"]["scenes"] == 3 and ref["threshold"] > 0
    off = _restyle(in_style, tmp_path / "restyled.tif")
    results = run([in_style, off], weights, out=tmp_path / "out", quicklook=False,
                  progress=False)
    shifts = [json.loads(r.outputs["counts"].read_text())["shift"] for r in results]
    assert shifts[1]["score"] > shifts[0]["score"]
    assert shifts[1]["feature_alarm"] and shifts[1]["score"] > ref["threshold"]
    # The output-signal rule: fitted at recalibration, in-style quiet, restyled alarmed.
    assert ref["alarm"]["reference"]["scenes"] == 3 and ref["alarm"]["use"]
    assert not shifts[0]["alarm"] and shifts[1]["alarm"], shifts
    counts = [json.loads(r.outputs["counts"].read_text()) for r in results]
    assert counts[0]["interval_calibrated"] and not counts[1]["interval_calibrated"]
    assert "not calibrated" in counts[1]["interval_note"]
    table = format_table(results, list(results[0].counts["classes"]))
    assert "SHIFT!" in table and "python -m detector.adapt" in table
    assert "NOT calibrated" in table
    alarmed = [line for line in table.splitlines() if "SHIFT!" in line]
    assert all("restyled.tif" in line for line in alarmed if line.startswith(("scene", "rest")))
