"""Inference cost of each candidate architecture per tile at batch 8, side by side in one run.

The forward pass of an architecture costs the same whatever its weights, but the
postprocess of a classic head (NMS over every anchor above the candidate threshold) depends
on how many boxes the weights propose. So each arm is timed with real weights on real
tiles: the DOTA-pretrained files (``python -m detector.train.pretrained fetch``; an arm not
fetched is built from its Ultralytics YAML and marked so) on 512 px tiles of the real north
scene (``../shared/real/muttenz_north.tif``, used here only for timing). Per arm and round,
interleaved so that load changes hit every arm alike: the network forward in torch
(inference mode) and in OpenVINO FP32 (exported and run as ``detector.infer`` does:
:func:`detector.infer.export.export_graph`, :class:`~detector.infer.backends.OpenVinoRunner`), and
the numpy postprocess that ``detector.infer`` runs after an exported backend
(:func:`detector.infer.postprocess.postprocess`: NMS for v8/v11, none for YOLO26's
end-to-end head) at the bundled model's candidate threshold. Prints medians in ms per tile.
Accuracy of the same arms: ``scripts/exp_init.py`` (README, issue 17 table).

    python scripts/bench_arch_forward.py [--rounds 5] [--batch 8] [--imgsz 512]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from detector.errors import guarded
from detector.infer.postprocess import postprocess

REAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "real" / "muttenz_north.tif"
ARMS = {  # name -> (pretrained name, Ultralytics YAML when not fetched)
    "yolov8n-obb": ("yolov8n-obb", "yolov8n-obb.yaml"),
    "yolo11n-obb": ("franken-yolo11n-obb", "yolo11n-obb.yaml"),
    "yolo26n-obb": ("yolo26n-obb", "yolo26n-obb.yaml"),
}


def load(pretrained: str, yaml: str) -> tuple[torch.nn.Module, str]:
    """The arm's network in eval mode, and where its weights came from."""
    from ultralytics import YOLO

    from detector.train.pretrained import cached_path

    path = cached_path(pretrained)
    source = f"dota:{pretrained}" if path.is_file() else f"{yaml} (random weights)"
    net = YOLO(str(path) if path.is_file() else yaml).model.float().eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net, source


def real_tiles(n: int, imgsz: int) -> np.ndarray:
    """``n`` tiles (n, 3, imgsz, imgsz) float32 in [0, 1] cut from the real scene."""
    import rasterio

    with rasterio.open(REAL) as src:
        img = src.read([1, 2, 3]).astype(np.float32) / 255.0
    _, h, w = img.shape
    ys = np.linspace(0, max(0, h - imgsz), max(1, int(np.sqrt(n))), dtype=int)
    xs = np.linspace(0, max(0, w - imgsz), -(-n // len(ys)), dtype=int)
    tiles = []
    for y in ys:
        for x in xs:
            t = np.zeros((3, imgsz, imgsz), np.float32)
            crop = img[:, y:y + imgsz, x:x + imgsz]
            t[:, :crop.shape[1], :crop.shape[2]] = crop
            tiles.append(t)
    return np.stack(tiles[:n])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--imgsz", type=int, default=512)
    parser.add_argument("--conf", type=float, default=None,
                        help="candidate threshold (default: the bundled model's card)")
    args = parser.parse_args(argv)
    import tempfile

    from detector.bundle import BUNDLED_WEIGHTS, read_card
    from detector.infer.backends import OpenVinoRunner
    from detector.infer.export import export_graph

    conf = args.conf
    if conf is None:
        conf = read_card(BUNDLED_WEIGHTS).candidate_conf
    x = real_tiles(args.batch, args.imgsz)
    arms = {}
    tmp = Path(tempfile.mkdtemp(prefix="bench_arch_"))
    for name, (pretrained, yaml) in ARMS.items():
        net, source = load(pretrained, yaml)
        (tmp / name).mkdir()
        graph = export_graph(net, "openvino", args.imgsz, args.batch, tmp / name, layer=None)
        head = net.model[-1]
        (tmp / name / "export.json").write_text(json.dumps(
            {"end2end": bool(getattr(head, "end2end", False)), "feature_layer": None}))
        arms[name] = {"net": net, "ov": OpenVinoRunner(graph, args.batch), "source": source,
                      "end2end": bool(getattr(head, "end2end", False)), "nc": head.nc}
    times: dict[str, dict[str, list[float]]] = {n: {"torch": [], "openvino": [], "post": []}
                                                for n in arms}
    boxes: dict[str, int] = {}
    xt = torch.from_numpy(x)
    for _ in range(args.rounds + 1):  # the first round warms up and is dropped
        for name, arm in arms.items():
            with torch.inference_mode():
                t0 = time.perf_counter()
                arm["net"](xt)
                t1 = time.perf_counter()
            raw = arm["ov"]._run(x)[0]
            t2 = time.perf_counter()
            dets = postprocess(raw, True, arm["nc"], conf, 0.7, end2end=arm["end2end"])
            t3 = time.perf_counter()
            for key, seconds in (("torch", t1 - t0), ("openvino", t2 - t1), ("post", t3 - t2)):
                times[name][key].append(1000 * seconds / args.batch)
            boxes[name] = sum(len(d.scores) for d in dets)
    for name in times:
        for key in times[name]:
            times[name][key] = times[name][key][1:]
    ref = statistics.median(times["yolo26n-obb"]["openvino"])
    print(f"ms per {args.imgsz} px tile at batch {args.batch}, median of {args.rounds} rounds "
          f"(tiles of {REAL.name}; candidate threshold {conf:g})")
    print(f"{'arm':<13} {'weights':<26} {'torch':>7} {'openvino':>9} {'postproc':>9} "
          f"{'ov+post':>8} {'vs yolo26n':>10} {'boxes/batch':>11}")
    for name, arm in arms.items():
        med = {k: statistics.median(v) for k, v in times[name].items()}
        total = med["openvino"] + med["post"]
        print(f"{name:<13} {arm['source']:<26} {med['torch']:7.1f} {med['openvino']:9.1f} "
              f"{med['post']:9.2f} {total:8.1f} {med['openvino'] / ref:10.2f} "
              f"{boxes[name]:11d}")


if __name__ == "__main__":
    guarded(main)
