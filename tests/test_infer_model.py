"""Bundle loading, batched forward with a real (untrained) YOLO, and the CLI."""

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from detector.bundle import card_path, write_card
from detector.errors import DetectorError
from detector.infer import SceneResult, run
from detector.infer.model import Predictor, load_bundle
from tests.helpers import CLASSES, random_scene


@pytest.fixture
def models(untrained_models) -> dict[str, Path]:
    return untrained_models


@pytest.fixture
def obb_weights(models) -> Path:
    return models["obb"]


def scene(path: Path, size=(200, 150)) -> Path:
    return random_scene(path, size)


@pytest.mark.parametrize("task", ["obb", "detect"])
def test_predictor_returns_boxes_per_tile(models, task):
    bundle = load_bundle(models[task], "cpu")
    assert bundle.task == task and bundle.classes == CLASSES and bundle.imgsz == 128
    images = np.random.default_rng(0).integers(0, 255, (3, 3, 64, 64), dtype=np.uint8)
    out = Predictor(bundle, conf=0.0, max_det=50)(images)
    assert len(out) == 3
    for det in out:
        assert det.corners.shape == (len(det.scores), 4, 2) and len(det.scores) > 0
        assert ((det.cls >= 0) & (det.cls < 4)).all()


def test_plain_weights_without_card_work_with_a_warning(tmp_path, caplog, obb_weights):
    weights = tmp_path / "plain.pt"
    weights.write_bytes(obb_weights.read_bytes())
    with caplog.at_level(logging.WARNING):
        bundle = load_bundle(weights, "cpu")
    assert "no model card" in caplog.text
    assert bundle.card.classes == CLASSES and bundle.card.candidate_conf == 0.05


def test_bad_weights_and_mismatched_cards_are_one_line_errors(tmp_path, obb_weights):
    with pytest.raises(DetectorError, match="not found"):
        load_bundle(tmp_path / "missing.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(DetectorError, match="cannot load"):
        load_bundle(corrupt, "cpu")
    # a card written for other weights
    other = tmp_path / "other.pt"
    other.write_bytes(obb_weights.read_bytes())
    card = json.loads(card_path(obb_weights).read_text())
    card["sha256"] = "0" * 64
    card_path(other).write_text(json.dumps(card))
    with pytest.raises(DetectorError, match="does not match"):
        load_bundle(other, "cpu")
    # a card whose classes do not fit the weights
    card.update(classes=["car"], not_wagons=[])
    write_card(other, card)
    with pytest.raises(DetectorError, match="classes"):
        load_bundle(other, "cpu")


def test_run_api_end_to_end_with_a_real_model(tmp_path, obb_weights):
    results = run(scene(tmp_path / "s.tif"), obb_weights, out=tmp_path / "out", progress=False,
                  backend="torch")  # other backends: tests/test_infer_backends.py
    [res] = results
    assert isinstance(res, SceneResult) and res.ok, res.error
    assert set(res.outputs) == {"geojson", "counts", "quicklook"}
    counts = json.loads(res.outputs["counts"].read_text())
    assert counts["model"]["sha256"] == json.loads(card_path(obb_weights).read_text())["sha256"]
    assert all(d.score >= 0.05 for d in res.detections)


def cli(tmp_path, weights, source):
    cmd = [sys.executable, "-m", "detector.infer", f"weights={weights}", f"source={source}",
           f"out={tmp_path / 'out'}", "progress=false", "quicklook=false", "backend=torch"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_cli_fails_with_one_line_and_writes_nothing(tmp_path, obb_weights):
    bad = tmp_path / "bad.tif"
    bad.write_text("not an image")
    fail = cli(tmp_path, obb_weights, bad)
    assert fail.returncode == 2
    errors = [line for line in fail.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "bad.tif" in errors[0] and "not a readable raster" in errors[0]
    assert (fail.stdout + fail.stderr).count("not a readable raster") == 1  # printed once
    # nothing but the failure marker (the reason, read back by the summary)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["bad.error.json"]


def test_cli_misspelt_source_is_one_line_and_leaves_nothing(tmp_path, obb_weights):
    fail = cli(tmp_path, obb_weights, tmp_path / "yard_misspelt.tif")
    assert fail.returncode == 2
    lines = [line for line in (fail.stdout + fail.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), lines
    assert "yard_misspelt.tif: no such file" in lines[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_cli_prints_the_table(tmp_path, obb_weights):
    ok = cli(tmp_path, obb_weights, scene(tmp_path / "good.tif"))
    assert ok.returncode == 0, ok.stderr
    assert "wagons (95% CI)" in ok.stdout and "good.tif" in ok.stdout
    assert (tmp_path / "out" / "good.counts.json").exists()


@pytest.mark.slow
def test_demo_scene_is_generated_once_and_cached(tmp_path, monkeypatch):
    from detector.infer.demo import demo_scene

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    first = demo_scene(seed=0)
    assert first.is_file() and first.with_suffix(".geojson").is_file()
    mtime = first.stat().st_mtime_ns
    assert demo_scene(seed=0) == first and first.stat().st_mtime_ns == mtime


def test_inference_imports_only_what_it_uses(tmp_path, obb_weights):
    """No scipy or matplotlib on the inference path (quicklook off), no Ultralytics at import."""
    code = f"""
import sys
import detector.infer.__main__
assert not {{m for m in sys.modules if m.split(".")[0] in ("ultralytics", "scipy", "matplotlib")}}
from detector.infer import run
[res] = run({str(scene(tmp_path / "s.tif"))!r}, {str(obb_weights)!r}, out={str(tmp_path / "o")!r},
            progress=False, quicklook=False, backend="torch")
assert res.ok, res.error
print(sorted({{m.split(".")[0] for m in sys.modules}} & {{"scipy", "matplotlib", "sahi"}}))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"
