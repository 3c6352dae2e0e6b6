"""Split a run's scenes into ``shards`` tasks (``shards=N shard=i``), balanced by scene area.

Every task computes the same partition from the same source list, so the tasks need no
coordination: their union is every scene exactly once, and no two write the same file.
"""

from __future__ import annotations

import heapq
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import rasterio

from detector.errors import DetectorError
from detector.raster import open_scene
from detector.remote import SceneRef

log = logging.getLogger(__name__)
T = TypeVar("T")
# Test hook: a task dies (as if killed by its scheduler) after this many tiles.
FAIL_AFTER_TILES_ENV = "DETECTOR_FAIL_AFTER_TILES"


def partition(weights: Sequence[float], shards: int) -> list[int]:
    """The shard of each item: largest first onto the least-loaded shard (LPT scheduling).

    Deterministic (ties go to the earlier item and the lower shard); the heaviest shard
    carries at most the lightest one's load plus the largest single weight.

    Raises:
        DetectorError: ``shards`` < 1.
    """
    if shards < 1:
        raise DetectorError(f"shards={shards}: must be 1 or more")
    loads = [(0.0, s) for s in range(shards)]
    assignment = [0] * len(weights)
    for k in sorted(range(len(weights)), key=lambda k: (-float(weights[k]), k)):
        load, s = heapq.heappop(loads)
        assignment[k] = s
        heapq.heappush(loads, (load + float(weights[k]), s))
    return assignment


def scene_area(path: Path | SceneRef) -> float:
    """Pixels in a scene (from its header; no pixel is read). 0 for an unreadable file,
    which fails fast wherever it lands."""
    try:
        with open_scene(path) as src:
            return float(src.width) * float(src.height)
    except (DetectorError, rasterio.errors.RasterioError, OSError):
        return 0.0


def select_shard(items: Sequence[T], paths: Sequence[Path | SceneRef], shards: int, shard: int
                 ) -> list[T]:
    """The items of task ``shard`` of ``shards``, in their original order.

    Raises:
        DetectorError: ``shard`` outside ``0..shards-1``.
    """
    if not 0 <= shard < shards:
        raise DetectorError(f"shard={shard}: must be in 0..{shards - 1} for shards={shards}")
    if shards == 1:
        return list(items)
    assignment = partition([scene_area(p) for p in paths], shards)
    return [item for item, s in zip(items, assignment, strict=True) if s == shard]


def task_device(device: str, shard: int, n_gpus: int) -> str:
    """The device of one task: ``auto`` spreads local tasks over the visible GPUs.

    Under SLURM or Ray a task sees only the GPU it was given (``CUDA_VISIBLE_DEVICES``),
    so ``auto`` → ``cuda:0`` there; with several visible GPUs (local processes on one
    machine) task ``i`` takes GPU ``i mod n_gpus``.
    """
    if str(device) == "auto" and n_gpus > 1:
        return f"cuda:{shard % n_gpus}"
    return str(device)


class _Dying:
    """A predictor that kills its process once it has been given more than ``limit`` tiles;
    everything else (backend name, runner) is the wrapped predictor's."""

    def __init__(self, predictor: Any, limit: int):
        self.__dict__.update(predictor=predictor, limit=limit, seen=0)

    def __call__(self, images: Any) -> Any:
        if self.seen + len(images) > self.limit:
            log.error("%s=%s: killing this task mid-scene", FAIL_AFTER_TILES_ENV, self.limit)
            os._exit(3)
        self.__dict__["seen"] += len(images)
        return self.predictor(images)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.predictor, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.predictor, name, value)


def fail_after_tiles(predictor: T) -> T:
    """``predictor``, killing the process after ``$DETECTOR_FAIL_AFTER_TILES`` tiles.

    A test hook for pre-emption: ``os._exit`` skips every cleanup, as a killed task would.
    """
    limit = os.environ.get(FAIL_AFTER_TILES_ENV)
    if not limit:
        return predictor
    return _Dying(predictor, int(limit))  # type: ignore[return-value]
