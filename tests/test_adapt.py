"""detector.adapt: pre-labels read back as labels, cross-fitted recalibration, bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from detector.adapt import adapt
from detector.adapt.folds import assign_folds
from detector.bundle import read_card
from detector.config import compose
from detector.data import build_dataset
from detector.errors import DetectorError
from detector.geometry import pixel_to_map
from detector.infer.model import load_bundle
from detector.infer.outputs import write_detections
from detector.infer.results import Detection
from detector.labels import read_geojson, write_geojson
from detector.raster import open_raster
from tests.helpers import save_untrained
from tests.test_data_build import CLASSES, chip_rows, data_cfg, make_scenes

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("adapt_scenes")
    make_scenes(root, 3, cars_per_scene=10)
    return root


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return save_untrained(tmp_path_factory.mktemp("base") / "base.pt", imgsz=128)


def adapt_cfg(scenes: Path, weights: Path, out: Path, *extra: str):
    return compose("adapt", [f"scenes={scenes}", f"weights={weights}", f"out={out}",
                             "minutes=0.2", "trainer.batch=4", "val_chips=2", *extra])


# -- pre-labels -> labels -> dataset ----------------------------------------------------

def test_detections_geojson_reads_back_as_labels_into_a_dataset(tmp_path):
    truth = make_scenes(tmp_path / "truth", 1, cars_per_scene=8)["scene_000"]
    scene = tmp_path / "truth" / "scene_000.tif"
    with open_raster(scene) as src:
        transform, crs = src.transform, src.crs
    dets = [Detection(c.corners, pixel_to_map(c.corners, transform), c.cls, 0.9 - 0.1 * k,
                      0.5 if k % 2 else 0.95, f"r0c{k}") for k, c in enumerate(truth)]
    prelabels = tmp_path / "prelabels"
    prelabels.mkdir()
    (prelabels / "scene_000.tif").write_bytes(scene.read_bytes())
    write_detections(prelabels / "scene_000.geojson", dets, crs)

    props = [f["properties"] for f in
             json.loads((prelabels / "scene_000.geojson").read_text())["features"]]
    assert {p["review"] for p in props} == {"unsure", "ok"}
    assert [p["review"] == "unsure" for p in props] == [k % 2 == 1 for k in range(len(dets))]
    polys, _ = read_geojson(prelabels / "scene_000.geojson", known_classes=CLASSES)
    assert [p.cls for p in polys] == [c.cls for c in truth]  # score, p, tile, review ignored

    # The corrected file goes straight into a dataset, like hand-made labels.
    mine = build_dataset(data_cfg("geojson", f"data.root={prelabels}", "data.split.by=block",
                                  "data.split.block_m=64"), tmp_path / "ds_pre", "obb")
    ref = build_dataset(data_cfg("geojson", f"data.root={tmp_path / 'truth'}",
                                 "data.split.by=block", "data.split.block_m=64"),
                        tmp_path / "ds_ref", "obb")
    for split in ("train", "val", "test"):
        a, b = chip_rows(mine.parent, split), chip_rows(ref.parent, split)
        assert a.keys() == b.keys()
        for name in a:
            assert np.allclose(a[name], b[name], atol=1e-5)
    counts = json.loads((mine.parent / "dataset.json").read_text())["splits"]
    assert sum(sum(s["instances"].values()) for s in counts.values()) >= len(truth)


def test_qml_style_colours_every_class():
    qml = (ROOT / "docs" / "detections.qml").read_text()
    for name in CLASSES:
        assert f"&quot;class&quot; = &apos;{name}&apos;" in qml
    assert "review" in qml


# -- cross-fitting ------------------------------------------------------------------------

def test_folds_deal_every_scene_once():
    folds = assign_folds([f"s{i}" for i in range(7)], None, seed=1)
    assert sorted(set(folds.values())) == [0, 1, 2, 3, 4]
    assert assign_folds(["a", "b", "c"], 2, 0).keys() == {"a", "b", "c"}
    with pytest.raises(ValueError):
        assign_folds(["a", "b"], 1)


@pytest.fixture(scope="module")
def adapted(scenes, base, tmp_path_factory):
    out = tmp_path_factory.mktemp("adapt_out")
    return adapt(adapt_cfg(scenes, base, out, "folds=2")), out


def test_adapt_writes_a_bundle_whose_card_records_the_evidence(adapted, base):
    result, out = adapted
    assert result.weights == out / "adapted.pt" and (out / "adapted.adapt.md").is_file()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # work folder removed
    card = read_card(result.weights)  # sha256 matches the written weights
    load_bundle(result.weights, "cpu")
    info = card.adapted_from
    assert info["base"]["sha256"] == read_card(base).sha256
    assert [s["name"] for s in info["scenes"]] == ["scene_000", "scene_001", "scene_002"]
    assert info["budget_minutes"] == 0.2 and info["minutes"] > 0
    assert [f["model"] for f in info["fine_tunes"]] == ["fold 0", "fold 1", "final"]
    for side in ("before", "after"):
        assert info["held_out"][side]["scenes"] == 3
    assert card.metrics["calibrated_on"]["cross_fitted"]
    assert card.metrics["calibrated_on"]["scenes"] == 3
    # card.shift: a reference fitted on the three scenes, or None when the features cannot
    # tell scenes apart
    assert card.shift is None or (card.shift["reference"]["scenes"] == 3
                                  and card.shift["threshold"] > 0)
    assert "| adapted (cross-fitted) |" in result.table


def test_no_scene_is_scored_or_calibrated_by_what_saw_it(adapted):
    result, _ = adapted
    info = result.card.adapted_from
    folds = {s["name"]: s["fold"] for s in info["scenes"]}
    provenance = info["cross_fitting"]["provenance"]
    assert sorted(p["scene"] for p in provenance) == sorted(folds)
    for p in provenance:
        # model_trained_on is read back from the chips the fold model trained on
        assert p["scene"] not in p["model_trained_on"] and p["model_trained_on"]
        assert p["scene"] not in p["calibrated_on"] and p["calibrated_on"]
        assert all(folds[s] != p["fold"] for s in p["calibrated_on"])
        assert sorted(p["model_trained_on"]) == sorted(s for s in folds
                                                       if folds[s] != p["fold"])


# -- bad input ------------------------------------------------------------------------------

def _copy_scene(src: Path, dst: Path, name: str, labels: bool = True) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    (dst / f"{name}.tif").write_bytes((src / f"{name}.tif").read_bytes())
    if labels:
        (dst / f"{name}.geojson").write_bytes((src / f"{name}.geojson").read_bytes())


@pytest.mark.parametrize("case, message", [
    ("no_labels", "no labels beside it"),
    ("unknown_class", "unknown class 'boxcar'"),
    ("outside", "lie outside"),
    ("empty", "hold no vehicle"),
])
def test_bad_scenes_fail_in_one_line_before_writing(tmp_path, scenes, base, case, message):
    bad = tmp_path / "bad"
    _copy_scene(scenes, bad, "scene_000")
    _copy_scene(scenes, bad, "scene_001", labels=case != "no_labels")
    labels = bad / "scene_000.geojson"
    collection = json.loads(labels.read_text())
    if case == "unknown_class":
        collection["features"][0]["properties"]["class"] = "boxcar"
    elif case == "outside":
        ring = collection["features"][0]["geometry"]["coordinates"][0]
        collection["features"][0]["geometry"]["coordinates"][0] = [[x + 5000, y]
                                                                   for x, y in ring]
    if case == "empty":
        for name in ("scene_000", "scene_001"):
            write_geojson(bad / f"{name}.geojson", [], None)
    else:
        labels.write_text(json.dumps(collection))
    out = tmp_path / "out"
    with pytest.raises(DetectorError, match=message):
        adapt(adapt_cfg(bad, base, out))
    assert not out.exists()


def test_cli_with_one_scene_exits_2_with_one_line(tmp_path, scenes, base):
    one = tmp_path / "one"
    _copy_scene(scenes, one, "scene_000")
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-m", "detector.adapt", f"scenes={one}",
                          f"weights={base}", f"out={out}"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})  # this checkout's code
    assert run.returncode == 2
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "at least 2" in errors[0] and str(one) in errors[0]
    assert not out.exists()



@pytest.mark.slow
def test_cli_prints_steps_and_the_summary_not_training_chatter(tmp_path, scenes, base):
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-m", "detector.adapt", f"scenes={scenes}",
                          f"weights={base}", f"out={out}", "minutes=0.2", "trainer.batch=4",
                          "val_chips=2", "folds=2"],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stderr[-2000:]
    lines = [line for line in (run.stdout + run.stderr).splitlines() if line.strip()]
    assert "| adapted (cross-fitted) |" in run.stdout
    assert len(lines) <= 40, "\n".join(lines)
    assert not any("\r" in line or "\x1b[" in line for line in lines)  # not a terminal
    assert not any(word in run.stdout + run.stderr
                   for word in ("Epoch", "Ultralytics", "FutureWarning", "optimizer:"))
