"""Export a bundle's network for ONNX Runtime or OpenVINO: detections and shift features in
one graph.

The graph has two outputs: ``output0``, the head's raw output exactly as the torch network
gives it (the classic head before NMS, or the end-to-end head of YOLO26 with its top-k), and
``features``, (B, C, g, g) channel means of the early backbone block the shift alarm reads
(:data:`detector.shift.LAYER`) on a ``g`` × ``g`` grid, so the alarm costs no second pass and
no torch at run time. The network is prepared as Ultralytics' exporter prepares it (fp32,
fused, head in export mode, static shape) and converted with its helpers: ONNX through
``torch.onnx`` (TorchScript tracing), OpenVINO through ``ov.convert_model``, optionally
quantised to INT8 with NNCF (post-training, calibrated on tiles of generated scenes; the
head stays in floating point, as Ultralytics' INT8 export keeps it).

Only imported when an export is made (it needs torch and Ultralytics).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from detector.infer.backends import OUTPUTS
from detector.shift import GRID

log = logging.getLogger(__name__)


class WithFeatures(torch.nn.Module):
    """A YOLO detection net that also returns pooled features of layer ``layer``.

    ``forward(x)`` → (head output, (B, C, g, g) means of layer ``layer`` on a g × g grid);
    without a layer, the second output is a (B, 1, 1, 1) zero placeholder.
    """

    def __init__(self, net: torch.nn.Module, layer: int | None):
        super().__init__()
        self.net, self.layer = net, layer

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        saved: list[Any] = []
        feat = None
        for i, m in enumerate(self.net.model):  # BaseModel._predict_once, keeping one layer
            if m.f != -1:
                x = saved[m.f] if isinstance(m.f, int) else [x if j == -1 else saved[j]
                                                              for j in m.f]
            x = m(x)
            saved.append(x if m.i in self.net.save else None)
            if i == self.layer:
                feat = x
        out = x[0] if isinstance(x, list | tuple) else x
        if feat is None:
            return out, out.new_zeros((out.shape[0], 1, 1, 1))
        g = min(GRID, feat.shape[-2], feat.shape[-1])
        return out, torch.nn.functional.adaptive_avg_pool2d(feat, g)


def prepare(net: torch.nn.Module, fmt: str) -> torch.nn.Module:
    """A float32 eval copy of ``net`` with its head in export mode (as Ultralytics' exporter)."""
    from ultralytics.nn.modules import C2f, Detect

    model = copy.deepcopy(net).float().eval()
    for p in model.parameters():
        p.requires_grad = False
    for m in model.modules():
        if isinstance(m, Detect):  # OBB included; end2end and max_det stay as the net has them
            m.dynamic, m.export, m.format, m.xyxy, m.shape = False, True, fmt, False, None
        elif isinstance(m, C2f):
            m.forward = m.forward_split
    return model.to(memory_format=torch.contiguous_format)


def export_graph(net: torch.nn.Module, backend: str, imgsz: int, batch: int, folder: Path,
                 layer: int | None, calibration: Sequence[np.ndarray] | None = None) -> Path:
    """Write the two-output graph of ``net`` into ``folder``; returns the model file.

    Args:
        backend: ``onnx`` (→ ``model.onnx``) or ``openvino`` (→ ``model.xml``/``.bin``).
        imgsz: input side in pixels; batch: fixed batch size.
        layer: backbone layer whose pooled output is the ``features`` output (None: none).
        calibration: uint8 batches (batch, 3, imgsz, imgsz) for INT8 post-training
            quantisation (OpenVINO only); None keeps fp32.
    """
    model = WithFeatures(prepare(net, backend), layer)
    im = torch.zeros(batch, 3, imgsz, imgsz)
    with torch.inference_mode():
        for _ in range(2):  # dry runs, as the exporter does (builds anchors and strides)
            model(im)
    if backend == "onnx":
        import onnx
        from ultralytics.utils.export.engine import best_onnx_opset, torch2onnx

        path = folder / "model.onnx"
        torch2onnx(model, im, path, opset=best_onnx_opset(onnx), output_names=list(OUTPUTS))
        return path
    if backend != "openvino":
        raise ValueError(f"no export for backend {backend!r}")
    import openvino as ov
    from ultralytics.utils.export.openvino import torch2openvino

    dataset = None
    if calibration is not None:
        import nncf

        dataset = nncf.Dataset(list(calibration), _to_input)
    ov_model = torch2openvino(model, im, quantize=8 if calibration is not None else None,
                              calibration_dataset=dataset, int8_detect=True)
    for name, port in zip(OUTPUTS, ov_model.outputs, strict=True):
        port.get_tensor().set_names({name})
    path = folder / "model.xml"
    ov.save_model(ov_model, path, compress_to_fp16=False)
    return path


def _to_input(images: np.ndarray) -> np.ndarray:
    return np.divide(images, np.float32(255.0), dtype=np.float32)


def calibration_batches(card: Any, imgsz: int, batch: int, n_tiles: int = 64, seed: int = 0
                        ) -> list[np.ndarray]:
    """uint8 batches of tiles from generated scenes, read as inference reads them.

    A dense and a sparse generated rail yard at the card's resolution, tiled, stretched and
    read by :func:`detector.infer.reader.read_tile` (the reader of every tile and chip).
    """
    import tempfile

    from detector.config import compose
    from detector.infer.reader import Stretch, read_tile
    from detector.infer.tiling import tile_grid
    from detector.raster import open_raster, scene_stretch
    from detector.synth import write_scenes

    tiles: list[np.ndarray] = []
    side = 4 * imgsz
    with tempfile.TemporaryDirectory(prefix="detector_calib_") as tmp:
        for k, (lo, hi) in enumerate([(40, 60), (4, 10), (25, 40), (10, 20)]):
            out = Path(tmp) / f"s{k}"
            [tif] = write_scenes(compose("synth", [
                f"out={out}", "n_scenes=1", f"seed={seed + k}", f"size=[{side},{side}]",
                f"m_per_px={card.m_per_px}", "supersample=1", f"vehicles.min={lo}",
                f"vehicles.max={hi}"]))
            norm = dict(card.normalization)
            with open_raster(tif) as src:
                stretch = Stretch(list(norm["bands"]), *scene_stretch(src, norm),
                                  int(norm.get("fill", 114)))
                for t in tile_grid(src.width, src.height, imgsz, imgsz // 8):
                    image = read_tile(src, t, imgsz, stretch)
                    if image is not None:
                        tiles.append(image)
            if len(tiles) >= n_tiles:
                break
    tiles = tiles[:n_tiles]
    return [np.stack((tiles[i:i + batch] * batch)[:batch]) for i in range(0, len(tiles), batch)]
