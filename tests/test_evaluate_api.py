"""``detector.evaluate``: finding labelled scenes, the evaluate() flow and the command line."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import detector.infer
from detector.bundle import default_card
from detector.config import compose
from detector.errors import DetectorError
from detector.evaluate import api
from detector.evaluate.scenes import find_scenes, load_scene
from detector.geometry import obb_corners, pixel_to_map
from detector.infer.results import Detection, SceneResult
from detector.labels import LabelledPolygon, write_geojson
from detector.raster import write_geotiff
from tests.helpers import CLASSES, TRANSFORM, UTM, save_untrained


def _cars(n, y=60.0):
    return [obb_corners(40 + 32 * i, y, 28, 6, 0.0) for i in range(n)]


def make_scene(folder: Path, name: str, n_cars: int, size=(320, 160)) -> Path:
    """A tiny UTM GeoTIFF with ``n_cars`` labelled cars (every third one covered)."""
    image = folder / f"{name}.tif"
    pixels = np.random.default_rng(len(name)).integers(60, 120, (3, size[1], size[0]), np.uint8)
    write_geotiff(image, pixels, TRANSFORM, UTM)
    labels = [LabelledPolygon(pixel_to_map(c, TRANSFORM),
                              "covered_car" if i % 3 == 0 else "freight_car")
              for i, c in enumerate(_cars(n_cars))]
    write_geojson(image.with_suffix(".geojson"), labels, UTM)
    return image


def test_find_scenes_pairs_single_and_missing_labels(tmp_path):
    a = make_scene(tmp_path, "a", 2)
    make_scene(tmp_path, "b", 3)
    assert [p[0].name for p in find_scenes(tmp_path)] == ["a.tif", "b.tif"]
    assert find_scenes(a) == [(a, a.with_suffix(".geojson"))]
    a.with_suffix(".geojson").unlink()
    with pytest.raises(DetectorError, match=r"a\.tif: no labels beside it"):
        find_scenes(tmp_path)
    with pytest.raises(DetectorError, match="no such file"):
        find_scenes(tmp_path / "nope")


def test_find_scenes_dataset_test_split(tmp_path):
    a, b = make_scene(tmp_path, "a", 2), make_scene(tmp_path, "b", 2)
    info = {"scenes": [{"image": str(a), "labels": str(a.with_suffix(".geojson")),
                        "split": "train"},
                       {"image": "b.tif", "labels": "b.geojson", "split": "test"}]}
    (tmp_path / "dataset.json").write_text(json.dumps(info))
    assert find_scenes(tmp_path / "dataset.json") == [(b, b.with_suffix(".geojson"))]
    with pytest.raises(DetectorError, match="no GeoTIFF"):
        find_scenes(tmp_path / "dataset.json", split="val")


def test_load_scene_truth_in_pixels(tmp_path):
    scene = load_scene(make_scene(tmp_path, "a", 4), tmp_path / "a.geojson", CLASSES)
    assert (scene.width, scene.height) == (320, 160)
    assert np.allclose(scene.truth[1].corners, _cars(4)[1], atol=0.01)


def _fake_run(missed: int, extra: int):
    """An inference stand-in: finds every labelled car but ``missed``, adds ``extra`` fakes."""
    def run(source, weights=None, **overrides):
        results = []
        for line in source:
            image = Path(line)
            truth = json.loads(image.with_suffix(".geojson").read_text())["features"]
            n = len(truth) - missed
            corners = _cars(n) + _cars(extra, y=130.0)
            dets = [Detection(c, pixel_to_map(c, TRANSFORM), "freight_car", 0.9, 0.9, "r0c0")
                    for c in corners]
            counts = {"classes": {"freight_car": {"count": len(dets), "expected": len(dets),
                                                  "ci95": [len(dets) - 1, len(dets) + 1]}},
                      "wagons": {"count": len(dets), "expected": len(dets),
                                 "ci95": [len(dets) - 1, len(dets) + 1]}}
            results.append(SceneResult(image, True, None, dets, counts, {}))
        results.append(SceneResult(Path("/elsewhere.tif"), False, "never asked for"))
        return results
    return run


def _cfg(tmp_path, *extra):
    return compose("evaluate", [f"source={tmp_path / 'scenes'}", f"out={tmp_path / 'out'}",
                                *extra])


def test_evaluate_writes_report_and_plots(tmp_path, monkeypatch):
    (tmp_path / "scenes").mkdir()
    make_scene(tmp_path / "scenes", "a", 6)
    make_scene(tmp_path / "scenes", "b", 4)
    card = default_card("obb", CLASSES, 128, operating_threshold=0.5, sha256="x")
    monkeypatch.setattr(api, "model_card", lambda w: (Path("m.pt"), card))
    monkeypatch.setattr(detector.infer, "run", _fake_run(missed=1, extra=1), raising=False)
    report = api.evaluate(_cfg(tmp_path))
    out = tmp_path / "out"
    saved = json.loads((out / "report.json").read_text())
    assert saved["counting"]["wagons"]["mae"] == pytest.approx(0.0)  # 1 missed + 1 false
    assert [r["wagons"]["truth"] for r in saved["scenes"]] == [6, 4]
    fc = saved["detection"]["classes"]["freight_car"]
    # a: freight cars 1, 2, 4 found, 5 missed; b: 1, 2 found. False: the extra car of each
    # scene and the covered cars detected as freight cars (a: 0, 3; b: 0).
    assert (fc["tp"], fc["fp"], fc["fn"]) == (5, 5, 1)
    assert saved["confusion"]["covered_vs_others"]["covered_as_other"] == 3
    assert {"mae", "mape", "bias", "rmse", "coverage", "mean_width"} <= set(
        saved["counting"]["classes"]["covered_car"])
    assert re.search(r"\| \*\*wagons\*\* +\|", (out / "report.md").read_text())
    for name in report["plots"].values():
        assert (out / name).stat().st_size > 1000
    assert not list(out.glob(".*partial*"))


def test_evaluate_fails_cleanly_when_every_scene_fails(tmp_path, monkeypatch):
    (tmp_path / "scenes").mkdir()
    make_scene(tmp_path / "scenes", "a", 2)
    card = default_card("obb", CLASSES, 128, operating_threshold=0.5)
    monkeypatch.setattr(api, "model_card", lambda w: (Path("m.pt"), card))
    monkeypatch.setattr(detector.infer, "run", lambda *a, **k: [], raising=False)
    with pytest.raises(DetectorError, match="inference failed on every scene"):
        api.evaluate(_cfg(tmp_path))
    assert not (tmp_path / "out" / "report.json").exists()


def test_unknown_label_class_is_one_clear_error(tmp_path, monkeypatch):
    (tmp_path / "scenes").mkdir()
    image = make_scene(tmp_path / "scenes", "a", 2)
    write_geojson(image.with_suffix(".geojson"),
                  [LabelledPolygon(pixel_to_map(_cars(1)[0], TRANSFORM), "bus")], UTM)
    card = default_card("obb", CLASSES, 128)
    monkeypatch.setattr(api, "model_card", lambda w: (Path("m.pt"), card))
    with pytest.raises(DetectorError, match="unknown class 'bus'"):
        api.evaluate(_cfg(tmp_path, "class_agnostic=false"))


def test_flatten_infer_overrides():
    assert api.flatten({"tiling": {"overlap_m": 20}, "merge": {"method": "ownership"}}) == {
        "tiling.overlap_m": 20, "merge.method": "ownership"}


@pytest.mark.parametrize(("override", "key"), [("+infer.merge=nms", "merge"),
                                                ("+infer.merge.method=nms", "merge.method"),
                                                ("+infer.tiling.overlap=20", "tiling.overlap"),
                                                ("iou=0", "iou")])
def test_bad_infer_overrides_fail_before_any_inference(tmp_path, monkeypatch, override, key):
    (tmp_path / "scenes").mkdir()
    make_scene(tmp_path / "scenes", "a", 2)
    monkeypatch.setattr(detector.infer, "run", lambda *a, **k: pytest.fail("ran"),
                        raising=False)
    with pytest.raises(DetectorError, match=rf"^{key}[=:]"):
        api.evaluate(_cfg(tmp_path, override))


def test_documented_infer_override_examples_are_valid(tmp_path):
    """The examples in conf/evaluate.yaml's comment compose and pass the checks."""
    from detector.config import CONFIG_MODULE
    from detector.infer.api import config
    from detector.validation import check_config

    text = (Path(__import__(CONFIG_MODULE, fromlist=["x"]).__path__[0]) / "evaluate.yaml"
            ).read_text()
    examples = [w for w in text.split() if w.startswith("+infer.")]
    assert examples
    for example in examples:
        cfg = compose("evaluate", [example])
        check_config(config(**api.infer_overrides(cfg, tmp_path)), "infer")


def test_cli_bad_source_exits_2_with_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "detector.evaluate",
                           f"source={tmp_path / 'missing'}", f"out={tmp_path / 'out'}"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "missing" in proc.stderr and not (tmp_path / "out").exists()


def test_evaluate_end_to_end_with_a_real_model(tmp_path):
    """The real pipeline on an untrained model: the figures are poor, the report complete."""
    (tmp_path / "scenes").mkdir()
    make_scene(tmp_path / "scenes", "a", 6)
    make_scene(tmp_path / "scenes", "b", 3)
    weights = save_untrained(tmp_path / "untrained.pt", candidate_conf=0.001,
                             operating_threshold=0.002, calibration={})
    report = api.evaluate(_cfg(tmp_path, f"weights={weights}", "+infer.progress=false",
                               "+infer.device=cpu", "+infer.backend=torch"))
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["n_scenes"] == 2 and not saved["failed"]
    assert [r["wagons"]["truth"] for r in saved["scenes"]] == [6, 3]
    assert saved["model"]["path"] == str(weights)
    counts = json.loads((tmp_path / "out" / "predictions" / "a.counts.json").read_text())
    assert saved["scenes"][0]["wagons"]["count"] == counts["wagons"]["count"]
    assert {"map50", "map50_95", "classes"} <= set(saved["detection"])
    assert set(report["plots"]) == {"counts", "reliability", "pr_curves"}


def test_same_file_name_in_subfolders_gets_distinct_report_names(tmp_path, monkeypatch):
    for year, n in (("2023", 3), ("2024", 5)):
        (tmp_path / "scenes" / year).mkdir(parents=True)
        make_scene(tmp_path / "scenes" / year, "site", n)
    card = default_card("obb", CLASSES, 128, operating_threshold=0.5, sha256="x")
    monkeypatch.setattr(api, "model_card", lambda w: (Path("m.pt"), card))
    monkeypatch.setattr(detector.infer, "run", _fake_run(missed=0, extra=0), raising=False)
    api.evaluate(_cfg(tmp_path, "plots=false"))
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [(r["scene"], r["wagons"]["truth"]) for r in saved["scenes"]] == [
        ("2023__site", 3), ("2024__site", 5)]


def test_labels_of_a_class_the_model_lacks_are_scored_class_agnostically(tmp_path, monkeypatch):
    # A real scene labelled `railcar` (every rail vehicle): 6 truths; the stand-in finds 5 of
    # them (as freight_car, counted at 0.9 >= 0.5) and 1 false car -> TP 5, FP 1, FN 1.
    (tmp_path / "scenes").mkdir()
    image = make_scene(tmp_path / "scenes", "real", 6)
    write_geojson(image.with_suffix(".geojson"),
                  [LabelledPolygon(pixel_to_map(c, TRANSFORM), "railcar") for c in _cars(6)],
                  UTM)
    card = default_card("obb", CLASSES, 128, operating_threshold=0.5, sha256="x")
    monkeypatch.setattr(api, "model_card", lambda w: (Path("m.pt"), card))
    monkeypatch.setattr(detector.infer, "run", _fake_run(missed=1, extra=1), raising=False)
    report = api.evaluate(_cfg(tmp_path, "iou=0.3"))
    agn = report["class_agnostic"]
    assert report["label_classes"] == ["railcar"]
    assert (agn["tp"], agn["fp"], agn["fn"], agn["truth"]) == (5, 1, 1, 6)
    assert agn["precision"] == pytest.approx(5 / 6) and agn["recall"] == pytest.approx(5 / 6)
    # AP over the candidates by score (ties keep detection order: the 5 true cars first):
    # precision 1 up to recall 5/6, 0 beyond -> 84 of the 101 recall points (0 .. 0.83)
    assert agn["AP50"] == pytest.approx(84 / 101, abs=1e-6)
    [row] = agn["scenes"]
    # identity calibration, p = 0.9 for 6 candidates, recall 1: expected 5.4, count 6
    assert (row["truth"], row["count"], row["expected"]) == (6, 6, pytest.approx(5.4))
    assert row["ci95"][0] <= 6 <= row["ci95"][1] and row["covered"]
    text = (tmp_path / "out" / "report.md").read_text()
    assert "class-agnostic" in text and "railcar" in text
    # asked for class-aware scoring, the unknown class is an error
    with pytest.raises(DetectorError, match="unknown class 'railcar'"):
        api.evaluate(_cfg(tmp_path, "class_agnostic=false"))
