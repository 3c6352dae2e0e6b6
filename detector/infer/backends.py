"""Forward-pass backends: torch, ONNX Runtime and OpenVINO, behind one call.

Every backend turns a uint8 batch (B, 3, S, S) into the network's raw output; the
Predictor then runs the same Ultralytics NMS on it with the card's thresholds, so the card's
NMS, calibration and operating thresholds apply unchanged whatever runs the network.

ONNX and OpenVINO models are exported once from the bundle with Ultralytics' exporter and
cached under ``$XDG_CACHE_HOME/detector/exports/<bundle sha256>/<backend>-<size>px-b<batch>``
(written atomically; the weights are copied first, the loaded network is never touched).
``auto`` picks the fastest installed backend for the device: on CPU OpenVINO, then ONNX
Runtime, then torch; on GPU torch (fp16, large batches).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

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


def installed(backend: str) -> bool:
    """Whether the runtime package of ``backend`` can be imported."""
    return importlib.util.find_spec(_PACKAGES[backend]) is not None


def resolve_backend(backend: str, device: torch.device) -> str:
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


def export_dir(sha256: str, backend: str, imgsz: int, batch: int) -> Path:
    """Cache folder of one export: keyed by the bundle's sha256, input size and batch."""
    return cache_dir() / "exports" / sha256 / f"{backend}-{imgsz}px-b{batch}"


@contextmanager
def _no_auto_install() -> Any:
    """Keep Ultralytics from pip-installing a missing export requirement (runs stay offline)."""
    from ultralytics.utils import checks

    before = checks.AUTOINSTALL
    checks.AUTOINSTALL = False
    try:
        yield
    finally:
        checks.AUTOINSTALL = before


def export_model(bundle: Bundle, backend: str, imgsz: int, batch: int) -> Path:
    """The bundle exported for ``backend`` (``onnx``: a .onnx file; ``openvino``: an .xml).

    Made once with Ultralytics' exporter (fp32, fixed input shape, no NMS in the graph) and
    cached; later runs with the same bundle, size and batch reuse it. The exporter rounds
    the input up to a multiple of the network's stride, so ``imgsz`` is rounded the same way
    first and the cache is named after the size actually exported.
    """
    stride = model_stride(bundle)
    imgsz = -(-int(imgsz) // stride) * stride
    folder = export_dir(bundle.sha256, backend, imgsz, batch)
    found = _artifact(folder, backend)
    if found is not None:
        return found
    from ultralytics import YOLO

    log.info("exporting the model to %s (once, cached at %s)", _LABELS[backend], folder)
    with atomic_dir(folder) as tmp:
        weights = tmp / "model.pt"
        shutil.copyfile(bundle.weights, weights)
        # nms=None exports the raw head (NMS runs outside, as for torch); an end-to-end head
        # (YOLO26) stays end-to-end with nms=False, as the torch network runs it.
        nms = False if getattr(bundle.net, "end2end", False) else None
        try:
            with _no_auto_install(), quiet(log, f"{backend} export"):
                extra = {"simplify": False} if backend == "onnx" else {}  # onnxslim: not needed
                YOLO(str(weights), task=bundle.task).export(
                    format=backend, imgsz=imgsz, batch=batch, dynamic=False, nms=nms,
                    device="cpu", verbose=False, **extra)
        except Exception as err:  # noqa: BLE001 - exporters raise many types
            raise DetectorError(
                f"{bundle.weights}: export to {backend} failed ({type(err).__name__}: "
                f"{str(err).splitlines()[0] if str(err) else ''}); set backend=torch") from err
        weights.unlink()
        if _artifact(tmp, backend) is None:
            raise DetectorError(f"{bundle.weights}: the {backend} export wrote no model; "
                                "set backend=torch")
        (tmp / "export.json").write_text(json.dumps(
            {"weights": str(bundle.weights), "sha256": bundle.sha256, "backend": backend,
             "imgsz": imgsz, "batch": batch}, indent=2))
    found = _artifact(folder, backend)
    assert found is not None
    return found


def _artifact(folder: Path, backend: str) -> Path | None:
    if not folder.is_dir():
        return None
    pattern = "model.onnx" if backend == "onnx" else "model_openvino_model/model.xml"
    return next(iter(folder.glob(pattern)), None)


def _pad(images: np.ndarray, batch: int) -> np.ndarray:
    """float32 input in [0, 1] (as the torch path computes it), padded to the fixed batch."""
    x = np.divide(images, np.float32(255.0), dtype=np.float32)
    if len(x) < batch:
        x = np.concatenate([x, np.zeros((batch - len(x), *x.shape[1:]), np.float32)])
    return x


class OnnxRunner:
    """ONNX Runtime session over the exported model; fixed batch, padded when short."""

    name = "onnx"

    def __init__(self, path: Path, batch: int, device: torch.device):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = _cores()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = (["CUDAExecutionProvider", "CPUExecutionProvider"]
                     if device.type == "cuda" else ["CPUExecutionProvider"])
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        self.input = self.session.get_inputs()[0].name
        self.batch = batch

    def __call__(self, images: np.ndarray) -> torch.Tensor:
        out = self.session.run(None, {self.input: _pad(images, self.batch)})[0]
        return torch.from_numpy(out[:len(images)])


class OpenVinoRunner:
    """OpenVINO compiled model (CPU, fp32, every core); fixed batch, padded when short."""

    name = "openvino"

    def __init__(self, path: Path, batch: int):
        import openvino as ov

        core = ov.Core()
        # fp32 keeps scores as the calibration saw them (bf16 is the default on some CPUs).
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": _cores(),
                  "INFERENCE_PRECISION_HINT": "f32"}
        self.model = core.compile_model(core.read_model(str(path)), "CPU", config)
        self.batch = batch

    def __call__(self, images: np.ndarray) -> torch.Tensor:
        out = self.model(_pad(images, self.batch))[0]
        return torch.from_numpy(np.asarray(out)[:len(images)])


def make_runner(bundle: Bundle, backend: str, imgsz: int, batch: int
                ) -> Callable[[np.ndarray], Any]:
    """The forward pass for ``bundle`` on ``backend`` (exported and cached on first use).

    With ``auto``, a backend that cannot export or load this model falls back to torch with
    a warning; a backend asked for by name fails with a one-line error instead.
    """
    name = resolve_backend(backend, bundle.device)
    if name == "torch":
        return TorchRunner(bundle)
    try:
        path = export_model(bundle, name, imgsz, batch)
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
