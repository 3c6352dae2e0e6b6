"""Load a model bundle (weights + card) and run batched forward passes over tiles.

We call the underlying torch module ourselves: tiles are square at a multiple of the
network's stride (:func:`tile_sizes`; a tile read at another size is padded, not
letterboxed, so its pixel coordinates stay the tile's), and many tiles go through in one
batch. Ultralytics' NMS does the per-tile postprocessing of the torch backend (rotated for
obb); the exported backends use its numpy twin (:mod:`detector.infer.postprocess`).

Nothing here imports torch until a torch network is needed: a bundle loaded ``lazy`` holds
only its card, so a run whose exported model is cached never imports torch or Ultralytics.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from detector.atomic import sha256_file
from detector.bundle import ModelCard, default_card, read_card, resolve_weights
from detector.errors import DetectorError
from detector.infer.postprocess import TileDetections, postprocess

log = logging.getLogger(__name__)

__all__ = ["Bundle", "Device", "Predictor", "TileDetections", "TorchRunner", "all_cores",
           "load_bundle", "pick_device"]


@dataclass(frozen=True)
class Device:
    """Where a network runs, without importing torch: ``type`` (cpu, cuda, ...) and index."""

    type: str
    index: int | None = None

    def __str__(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"


@dataclass
class Bundle:
    """A loaded model with its card; ``net`` is None until :meth:`network` loads it (lazy)."""

    weights: Path
    sha256: str
    card: ModelCard
    net: Any = field(repr=False)
    device: Any  # Device or torch.device: only ``.type`` and ``str()`` are used
    half: bool
    loader: Callable[[], Any] | None = field(default=None, repr=False, compare=False)

    @property
    def task(self) -> str:
        return self.card.task

    @property
    def classes(self) -> list[str]:
        return list(self.card.classes)

    @property
    def imgsz(self) -> int:
        return self.card.imgsz

    def network(self) -> Any:
        """The torch network, loaded (torch and Ultralytics imported) on first use."""
        if self.net is None and self.loader is not None:
            self.net = self.loader()
        return self.net

# YOLO's largest downsampling: its feature maps only line up for inputs that are multiples.
MAX_STRIDE = 32


def model_stride(bundle: Bundle) -> int:
    """The network's largest stride (32 for YOLO, and for a lazy bundle or a stand-in
    without a network: every YOLO downsamples 32 times at most)."""
    stride = getattr(bundle.net, "stride", None)
    if stride is None:
        return MAX_STRIDE
    return int(max(int(s) for s in (stride.tolist() if hasattr(stride, "tolist")
                                    else [stride])))


def tile_sizes(bundle: Bundle, tile_px: int | None = None) -> tuple[int, int]:
    """(read, net): the side, in model pixels, a tile is read at (``tiling.tile_px``, or
    the card's imgsz) and the network input it is padded to, the next multiple of the
    network's stride (a YOLO fed 500 px fails: its feature maps do not line up)."""
    read = int(tile_px or bundle.imgsz)
    stride = model_stride(bundle)
    return read, math.ceil(read / stride) * stride



def gpu_possible() -> bool:
    """Whether an NVIDIA driver is present (else CUDA cannot be, and torch need not say)."""
    return Path("/proc/driver/nvidia/version").exists() or shutil.which("nvidia-smi") is not None


def pick_device(device: Any) -> Device:
    """``"auto"``/None → cuda when available, else cpu; otherwise what was asked.

    Asks torch only when an NVIDIA driver is present, so CPU machines do not import it.
    """
    if device in (None, "", "auto"):
        if not gpu_possible():
            return Device("cpu")
        import torch

        return Device("cuda" if torch.cuda.is_available() else "cpu")
    text = str(device)
    if text.isdigit():
        return Device("cuda", int(text))
    kind, _, index = text.partition(":")
    return Device(kind, int(index) if index.isdigit() else None)


@contextmanager
def all_cores(device: Any) -> Iterator[None]:
    """On CPU, let torch use every core inside the block, then restore the caller's setting.

    Ultralytics sets ``cpu_count - 1`` threads when it runs; inference wants them all. A no-op
    when torch is not imported (the exported backends set their own threads).
    """
    if "torch" not in sys.modules:
        yield
        return
    import torch

    before = torch.get_num_threads()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if device.type == "cpu" and before != (cores or 1):
        torch.set_num_threads(cores or 1)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def _imgsz(ckpt: dict[str, Any]) -> int:
    size = (ckpt.get("train_args") or {}).get("imgsz", 640)
    return int(size[0] if isinstance(size, list | tuple) else size)


def _check_card(card: ModelCard, net: Any, task: str, path: Path) -> None:
    names = list(getattr(net, "names", {}).values()) if isinstance(
        getattr(net, "names", None), dict) else list(getattr(net, "names", []) or [])
    if names and len(card.classes) != len(names):
        raise DetectorError(
            f"{path}: card lists {len(card.classes)} classes but the weights have "
            f"{len(names)}; keep each .pt with the .json written for it")
    if card.task != task:
        raise DetectorError(
            f"{path}: card says task {card.task!r} but the weights are {task!r}; "
            "keep each .pt with the .json written for it")


def _load_net(path: Path, card: ModelCard | None, dev: Device, use_half: bool
              ) -> tuple[Any, ModelCard]:
    """The fused torch network of ``path`` (and its card, a default one when ``card`` is None).

    Raises:
        DetectorError: weights that cannot be loaded, or a card that does not match them.
    """
    import torch
    from ultralytics.nn.tasks import guess_model_task, load_checkpoint

    try:
        net, ckpt = load_checkpoint(path, device=torch.device(str(dev)))
        net = net.fuse(verbose=False) if hasattr(net, "fuse") else net
    except Exception as err:  # noqa: BLE001 - torch/pickle raise many types on a bad file
        raise DetectorError(
            f"{path}: cannot load as Ultralytics weights ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}); give a .pt saved by Ultralytics "
            "or detector.train") from err
    task = str(getattr(net, "task", None) or guess_model_task(net))
    if task not in ("obb", "detect"):
        raise DetectorError(f"{path}: a {task!r} model; give an obb or detect model")
    if card is None:
        names = net.names if isinstance(net.names, dict) else dict(enumerate(net.names))
        card = default_card(task, [names[k] for k in sorted(names)], _imgsz(ckpt))
        log.warning("%s: no model card beside the weights; using defaults "
                    "(m_per_px %.2f, identity calibration)", path, card.m_per_px)
    _check_card(card, net, task, path)
    net = net.half() if use_half else net.float()
    # NHWC convolutions run ~1.4x faster than NCHW on CPU here (oneDNN), and suit fp16 on GPU.
    net = net.to(memory_format=torch.channels_last)
    return net.eval(), card


def load_bundle(weights: str | Path | None, device: str | None = "auto",
                half: bool | None = None, lazy: bool = False) -> Bundle:
    """Load weights (default: the bundled model) and their card.

    Args:
        weights: a ``.pt``; its card ``.json`` beside it is used when present.
        device: ``"auto"``, ``"cpu"``, ``"cuda:0"``, ...
        half: fp16 inference; None means on GPU only.
        lazy: with a card, leave the torch network unloaded until :meth:`Bundle.network`
            (the card's sha256 already ties it to the weights); an exported backend whose
            export is cached then never loads it.

    Raises:
        DetectorError: missing or corrupt weights, or a card that does not match them.
    """
    path = resolve_weights(weights)
    card = read_card(path)  # verifies the sha256
    dev = pick_device(device)
    use_half = dev.type == "cuda" if half is None else bool(half and dev.type == "cuda")
    if lazy and card is not None:
        def loader() -> Any:
            return _load_net(path, card, dev, use_half)[0]

        return Bundle(path, sha256_file(path), card, None, dev, use_half, loader)
    net, card = _load_net(path, card, dev, use_half)
    return Bundle(path, sha256_file(path), card, net, dev, use_half)


class TorchRunner:
    """The torch forward pass of a loaded bundle: uint8 (B, 3, S, S) → raw network output."""

    name = "torch"

    def __init__(self, bundle: Bundle):
        self.bundle = bundle
        self.net = bundle.network()

    def __call__(self, images: np.ndarray) -> Any:
        import torch

        b = self.bundle
        x = torch.from_numpy(np.ascontiguousarray(images)).to(str(b.device), non_blocking=True)
        x = ((x.half() if b.half else x.float()) / 255.0).contiguous(
            memory_format=torch.channels_last)
        with torch.inference_mode():
            return self.net(x)


class Predictor:
    """Batched forward + NMS for a loaded bundle: uint8 (B, 3, S, S) → per-tile detections.

    ``runner`` runs the network (default: torch; see :mod:`detector.infer.backends` for ONNX
    Runtime and OpenVINO); the NMS and thresholds here are the same for every runner.
    """

    def __init__(self, bundle: Bundle, conf: float, iou: float = 0.5, max_det: int = 1000,
                 agnostic: bool = True, runner: Callable[[np.ndarray], Any] | None = None):
        self.bundle, self.conf, self.iou, self.max_det = bundle, conf, iou, max_det
        self.agnostic = agnostic
        self.runner = runner or TorchRunner(bundle)

    @property
    def backend(self) -> str:
        """Name of the backend running the network (recorded in counts JSON)."""
        return str(getattr(self.runner, "name", type(self.runner).__name__))

    @property
    def precision(self) -> str:
        """Precision of the network's weights as run (recorded in counts JSON)."""
        return str(getattr(self.runner, "precision", "fp16" if self.bundle.half else "fp32"))

    def forward(self, images: np.ndarray) -> Any:
        """Raw model output for a uint8 batch (used by the benchmark to time the net alone)."""
        return self.runner(images)

    def __call__(self, images: np.ndarray) -> list[TileDetections]:
        b = self.bundle
        preds = self.forward(images)
        rotated = b.task == "obb"
        if isinstance(preds, np.ndarray):  # an exported backend: numpy postprocess, no torch
            return postprocess(preds, rotated, len(b.classes), self.conf, self.iou,
                               self.agnostic, self.max_det,
                               bool(getattr(self.runner, "end2end", False)))
        return self._torch_postprocess(preds, rotated)

    def _torch_postprocess(self, preds: Any, rotated: bool) -> list[TileDetections]:
        """Ultralytics' NMS on the torch backend's output (as the torch path always ran)."""
        import torch
        from ultralytics.utils import nms, ops

        b = self.bundle
        with torch.inference_mode():
            # No time limit: Ultralytics' default drops the rest of the batch when NMS runs
            # past 2 s + 50 ms/image, so counts would depend on how busy the machine is.
            out = nms.non_max_suppression(
                preds, self.conf, self.iou, agnostic=self.agnostic, max_det=self.max_det,
                nc=len(b.classes) if rotated else 0, rotated=rotated,
                end2end=bool(getattr(b.network(), "end2end", False)), max_time_img=math.inf)
        results = []
        for det in out:
            det = det.float().cpu()
            if rotated:
                corners = ops.xywhr2xyxyxyxy(torch.cat([det[:, :4], det[:, -1:]], dim=-1))
            else:
                x1, y1, x2, y2 = det[:, 0], det[:, 1], det[:, 2], det[:, 3]
                corners = torch.stack([torch.stack([x1, y1], -1), torch.stack([x2, y1], -1),
                                       torch.stack([x2, y2], -1), torch.stack([x1, y2], -1)], 1)
            results.append(TileDetections(corners.numpy().reshape(-1, 4, 2).astype(float),
                                          det[:, 4].numpy().astype(float),
                                          det[:, 5].numpy().astype(int)))
        return results
