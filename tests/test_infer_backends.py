"""Backends: torch, ONNX Runtime and OpenVINO give the same detections; exports are cached."""

import json
import os

import numpy as np
import pytest
import torch

from detector.errors import DetectorError
from detector.infer import backends, run
from detector.infer.model import load_bundle


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """Exports go to a temporary cache, not the user's."""
    folder = tmp_path_factory.mktemp("cache")
    before = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(folder)
    yield folder
    if before is None:
        os.environ.pop("XDG_CACHE_HOME")
    else:
        os.environ["XDG_CACHE_HOME"] = before


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A fixed small generated rail yard (about 70 vehicles)."""
    from detector.config import compose
    from detector.synth import write_scenes

    out = tmp_path_factory.mktemp("scene")
    cfg = compose("synth", [f"out={out}", "n_scenes=1", "seed=3", "size=[900,900]",
                            "vehicles.min=60", "vehicles.max=80", "vehicles.empty_prob=0"])
    return write_scenes(cfg)[0]


@pytest.fixture(scope="module")
def reference(cache, scene, tmp_path_factory):
    return _run(scene, tmp_path_factory.mktemp("torch"), "torch")


def _run(scene, out, backend):
    [res] = run(scene, out=out, backend=backend, batch=4, progress=False, quicklook=False)
    assert res.ok, res.error
    return res


@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_backend_gives_the_same_detections_and_counts_as_torch(reference, scene, tmp_path,
                                                              backend):
    if not backends.installed(backend):
        pytest.skip(f"{backends._PACKAGES[backend]} is not installed")
    ref = reference
    res = _run(scene, tmp_path / backend, backend)
    assert res.counts["backend"] == backend and ref.counts["backend"] == "torch"
    assert len(ref.detections) > 20  # the bundled model finds the yard's cars
    assert len(res.detections) == len(ref.detections)
    for name, summary in ref.counts["classes"].items():
        other = res.counts["classes"][name]
        assert other["count"] == summary["count"] and other["ci95"] == summary["ci95"]
        assert other["expected"] == pytest.approx(summary["expected"], abs=0.05)
    # the shift alarm's features come from the exported graph's second output, no torch pass
    ref_f, res_f = ref.features.array(), res.features.array()
    assert ref_f is not None and res_f is not None and res_f.shape == ref_f.shape
    np.testing.assert_allclose(res_f, ref_f, rtol=1e-3, atol=1e-3)
    assert res.counts["shift"]["score"] == pytest.approx(ref.counts["shift"]["score"], abs=1e-3)
    assert res.counts["shift"]["alarm"] == ref.counts["shift"]["alarm"]
    dets = res.detections
    centres = np.array([d.corners_px.mean(axis=0) for d in dets])
    for det in ref.detections:  # each reference box has its twin: same class, same place
        k = int(np.argmin(np.linalg.norm(centres - det.corners_px.mean(axis=0), axis=1)))
        assert dets[k].cls == det.cls and dets[k].score == pytest.approx(det.score, abs=2e-3)
        assert np.abs(np.sort(dets[k].corners_px, 0) - np.sort(det.corners_px, 0)).max() < 0.5


@pytest.mark.slow
@pytest.mark.int8
def test_int8_is_the_auto_precision_with_nncf_and_counts_as_fp32(reference, scene, tmp_path):
    if not (backends.installed("openvino") and backends.int8_available()):
        pytest.skip("INT8 needs openvino and nncf (pip install -e '.[fast,int8]')")
    [res] = run(scene, out=tmp_path, backend="openvino", batch=4, progress=False,
                quicklook=False)  # precision=auto
    assert res.ok, res.error
    assert res.counts["precision"] == "int8" and res.counts["settings"]["precision"] == "int8"
    assert reference.counts["precision"] == "fp32"
    for name, summary in reference.counts["classes"].items():  # within noise, not identical
        assert abs(res.counts["classes"][name]["count"] - summary["count"]) <= max(
            2, 0.1 * summary["count"]), name
    lo, hi = reference.counts["wagons"]["ci95"]
    assert lo <= res.counts["wagons"]["count"] <= hi
    assert res.features.array() is not None  # the INT8 graph keeps the shift features


def test_an_auto_int8_export_that_fails_falls_back_to_fp32(cache, monkeypatch, caplog):
    if not backends.installed("openvino"):
        pytest.skip("openvino is not installed")
    bundle = load_bundle(None, "cpu", lazy=True)
    real = backends.export_model

    def export(b, name, imgsz, batch, precision="fp32"):
        if precision == "int8":
            raise RuntimeError("quantisation failed")
        return real(b, name, imgsz, batch, precision)

    monkeypatch.setattr(backends, "int8_available", lambda: True)
    monkeypatch.setattr(backends, "export_model", export)
    runner = backends.make_runner(bundle, "openvino", bundle.imgsz, 8)  # precision=auto
    assert runner.precision == "fp32" and "INT8 quantisation unavailable" in caplog.text
    with pytest.raises(DetectorError, match="cannot load the exported model"):
        backends.make_runner(bundle, "openvino", bundle.imgsz, 8, "int8")  # asked by name


def test_export_is_made_once_and_reused(cache, monkeypatch):
    backend = next((b for b in ("onnx", "openvino") if backends.installed(b)), None)
    if backend is None:
        pytest.skip("neither onnxruntime nor openvino is installed")
    bundle = load_bundle(None, "cpu")
    first = backends.export_model(bundle, backend, 512, 4)
    assert first.is_file() and str(cache) in str(first) and bundle.sha256 in str(first)
    info = json.loads((backends.export_dir(bundle.sha256, backend, 512, 4)
                       / "export.json").read_text())
    assert info["sha256"] == bundle.sha256 and info["batch"] == 4
    assert info["precision"] == "fp32" and info["end2end"] is False
    from detector.infer import export

    def no_export(*args, **kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr(export, "export_graph", no_export)
    assert backends.export_model(bundle, backend, 512, 4) == first
    runner = backends.make_runner(bundle, backend, 512, 4)
    feats = []
    runner.sink = feats.append
    raw = runner(np.zeros((3, 3, 512, 512), np.uint8))  # a short batch is padded
    assert isinstance(raw, np.ndarray) and raw.shape[0] == 3
    # the shift features come from the same pass: 4 x 4 patches per tile of layer 2's channels
    assert len(feats) == 1 and feats[0].shape == (3 * 16, feats[0].shape[1])


def test_auto_picks_the_fastest_installed_and_bad_names_fail(monkeypatch):
    cpu, gpu = torch.device("cpu"), torch.device("cuda:0")
    expected = next(b for b in ("openvino", "onnx", "torch") if backends.installed(b))
    assert backends.resolve_backend("auto", cpu) == expected
    assert backends.resolve_backend("auto", gpu) == "torch"
    assert backends.resolve_backend("torch", cpu) == "torch"
    with pytest.raises(DetectorError, match="backend='tensorrt' is not one of"):
        backends.resolve_backend("tensorrt", cpu)
    monkeypatch.setattr(backends, "installed", lambda name: name == "torch")
    assert backends.resolve_backend("auto", cpu) == "torch"
    with pytest.raises(DetectorError, match=r"needs the openvino package.*\[fast\]"):
        backends.resolve_backend("openvino", cpu)


def test_auto_falls_back_to_torch_when_an_export_fails(monkeypatch):
    backend = next((b for b in ("openvino", "onnx") if backends.installed(b)), None)
    if backend is None:
        pytest.skip("neither onnxruntime nor openvino is installed")
    bundle = load_bundle(None, "cpu")

    def broken(*args, **kwargs):
        raise DetectorError("export failed")

    monkeypatch.setattr(backends, "export_model", broken)
    assert backends.make_runner(bundle, "auto", 512, 8).name == "torch"
    with pytest.raises(DetectorError, match="export failed"):
        backends.make_runner(bundle, backend, 512, 8)


def test_a_cached_export_runs_without_torch_ultralytics_or_matplotlib(cache, tmp_path):
    """`python -m detector.infer` with a cached export: the whole run (quicklook included)
    imports none of them (checked with -X importtime, which lists every module loaded)."""
    import subprocess
    import sys
    from pathlib import Path

    from tests.helpers import random_scene

    backend = next((b for b in ("openvino", "onnx") if backends.installed(b)), None)
    if backend is None:
        pytest.skip("neither onnxruntime nor openvino is installed")
    bundle = load_bundle(None, "cpu", lazy=True)
    assert bundle.net is None
    backends.export_model(bundle, backend, bundle.imgsz, 8)  # as the CLI asks on a CPU
    scene = random_scene(tmp_path / "tiny.tif", (300, 300))
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "PYTHONPATH": str(root)}
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "detector.infer", f"source={scene}",
         f"out={tmp_path / 'out'}", f"backend={backend}", "device=cpu", "progress=false",
         "precision=fp32"],  # the export cached above (auto is INT8 where nncf is installed)
        capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    modules = {line.rsplit("|", 1)[-1].strip().split(".")[0]
               for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "detector" in modules and "rasterio" in modules  # the listing is complete
    assert not modules & {"torch", "torchvision", "ultralytics", "matplotlib"}, (
        sorted(modules & {"torch", "torchvision", "ultralytics", "matplotlib"}))
    assert (tmp_path / "out" / "tiny.png").stat().st_size > 1000
    counts = json.loads((tmp_path / "out" / "tiny.counts.json").read_text())
    assert counts["backend"] == backend and counts["shift"] is not None  # features: no torch
