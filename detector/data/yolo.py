"""An existing Ultralytics dataset as a source: validate its labels and count instances.

Nothing is copied: the written data.yaml points at the original images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import yaml

from detector.data.split import SPLITS
from detector.data.writer import empty_counts
from detector.errors import DetectorError

IMAGE_SUFFIXES = {".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp"}
_COLUMNS = {"obb": 9, "detect": 5}


def find_data_yaml(root: str | Path) -> Path:
    """The data.yaml given, or the single ``*.yaml`` in the folder given."""
    root = Path(root)
    if root.is_file():
        return root
    found = sorted(root.glob("*.yaml")) if root.is_dir() else []
    if len(found) != 1:
        raise DetectorError(
            f"{root}: expected a data.yaml or a folder with exactly one .yaml (found "
            f"{len(found)}); set data.root to the dataset's data.yaml")
    return found[0]


def read_data_yaml(path: Path) -> tuple[dict[str, Any], Path, list[str]]:
    """(data, absolute dataset root, class names) of an Ultralytics data.yaml."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise DetectorError(f"{path}: not readable YAML ({err}); fix the file") from err
    names = data.get("names") if isinstance(data, dict) else None
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names)]
    if not names or not data.get("train") or not data.get("val"):
        raise DetectorError(f"{path}: needs `names`, `train` and `val`; see the Ultralytics "
                            "dataset format")
    root = Path(data.get("path") or path.parent)
    root = root if root.is_absolute() else (path.parent / root).resolve()
    return data, root, [str(n) for n in names]


def class_names(data_yaml: Path) -> list[str]:
    """Class names in id order from a data.yaml's ``names`` (dict or list)."""
    try:
        names = yaml.safe_load(Path(data_yaml).read_text())["names"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as err:
        raise DetectorError(f"{data_yaml}: no class `names`; rebuild the dataset") from err
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names, key=int)]
    return [str(n) for n in names]


def listed_image(line: str, list_file: Path) -> Path:
    """An image named in a split's ``.txt`` list, resolved as Ultralytics resolves it:
    ``./x`` relative to the list file, other relative paths to the working directory."""
    if line.startswith("./"):
        return (list_file.parent / line[2:]).resolve()
    return Path(line).resolve()


def split_images(entry: str | list[str], root: Path, yaml_path: Path) -> list[Path]:
    """Image files of one split entry: folders, image-list .txt files or lists of them.

    Entries are relative to the dataset ``root``; list lines follow :func:`listed_image`.
    """
    images: list[Path] = []
    for item in entry if isinstance(entry, list) else [entry]:
        path = Path(item) if Path(item).is_absolute() else root / item
        if path.is_dir():
            images += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.suffix == ".txt" and path.is_file():
            lines = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()
                     if line.strip()]
            images += [listed_image(x, path) for x in lines]
        else:
            raise DetectorError(f"{yaml_path}: split entry {item!r} is not a folder or image "
                                f"list under {root}; fix `path` or the split entries")
    return images


def dataset_split_images(data_yaml: str | Path, split: str) -> list[Path]:
    """Image files of one split of an Ultralytics dataset; none when the split is absent."""
    data_yaml = Path(data_yaml)
    data, root, _ = read_data_yaml(data_yaml)
    return split_images(data[split], root, data_yaml) if data.get(split) else []


def label_path(image: Path) -> Path:
    """Ultralytics' label file for ``image`` (last ``images`` folder swapped for ``labels``)."""
    parts = list(image.parts)
    index = len(parts) - 1 - parts[::-1].index("images") if "images" in parts else None
    if index is not None:
        parts[index] = "labels"
    return Path(*parts).with_suffix(".txt")


def check_label_file(path: Path, task: str, n_classes: int) -> tuple[np.ndarray, str | None]:
    """Class ids in a label file, or a problem line; a missing file means no vehicles.

    Raises:
        DetectorError: rows in the other task's format (the whole dataset is).
    """
    if not path.exists():
        return np.zeros(0, dtype=int), None
    none = np.zeros(0, dtype=int)
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    if not rows:
        return none, None
    columns = _COLUMNS[task]
    try:
        table = np.array(rows, dtype=float)
    except ValueError:
        return none, f"{path}: rows of unequal length or not numbers; fix it"
    if table.shape[1] != columns:  # the whole dataset is in another format: stop here
        raise DetectorError(
            f"{path}: rows have {table.shape[1]} columns but task={task} needs {columns}; "
            f"use task={'detect' if table.shape[1] == 5 else 'obb'} or convert the labels")
    if table[:, 1:].min() < 0 or table[:, 1:].max() > 1:
        return none, f"{path}: coordinates outside 0..1; normalise them"
    ids = table[:, 0].astype(int)
    if ids.min() < 0 or ids.max() >= n_classes or (table[:, 0] % 1).any():
        return none, (f"{path}: class ids must be integers in 0..{n_classes - 1}; fix "
                      "the ids or the names in data.yaml")
    return ids, None


def scan_yolo_dataset(yaml_path: Path, task: str, classes: list[str] | None
                      ) -> tuple[dict[str, Any], Path, list[str], dict[str, Any], list[str]]:
    """Validate an Ultralytics dataset and count its chips and instances per split and class.

    Returns:
        (data, root, names, counts, problems).
    """
    data, root, names = read_data_yaml(yaml_path)
    if classes is not None and list(classes) != names:
        raise DetectorError(f"{yaml_path}: names {names} differ from data.classes {list(classes)};"
                            " set data.classes=null to take the dataset's names")
    counts, problems = empty_counts(names), []
    for split in SPLITS:
        if not data.get(split):
            continue
        for image in split_images(data[split], root, yaml_path):
            ids, problem = check_label_file(label_path(image), task, len(names))
            if problem:
                problems.append(problem)
                continue
            counts[split]["chips"] += 1
            counts[split]["background_chips"] += not len(ids)
            for class_id in ids:
                counts[split]["instances"][names[class_id]] += 1
    return data, root, names, counts, problems
