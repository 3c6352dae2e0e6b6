"""Cross-fitting folds by scene, and the chip lists each fine-tune trains on."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import yaml

from detector.data.yolo import IMAGE_SUFFIXES

MAX_FOLDS = 5


def assign_folds(names: Sequence[str], folds: int | None, seed: int = 0) -> dict[str, int]:
    """Deal scenes into folds (seeded): one per scene by default, at most :data:`MAX_FOLDS`.

    Raises:
        ValueError: fewer than two folds would result.
    """
    k = min(len(names), MAX_FOLDS) if folds is None else min(int(folds), len(names))
    if k < 2:
        raise ValueError("cross-fitting needs at least two folds")
    order = np.random.default_rng(seed).permutation(sorted(names))
    return {str(name): i % k for i, name in enumerate(order)}


def chip_scene(chip: Path) -> str:
    """The scene a chip was cut from (chips are named SCENE_COL_ROW)."""
    return chip.stem.rsplit("_", 2)[0]


def chips_by_scene(dataset: Path) -> dict[str, list[Path]]:
    """Every chip image of a built dataset (all splits), grouped by scene."""
    out: dict[str, list[Path]] = {}
    for image in sorted((dataset / "images").rglob("*")):
        if image.suffix.lower() in IMAGE_SUFFIXES:
            out.setdefault(chip_scene(image), []).append(image.resolve())
    return out


def val_sample(chips: Sequence[Path], n: int, seed: int = 0) -> list[Path]:
    """A few chips with labels for Ultralytics' closing validation (not held-out evidence)."""
    labelled = [c for c in chips if _label_file(c).is_file() and _label_file(c).stat().st_size]
    pool = labelled or list(chips)
    if len(pool) <= n:
        return list(pool)
    idx = np.random.default_rng(seed).choice(len(pool), n, replace=False)
    return [pool[i] for i in sorted(idx)]


def _label_file(image: Path) -> Path:
    parts = list(image.parts)
    i = len(parts) - 1 - parts[::-1].index("images")
    return Path(*parts[:i], "labels", *parts[i + 1:]).with_suffix(".txt")


def replay_sample(chips: Sequence[Path], n: int, seed: int = 0) -> list[Path]:
    """``n`` replay chips (seeded; labelled chips first, all of them when fewer)."""
    labelled = [c for c in chips if _label_file(c).is_file() and _label_file(c).stat().st_size]
    pool = labelled or list(chips)
    if len(pool) <= n:
        return list(pool)
    idx = np.random.default_rng(seed + 1).choice(len(pool), n, replace=False)
    return [pool[i] for i in sorted(idx)]


def write_fold_dataset(out: Path, dataset: Path, chips: Mapping[str, list[Path]],
                       train_scenes: Sequence[str], val_chips: int, seed: int = 0,
                       replay: Sequence[Path] = ()) -> Path:
    """A data.yaml (+ dataset.json) training on ``train_scenes``' chips (+ ``replay`` chips).

    Returns:
        The data.yaml path.
    """
    out.mkdir(parents=True, exist_ok=True)
    train = [c for s in sorted(train_scenes) for c in chips.get(s, [])]
    (out / "train.txt").write_text("".join(f"{c}\n" for c in [*train, *replay]))
    (out / "val.txt").write_text("".join(f"{c}\n" for c in val_sample(train, val_chips, seed)))
    base = yaml.safe_load((dataset / "data.yaml").read_text())
    data = {"path": str(out.resolve()), "train": "train.txt", "val": "val.txt",
            "names": base["names"]}
    (out / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    info = json.loads((dataset / "dataset.json").read_text())
    info["fold"] = {"train_scenes": sorted(train_scenes), "train_chips": len(train),
                    "replay_chips": len(replay)}
    (out / "dataset.json").write_text(json.dumps(info, indent=2))
    return out / "data.yaml"
