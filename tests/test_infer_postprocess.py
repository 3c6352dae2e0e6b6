"""The numpy postprocess of exported backends equals Ultralytics' NMS (classic and end-to-end
heads), and tiny exported YOLO11/YOLO26 OBB nets give the torch net's output and features."""

import math

import numpy as np
import pytest
import torch

from detector.errors import DetectorError
from detector.infer import backends
from detector.infer.postprocess import postprocess
from tests.helpers import save_untrained


def _ultralytics(raw: np.ndarray, rotated: bool, nc: int, conf: float, iou: float,
                 agnostic: bool, max_det: int, end2end: bool) -> list[np.ndarray]:
    from ultralytics.utils import nms

    out = nms.non_max_suppression(torch.from_numpy(raw), conf, iou, agnostic=agnostic,
                                  max_det=max_det, nc=nc if rotated else 0, rotated=rotated,
                                  end2end=end2end, max_time_img=math.inf)
    return [o.numpy() for o in out]


def _same(ours, theirs, rotated: bool) -> None:
    from ultralytics.utils import ops

    assert len(ours) == len(theirs)
    for det, ref in zip(ours, theirs, strict=True):
        assert len(det.scores) == len(ref), (len(det.scores), len(ref))
        ref = ref[np.argsort(-ref[:, 4], kind="stable")]
        mine = np.argsort(-det.scores, kind="stable")
        np.testing.assert_allclose(det.scores[mine], ref[:, 4], rtol=1e-6)
        np.testing.assert_array_equal(det.cls[mine], ref[:, 5].astype(int))
        corners = (ops.xywhr2xyxyxyxy(np.concatenate([ref[:, :4], ref[:, -1:]], 1)) if rotated
                   else ref[:, [0, 1, 2, 1, 2, 3, 0, 3]].reshape(-1, 4, 2))
        np.testing.assert_allclose(det.corners[mine], corners, atol=1e-3)


def _classic_raw(rng, batch: int, nc: int, n: int, rotated: bool) -> np.ndarray:
    """Head-shaped raw output with clustered boxes (much overlap) and distinct scores."""
    centres = rng.uniform(20, 108, (batch, 6, 2))
    pick = rng.integers(0, 6, (batch, n))
    xy = np.take_along_axis(centres, pick[..., None], 1) + rng.normal(0, 3, (batch, n, 2))
    wh = rng.uniform(6, 30, (batch, n, 2))
    scores = rng.uniform(0, 1, (batch, n, nc)) ** 3
    parts = [xy, wh, scores] + ([rng.uniform(-0.3, 1.9, (batch, n, 1))] if rotated else [])
    return np.concatenate(parts, -1).transpose(0, 2, 1).astype(np.float32)


@pytest.mark.parametrize("rotated", [True, False])
@pytest.mark.parametrize("agnostic", [True, False])
def test_numpy_nms_equals_ultralytics_on_the_classic_head(rotated, agnostic):
    rng = np.random.default_rng(0)
    raw = _classic_raw(rng, 3, 4, 400, rotated)
    for conf, iou, max_det in [(0.05, 0.5, 1000), (0.2, 0.3, 1000), (0.05, 0.7, 7)]:
        ours = postprocess(raw, rotated, 4, conf, iou, agnostic, max_det)
        theirs = _ultralytics(raw, rotated, 4, conf, iou, agnostic, max_det, False)
        assert sum(len(t) for t in theirs) > 10
        _same(ours, theirs, rotated)


@pytest.mark.parametrize("rotated", [True, False])
def test_end_to_end_head_is_only_filtered(rotated):
    rng = np.random.default_rng(1)
    k, extra = 300, 1 if rotated else 0
    rows = np.concatenate([rng.uniform(10, 100, (2, k, 4)),
                           np.sort(rng.uniform(0, 1, (2, k, 1)), 1)[:, ::-1],
                           rng.integers(0, 4, (2, k, 1)), rng.uniform(0, 1.5, (2, k, extra))],
                          -1).astype(np.float32)
    if not rotated:  # end-to-end detect rows are x1, y1, x2, y2
        rows[..., 2:4] = rows[..., :2] + rng.uniform(5, 20, (2, k, 2))
    ours = postprocess(rows, rotated, 4, 0.4, 0.5, True, 100, end2end=True)
    theirs = _ultralytics(rows, rotated, 4, 0.4, 0.5, True, 100, True)
    _same(ours, theirs, rotated)
    assert all(len(d.scores) == min(100, int((r[:, 4] > 0.4).sum()))
               for d, r in zip(ours, rows, strict=True))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.mark.parametrize("family", ["yolo11", "yolo26"])
def test_exported_tiny_obb_net_equals_torch(tmp_path, cache, family):
    """yolo11n-obb (classic head, NMS) and yolo26n-obb (end-to-end head, no NMS), built from
    their YAML: the export's raw output and shift features equal the torch net's, and the
    numpy postprocess of that output equals Ultralytics' NMS."""
    from detector.infer.model import Predictor, TorchRunner, load_bundle
    from detector.shift import tile_features

    backend = next((b for b in ("onnx", "openvino") if backends.installed(b)), None)
    if backend is None:
        pytest.skip("neither onnxruntime nor openvino is installed")
    weights = save_untrained(tmp_path / f"{family}.pt", "obb", family=family)
    bundle = load_bundle(weights, "cpu")
    end2end = family == "yolo26"
    assert bool(getattr(bundle.network(), "end2end", False)) is end2end
    runner = backends.make_runner(bundle, backend, 128, 2)
    assert runner.end2end is end2end and runner.feature_layer == 2
    images = np.random.default_rng(2).integers(0, 255, (2, 3, 128, 128), dtype=np.uint8)
    feats: list[np.ndarray] = []
    runner.sink = feats.append
    raw = runner(images)
    with tile_features(bundle.network()) as log:
        ref = TorchRunner(bundle)(images)
    ref = (ref[0] if isinstance(ref, list | tuple) else ref).numpy()
    assert raw.shape == ref.shape == ((2, 300, 7) if end2end else (2, 4 + 4 + 1, 336))
    if end2end:  # an untrained head ties its scores, so the top-k order is arbitrary
        np.testing.assert_allclose(np.sort(raw[..., 4], 1), np.sort(ref[..., 4], 1), atol=1e-5)
    else:
        np.testing.assert_allclose(raw, ref, atol=1e-3, rtol=1e-3)
    np.testing.assert_allclose(feats[0], log.array(), atol=1e-4, rtol=1e-3)
    # ... and all its scores alike: jitter them so the kept set is well defined.
    jitter = np.random.default_rng(3).uniform(0, 1e-3, raw.shape).astype(np.float32)
    raw = raw + jitter * (np.arange(raw.shape[-1]) == 4 if end2end
                          else (np.arange(raw.shape[1]) >= 4)[:, None])
    conf = float(np.quantile(raw[..., 4] if end2end else raw[:, 4:8].max(1), 0.5))
    predictor = Predictor(bundle, conf, 0.5, 1000, True, runner)
    ours = postprocess(raw, True, 4, conf, 0.5, True, 1000, end2end)
    _same(ours, _ultralytics(raw, True, 4, conf, 0.5, True, 1000, end2end), True)
    assert len(predictor(images)) == 2


def test_precision_is_checked(tmp_path):
    from detector.infer.api import config
    from detector.validation import check_config

    assert backends.check_precision("int8", "openvino") == "int8"
    assert backends.check_precision(None, "torch") == "fp32"
    with pytest.raises(DetectorError, match="precision=int8 runs on backend=openvino only"):
        backends.check_precision("int8", "onnx")
    with pytest.raises(DetectorError, match="precision='int4' is not one of auto, fp32"):
        backends.check_precision("int4", "openvino")
    with pytest.raises(DetectorError, match=r"precision='fp16': must be one of auto, fp32, int8"):
        check_config(config(precision="fp16"), "infer")


def test_precision_auto_is_int8_on_openvino_only_where_nncf_is_installed(monkeypatch):
    monkeypatch.setattr(backends, "int8_available", lambda: True)
    assert backends.resolve_precision("auto", "openvino") == "int8"
    assert backends.resolve_precision(None, "openvino") == "int8"
    assert [backends.resolve_precision("auto", b) for b in ("onnx", "torch")] == ["fp32"] * 2
    assert backends.resolve_precision("fp32", "openvino") == "fp32"
    monkeypatch.setattr(backends, "int8_available", lambda: False)
    assert backends.resolve_precision("auto", "openvino") == "fp32"
    with pytest.raises(DetectorError, match="precision=int8 runs on backend=openvino only"):
        backends.resolve_precision("int8", "torch")
