"""Training speed of the init experiment's architectures, side by side in one run.

A shared CPU makes the wall-clock of whole training runs incomparable, so this times the
training step itself (forward + loss + backward + optimizer step) of each architecture on
the same random batch, interleaved round by round so that load changes hit every arm alike,
and prints chips per second and the ratio to the first arm. A frozen arm freezes the
backbone (layers 0-9) the way Ultralytics' ``freeze=10`` does (no gradients there).

    python scripts/bench_train_speed.py [--rounds 5] [--batch 8] [--imgsz 512]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from detector.errors import guarded

ARMS = {  # name -> (Ultralytics YAML, frozen backbone layers)
    "yolo11n-obb": ("yolo11n-obb.yaml", 0),
    "yolo26n-obb": ("yolo26n-obb.yaml", 0),
    "yolov8n-obb": ("yolov8n-obb.yaml", 0),
    "yolo26n-obb frozen": ("yolo26n-obb.yaml", 10),
}


def build(arch: str, frozen: int, nc: int = 4):
    """A trainable Ultralytics OBB model with its loss, ``frozen`` first layers frozen."""
    from ultralytics.nn.tasks import OBBModel
    from ultralytics.utils import DEFAULT_CFG

    model = OBBModel(arch, nc=nc, verbose=False)
    model.args = DEFAULT_CFG
    for name, param in model.named_parameters():
        param.requires_grad = not any(name.startswith(f"model.{i}.") for i in range(frozen))
    model.train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    return model, opt


def batch(n: int, imgsz: int, nc: int = 4) -> dict:
    """A random batch with 20 oriented boxes per image, as Ultralytics' trainer passes it."""
    g = torch.Generator().manual_seed(0)
    k = 20 * n
    return {"img": torch.rand(n, 3, imgsz, imgsz, generator=g),
            "batch_idx": torch.arange(n).repeat_interleave(20).float(),
            "cls": torch.randint(0, nc, (k, 1), generator=g).float(),
            "bboxes": torch.cat([torch.rand(k, 2, generator=g) * 0.8 + 0.1,
                                 torch.full((k, 1), 0.05), torch.full((k, 1), 0.012),
                                 torch.rand(k, 1, generator=g) * 3.14], 1)}


def step(model, opt, data: dict) -> None:
    opt.zero_grad()
    loss, _ = model.loss(data)
    loss.sum().backward()
    opt.step()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=2, help="steps per arm per round")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--imgsz", type=int, default=512)
    args = parser.parse_args(argv)
    data = batch(args.batch, args.imgsz)
    arms = {name: build(*spec) for name, spec in ARMS.items()}
    for model, opt in arms.values():
        step(model, opt, data)  # warm-up
    times: dict[str, list[float]] = {name: [] for name in arms}
    for _ in range(args.rounds):
        for name, (model, opt) in arms.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                step(model, opt, data)
            times[name].append((time.perf_counter() - start) / args.steps)
    first = statistics.median(next(iter(times.values())))
    print(f"training step, batch {args.batch} x {args.imgsz}^2, median of {args.rounds} rounds "
          f"({torch.get_num_threads()} threads)")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"{name:20s} {med:6.2f} s/step  {args.batch / med:5.2f} chips/s  "
              f"x{first / med:.2f} vs {next(iter(times))}")


if __name__ == "__main__":
    guarded(main)
