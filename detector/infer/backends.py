"""Forward-pass backends: torch, ONNX Runtime and OpenVINO, behind one call.

Every backend turns a uint8 batch (B, 3, S, S) into the network's raw output; the
Predictor then runs the same NMS on it with the card's thresholds (Ultralytics' on torch
tensors, :mod:`detector.infer.postprocess`'s numpy twin on exported outputs), so the card's
NMS, calibration and operating thresholds apply unchanged whatever runs the network.

ONNX and OpenVINO models are exported once from the bundle (:mod:`detector.infer.export`:
the head's raw output plus the shift alarm's pooled features, one pass) and cached under
``$XDG_CACHE_HOME/detector/exports/<bundle sha256>/<backend>-<precision>-<size>px-b<batch>-v<N>``
(written atomically; the loaded network is never touched). A run whose export is cached
imports neither torch nor Ultralytics.
``auto`` picks the fastest installed backend for the device: on CPU OpenVINO, then ONNX
Runtime, then torch; on GPU torch (fp16, large batches).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from detector.atomic import atomic_dir
from detector.errors import DetectorError
from detector.infer.demo import cache_dir
from detector.infer.model import Bundle, TorchRunner, model_stride
from detector.quiet import quiet

log = logging.getLogger(__name__)

BACKENDS = ("torch", "onnx", "openvino")
CHOICES = ("auto", *BACKENDS)
_PACKAGES = {"torch": "torch", "onnx": "onnxruntime", "openvino": "openvino"}
_LABELS = {"onnx": "ONNX", "openvino": "OpenVINO"}
_CPU_PREFERENCE = ("openvino", "onnx", "torch")  # fastest first (see scripts/bench_infer.py)
PRECISIONS = ("fp32", "int8")
EXPORT_FORMAT = 2  # bump when the exported graph changes (2: shift features as 2nd output)
OUTPUTS = ("output0", "features")


def installed(backend: str) -> bool:
    """Whether the runtime package of ``backend`` can be imported."""
    return importlib.util.find_spec(_PACKAGES[backend]) is not None


def resolve_backend(backend: str, device: Any) -> str:
    """The backend a run uses: ``auto`` → the fastest installed for ``device``.

    Raises:
        DetectorError: an unknown name, a backend whose package is missing, or one that
            cannot run on ``device``.
    """
    name = str(backend or "auto").lower()
    if name not in CHOICES:
        raise DetectorError(f"backend={backend!r} is not one of {', '.join(CHOICES)}; "
                            "set backend= to one of them")
    if name == "auto":
        if device.type != "cpu":
            return "torch"
        return next(b for b in _CPU_PREFERENCE if installed(b))
    if not installed(name):
        raise DetectorError(f"backend={name} needs the {_PACKAGES[name]} package, which is not "
                            "installed; pip install -e '.[fast]' or set backend=torch")
    if name == "openvino" and device.type != "cpu":
        raise DetectorError(f"backend=openvino runs on the CPU here, but device={device}; "
                            "set device=cpu or backend=torch")
    if name == "onnx" and device.type != "cpu":
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise DetectorError(f"backend=onnx on device={device} needs onnxruntime-gpu; "
                                "install it, or set device=cpu or backend=torch")
    return name


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)


def export_dir(sha256: str, backend: str, imgsz: int, batch: int, precision: str = "fp32"
               ) -> Path:
    """Cache folder of one export: keyed by the bundle's sha256, backend, precision, input size,
    batch and the graph's format (:data:`EXPORT_FORMAT`)."""
    return (cache_dir() / "exports" / sha256
            / f"{backend}-{precision}-{imgsz}px-b{batch}-v{EXPORT_FORMAT}")


def int8_available() -> bool:
    """Whether NNCF is installed (the ``int8`` extra), so OpenVINO INT8 exports can be made."""
    return importlib.util.find_spec("nncf") is not None


def resolve_precision(precision: str | None, backend: str) -> str:
    """The precision a run uses on the resolved ``backend``.

    ``auto`` is INT8 on OpenVINO when NNCF is installed and FP32 otherwise: INT8 ran the
    forward 2.1-2.8x faster (two runs of ``scripts/bench_infer.py``) and kept counts,
    interval coverage and recall within noise of FP32 (``scripts/exp_int8.py``; README
    "Inference speed and memory"). ``fp32``/``int8`` are checked by :func:`check_precision`.
    """
    if str(precision or "auto").lower() == "auto":
        return "int8" if backend == "openvino" and int8_available() else "fp32"
    return check_precision(str(precision), backend)


def check_precision(precision: str, backend: str) -> str:
    """``precision`` when ``backend`` can run it.

    Raises:
        DetectorError: an unknown precision, or int8 on a backend other than OpenVINO.
    """
    name = str(precision or "fp32").lower()
    if name not in PRECISIONS:
        raise DetectorError(f"precision={precision!r} is not one of auto, "
                            f"{', '.join(PRECISIONS)}; set precision=auto, fp32 or int8")
    if name == "int8" and backend != "openvino":
        raise DetectorError(f"precision=int8 runs on backend=openvino only, not {backend}; "
                            "set backend=openvino (pip install -e '.[fast]') or precision=fp32")
    return name


def export_model(bundle: Bundle, backend: str, imgsz: int, batch: int,
                 precision: str = "fp32") -> Path:
    """The bundle exported for ``backend`` (``onnx``: a .onnx file; ``openvino``: an .xml).

    Made once (:mod:`detector.infer.export`: fixed input shape, no NMS in the graph, the
    shift features as a second output; ``int8``: NNCF post-training quantisation calibrated
    on generated tiles) and cached; later runs with the same bundle, backend, precision,
    size and batch reuse it without loading torch. ``imgsz`` is rounded up to a multiple of
    the network's stride first, and the cache is named after the size actually exported.
    """
    precision = check_precision(precision, backend)
    stride = model_stride(bundle)
    imgsz = -(-int(imgsz) // stride) * stride
    folder = export_dir(bundle.sha256, backend, imgsz, batch, precision)
    found = _artifact(folder, backend)
    if found is not None:
        return found
    if precision == "int8" and not int8_available():
        raise DetectorError("precision=int8 quantises the model once with NNCF, which is not "
                            "installed; pip install -e '.[int8]' or set precision=fp32")
    from detector.infer.export import calibration_batches, export_graph

    log.info("exporting the model to %s%s (once, cached at %s)", _LABELS[backend],
             " INT8" if precision == "int8" else "", folder)
    net = bundle.network()
    layer = _feature_layer(bundle, net)
    with atomic_dir(folder) as tmp:
        try:
            calib = (calibration_batches(bundle.card, imgsz, batch) if precision == "int8"
                     else None)
            with quiet(log, f"{backend} export"):
                export_graph(net, backend, imgsz, batch, tmp, layer, calib)
        except Exception as err:  # noqa: BLE001 - exporters raise many types
            raise DetectorError(
                f"{bundle.weights}: export to {backend} failed ({type(err).__name__}: "
                f"{str(err).splitlines()[0] if str(err) else ''}); set backend=torch") from err
        if _artifact(tmp, backend, written=False) is None:
            raise DetectorError(f"{bundle.weights}: the {backend} export wrote no model; "
                                "set backend=torch")
        (tmp / "export.json").write_text(json.dumps(
            {"weights": str(bundle.weights), "sha256": bundle.sha256, "backend": backend,
             "precision": precision, "imgsz": imgsz, "batch": batch, "task": bundle.task,
             "classes": bundle.classes, "end2end": bool(getattr(net, "end2end", False)),
             "feature_layer": layer, "format": EXPORT_FORMAT}, indent=2))
    found = _artifact(folder, backend)
    assert found is not None
    return found


def _feature_layer(bundle: Bundle, net: Any) -> int | None:
    from detector.shift import feature_layer

    layer = (bundle.card.shift or {}).get("layer")
    return feature_layer(net) if layer is None else int(layer)


def export_info(model: Path) -> dict[str, Any]:
    """The ``export.json`` written beside an exported model."""
    folder = model.parent
    return json.loads((folder / "export.json").read_text())


def _artifact(folder: Path, backend: str, written: bool = True) -> Path | None:
    """The model file in ``folder``; with ``written``, only when its export.json is there."""
    if written and not (folder / "export.json").is_file():
        return None
    path = folder / ("model.onnx" if backend == "onnx" else "model.xml")
    return path if path.is_file() else None


def _pad(images: np.ndarray, batch: int) -> np.ndarray:
    """float32 input in [0, 1] (as the torch path computes it), padded to the fixed batch."""
    x = np.divide(images, np.float32(255.0), dtype=np.float32)
    if len(x) < batch:
        x = np.concatenate([x, np.zeros((batch - len(x), *x.shape[1:]), np.float32)])
    return x


class ExportedRunner:
    """Common part of the exported runners: fixed batch, export facts, shift features.

    ``__call__`` returns the raw head output (numpy, the padding cut off); the pooled
    features of the same pass go to ``sink`` ((B * g * g, C) patch vectors, as
    :class:`detector.shift.FeatureLog` records them) when one is set.
    """

    name = "exported"

    def __init__(self, path: Path, batch: int):
        info = export_info(path)
        self.batch = batch
        self.end2end = bool(info["end2end"])
        self.feature_layer = info.get("feature_layer")
        self.precision = str(info.get("precision", "fp32"))
        self.sink: Callable[[np.ndarray], Any] | None = None

    def _run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def __call__(self, images: np.ndarray) -> np.ndarray:
        out, feats = self._run(_pad(images, self.batch))
        n = len(images)
        if self.sink is not None and self.feature_layer is not None:
            f = np.asarray(feats[:n], dtype=np.float32)
            self.sink(f.transpose(0, 2, 3, 1).reshape(-1, f.shape[1]))
        return np.asarray(out)[:n]


class OnnxRunner(ExportedRunner):
    """ONNX Runtime session over the exported model; fixed batch, padded when short."""

    name = "onnx"

    def __init__(self, path: Path, batch: int, device: Any):
        import onnxruntime as ort

        super().__init__(path, batch)
        options = ort.SessionOptions()
        options.intra_op_num_threads = _cores()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = (["CUDAExecutionProvider", "CPUExecutionProvider"]
                     if device.type == "cuda" else ["CPUExecutionProvider"])
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        self.input = self.session.get_inputs()[0].name

    def _run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out, feats = self.session.run(list(OUTPUTS), {self.input: x})
        return out, feats


class OpenVinoRunner(ExportedRunner):
    """OpenVINO compiled model (CPU, every core); fixed batch, padded when short."""

    name = "openvino"

    def __init__(self, path: Path, batch: int):
        import openvino as ov

        super().__init__(path, batch)
        core = ov.Core()
        # The compiled model is cached beside the export: later runs load it (start-up).
        core.set_property({"CACHE_DIR": str(path.parent / "compiled")})
        # fp32 keeps scores as the calibration saw them (bf16 is the default on some CPUs);
        # an INT8 model runs its quantised layers in int8 whatever this says.
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": _cores(),
                  "INFERENCE_PRECISION_HINT": "f32"}
        self.model = core.compile_model(core.read_model(str(path)), "CPU", config)
        self.request = self.model.create_infer_request()

    def _run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        result = self.request.infer(x)
        return (np.array(result[self.model.output(OUTPUTS[0])]),
                np.array(result[self.model.output(OUTPUTS[1])]))


def make_runner(bundle: Bundle, backend: str, imgsz: int, batch: int, precision: str = "auto"
                ) -> Callable[[np.ndarray], Any]:
    """The forward pass for ``bundle`` on ``backend`` (exported and cached on first use).

    The torch runner loads the network; an exported runner whose export is cached does not
    (no torch import).

    With ``auto``, a backend that cannot export or load this model falls back to torch with
    a warning; a backend asked for by name fails with a one-line error instead. An INT8
    export that ``precision=auto`` chose and that fails falls back to FP32 on the same
    backend, with a warning.
    """
    name = resolve_backend(backend, bundle.device)
    chosen = resolve_precision(precision, name)
    if name == "torch":
        return TorchRunner(bundle)
    if chosen == "int8" and str(precision or "auto").lower() == "auto":
        try:  # made once and cached: the export below then finds it
            export_model(bundle, name, imgsz, batch, "int8")
        except Exception as err:  # noqa: BLE001 - NNCF and OpenVINO raise many types
            log.warning("INT8 quantisation unavailable for %s (%s); using FP32",
                        bundle.weights.name, str(err).splitlines()[0] if str(err) else err)
            chosen = "fp32"
    precision = chosen
    try:
        path = export_model(bundle, name, imgsz, batch, precision)
        if name == "onnx":
            return OnnxRunner(path, batch, bundle.device)
        return OpenVinoRunner(path, batch)
    except Exception as err:  # noqa: BLE001 - runtimes raise many types
        if str(backend).lower() != "auto":
            if isinstance(err, DetectorError):
                raise
            raise DetectorError(f"{bundle.weights}: backend={name} cannot load the exported "
                                f"model ({type(err).__name__}: {err}); set backend=torch") from err
        log.warning("backend %s unavailable for %s (%s); using torch", name,
                    bundle.weights.name, err)
        return TorchRunner(bundle)
