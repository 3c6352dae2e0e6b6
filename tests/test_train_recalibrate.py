"""Recalibrating a bundle on whole labelled scenes rewrites its card's calibration fields."""

import pytest

from detector.bundle import read_card
from detector.config import compose
from detector.errors import DetectorError
from detector.labels import read_geojson
from detector.synth import write_scenes
from detector.train.recalibrate import recalibrate
from tests.helpers import save_untrained


def test_recalibrate_on_scenes_updates_the_card(tmp_path):
    weights = save_untrained(tmp_path / "tiny.pt")
    scenes = tmp_path / "scenes"
    write_scenes(compose("synth", [f"out={scenes}", "n_scenes=1", "seed=3", "size=[300,300]",
                                   "vehicles.min=15", "vehicles.max=25",
                                   "vehicles.empty_prob=0"]))
    cal_cfg = compose("recalibrate").calibration
    card = recalibrate(weights, cal_cfg, scenes=scenes)
    assert card == read_card(weights)  # written beside the weights, sha256 still matching
    assert card.metrics["calibrated_on"]["level"] == "scenes"
    assert card.metrics["calibrated_on"]["scenes"] == 1
    assert card.nms.model_dump() == {"iou": cal_cfg.nms.iou, "agnostic": cal_cfg.nms.agnostic}
    truth, _ = read_geojson(scenes / "scene_000.geojson")
    totals = sum(total for _, total in card.recall_counts.values())
    assert 0 < totals <= len(truth)  # cars mostly outside the scene are not required


def test_recalibrate_needs_something_to_calibrate_on(tmp_path):
    weights = save_untrained(tmp_path / "tiny.pt")
    with pytest.raises(DetectorError, match="nothing to calibrate on"):
        recalibrate(weights, compose("recalibrate").calibration)
