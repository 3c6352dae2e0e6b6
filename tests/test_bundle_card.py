"""The model card schema: one set of defaults, a version, one-line errors on read."""

import json

import pytest

from detector.bundle import (
    BUNDLED_WEIGHTS,
    CARD_VERSION,
    ModelCard,
    card_path,
    default_card,
    read_card,
    write_card,
)
from detector.errors import DetectorError

CLASSES = ["freight_car", "covered_car", "tank_car", "locomotive"]


def test_bundled_card_loads_with_taxonomy_and_every_default():
    card = read_card(BUNDLED_WEIGHTS)
    assert card.card_version == CARD_VERSION
    assert card.task == "obb" and card.classes == CLASSES
    assert card.not_wagons == ["locomotive"]
    assert card.wagon_classes == ["freight_car", "covered_car", "tank_car"]
    assert card.bands == card.normalization["bands"]
    assert card.threshold("tank_car") == card.operating_threshold["tank_car"]
    assert card.threshold("not_a_class") == card.operating_threshold["default"]


def test_a_version_1_card_without_new_fields_gets_the_defaults(tmp_path):
    weights = tmp_path / "m.pt"
    weights.write_bytes(b"weights")
    card_path(weights).write_text(json.dumps({"task": "detect", "classes": ["car", "loco"],
                                              "imgsz": 320}))
    card = read_card(weights)
    assert card.card_version == CARD_VERSION and card.not_wagons == []
    assert card.candidate_conf == ModelCard.model_fields["candidate_conf"].default
    assert card.nms.iou == 0.5 and card.nms.agnostic and card.calibration == {}
    assert card.shift is None and card.adapted_from is None and card.init is None


def test_written_card_round_trips_with_version_and_hash(tmp_path):
    weights = tmp_path / "m.pt"
    weights.write_bytes(b"weights")
    write_card(weights, default_card("obb", CLASSES, 512, shift={"threshold": 3.0},
                                     adapted_from={"weights": "base.pt"}, init="bundled"))
    raw = json.loads(card_path(weights).read_text())
    assert raw["card_version"] == CARD_VERSION and raw["weights"] == "m.pt"
    card = read_card(weights)
    assert card.shift == {"threshold": 3.0} and card.init == "bundled"
    assert card == ModelCard.from_dict(raw)


@pytest.mark.parametrize(("change", "message"), [
    (lambda c: c.pop("imgsz"), "field 'imgsz' is missing"),
    (lambda c: c.update(imgsz="big"), "field 'imgsz'"),
    (lambda c: c.update(tsak="obb"), "unknown field 'tsak'"),
    (lambda c: c.update(task="segment"), "field 'task'"),
    (lambda c: c.update(candidate_conf=2), "field 'candidate_conf'"),
    (lambda c: c.update(not_wagons=["engine"]), "not_wagons"),
    (lambda c: c.update(classes=["a", "a"]), "repeat"),
    (lambda c: c.update(normalization={"method": "histogram"}), "method 'histogram'"),
    (lambda c: c.update(operating_threshold={"freight_car": 1.5}), "operating_threshold"),
    (lambda c: c.update(card_version=CARD_VERSION + 1), "upgrade detector"),
])
def test_bad_cards_fail_on_read_with_one_line_naming_the_field(tmp_path, change, message):
    weights = tmp_path / "m.pt"
    weights.write_bytes(b"weights")
    data = {"task": "obb", "classes": CLASSES, "imgsz": 512}
    change(data)
    card_path(weights).write_text(json.dumps(data))
    with pytest.raises(DetectorError, match=message) as err:
        read_card(weights)
    assert "\n" not in str(err.value) and str(card_path(weights)) in str(err.value)


def test_design_doc_describes_every_card_field():
    """docs/design.md's card table lists exactly the schema's fields."""
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "design.md").read_text()
    section = doc.split("### Model bundle")[1].split("###")[0]
    documented = {line.split("`")[1] for line in section.splitlines()
                  if line.startswith("| `")}
    assert documented == set(ModelCard.model_fields)
