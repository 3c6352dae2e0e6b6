"""Build a YOLO dataset from labelled scenes: read, plan, split, chip, write.

Everything lands in a temporary folder beside ``out`` that replaces it only at the end,
so an interrupted run leaves nothing that looks finished.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from detector.atomic import atomic_dir
from detector.data.chipping import chip_grid, chip_labels, inside_share
from detector.data.readers import Scene, geojson_scenes, xview_scenes
from detector.data.split import (
    SPLITS,
    assign_splits,
    block_name,
    scene_blocks,
    scenes_are_enough,
)
from detector.data.synthetic import generate_scenes, synth_fingerprint
from detector.data.writer import DatasetWriter, write_data_yaml, write_dataset_json
from detector.data.yolo import find_data_yaml, scan_yolo_dataset
from detector.errors import DetectorError
from detector.progress import progress as progress_bar
from detector.raster import (
    GroundResolution,
    check_bands,
    open_raster,
    read_image,
    scene_resolution,
    scene_stretch,
)
from detector.validation import RULES, check_values

log = logging.getLogger(__name__)

FORMAT = "detector-dataset/1"


@dataclass
class ScenePlan:
    """How one scene is chipped: its resolution, chip side in source pixels, stretch, regions."""

    scene: Scene
    width: int
    height: int
    crs: str | None
    m_per_px: float | None
    side: int | tuple[int, int]  # source px; (columns, rows) when pixels are not square
    stride: int | tuple[int, int]
    low: np.ndarray
    high: np.ndarray
    block: int | tuple[int, int]
    regions: list[tuple[int, int, int, int]] = field(default_factory=list)

    def set_regions(self, by_block: bool) -> None:
        """Chip the whole scene, or each spatial block on its own."""
        self.regions = (scene_blocks(self.width, self.height, self.block) if by_block
                        else [(0, 0, self.width, self.height)])


def check_settings(settings: dict[str, Any], task: str) -> None:
    """Raise a one-line error for a data config that cannot work."""
    check_values({"data": settings, "task": task}, RULES["dataset"], "the data config")
    chip, norm = settings["chip"], settings["normalization"]
    rules = [
        (chip["overlap"] < chip["size"], "data.chip.overlap must be in [0, chip.size)"),
        (len(norm["bands"]) in (1, 3), "data.normalization.bands must list 1 or 3 bands"),
    ]
    classes = settings.get("classes")
    if settings["source"] != "yolo" or classes is not None:
        rules.append((bool(classes) and len(set(classes)) == len(classes),
                      "data.classes must be a non-empty list of distinct names"))
    for ok, message in rules:
        if not ok:
            raise DetectorError(f"{message}; fix it in the data config or on the command line")


def _check_out(out: Path) -> None:
    """Refuse to replace a folder that is not a dataset (atomic_dir would delete it)."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir())
                                              and not (out / "dataset.json").exists())):
        raise DetectorError(f"{out}: exists and is not a dataset built here; choose an empty "
                            "or new folder for out")


def read_scenes(settings: dict[str, Any], scratch: Path) -> tuple[list[Scene], list[str]]:
    """Scenes of the configured source (synthetic scenes are generated first)."""
    source, classes, class_map = settings["source"], settings["classes"], settings["class_map"]
    if source == "synthetic":
        root = Path(settings["root"]) if settings.get("root") else scratch / "scenes"
        generate_scenes(settings.get("synth"), root)
        return geojson_scenes(root, "scene_*.tif", classes, class_map)
    if source == "geojson":
        return geojson_scenes(settings["root"], settings.get("pattern", "*.tif"), classes,
                              class_map)
    return xview_scenes(settings["root"], settings["labels"], settings["images"], classes,
                        class_map, settings.get("keep_empty_scenes", False))


def plan_chipping(scene: Scene, settings: dict[str, Any]) -> tuple[ScenePlan | None, list[str]]:
    """Open a scene, fix its chip geometry and stretch, drop labels outside it.

    Returns:
        (plan or None when the scene cannot be used, problem lines).
    """
    chip, norm = settings["chip"], settings["normalization"]
    problems: list[str] = []
    with open_raster(scene.image) as src:
        check_bands(src, list(norm["bands"]), scene.image)
        res = (GroundResolution.square(settings["source_m_per_px"])
               if settings.get("source_m_per_px") else scene_resolution(src))
        if res is None:
            log.warning("%s: no CRS; taking its pixels to be %s m (set data.source_m_per_px)",
                        scene.image, settings["m_per_px"])
        source_mpp = res.mean if res else None
        # Each axis at the data's m/px: the chip covers the same ground both ways.
        axes = (res.x, res.y) if res else (settings["m_per_px"],) * 2
        ratios = [settings["m_per_px"] / m for m in axes]
        side_x, side_y = (max(1, round(chip["size"] * r)) for r in ratios)
        stride_x, stride_y = (max(1, round((chip["size"] - chip["overlap"]) * r))
                              for r in ratios)
        side = side_x if side_x == side_y else (side_x, side_y)
        stride = stride_x if (side_x == side_y and stride_x == stride_y) else (stride_x,
                                                                                 stride_y)
        low, high = scene_stretch(src, norm)
        width, height, crs = src.width, src.height, src.crs
    inside = [p for p in scene.polygons if _overlaps(p.corners, width, height)]
    if len(inside) < len(scene.polygons):
        outside = len(scene.polygons) - len(inside)
        problems.append(f"{scene.labels}: {outside} of {len(scene.polygons)} label(s) lie outside "
                        f"{scene.image.name}; check that the labels belong to it and their CRS")
        if not inside:
            return None, problems
    scene.polygons = inside
    block_x, block_y = (max(s, round(settings["split"]["block_m"] / m))
                        for s, m in zip((side_x, side_y), axes, strict=True))
    block = block_x if block_x == block_y else (block_x, block_y)
    plan = ScenePlan(scene, width, height, crs.to_string() if crs else None, source_mpp,
                     side, stride, low, high, block)
    return plan, problems


def _overlaps(corners: np.ndarray, width: int, height: int) -> bool:
    xy = np.asarray(corners)
    return bool(xy[:, 0].max() > 0 and xy[:, 0].min() < width
                and xy[:, 1].max() > 0 and xy[:, 1].min() < height)


def _vehicles_in(plan: ScenePlan, region: tuple[int, int, int, int]) -> int:
    """Vehicles whose centre lies in ``region`` (weights the split towards its shares)."""
    c0, r0, c1, r1 = region
    centres = [np.mean(p.corners, axis=0) for p in plan.scene.polygons]
    return sum(c0 <= x < c1 and r0 <= y < r1 for x, y in centres)


def _unit(plan: ScenePlan, region: tuple[int, int, int, int], by_block: bool) -> str:
    return block_name(plan.scene.name, region) if by_block else plan.scene.name


def chip_scene(plan: ScenePlan, assignment: dict[str, str], by_block: bool,
               settings: dict[str, Any], writer: DatasetWriter, progress: tqdm) -> int:
    """Cut, normalise and write the chips of one scene; returns how many were written."""
    chip_cfg, norm = settings["chip"], settings["normalization"]
    bands, size = list(norm["bands"]), chip_cfg["size"]
    rng = np.random.default_rng([chip_cfg["seed"], zlib.crc32(plan.scene.name.encode())])
    written = 0
    with open_raster(plan.scene.image) as src:
        for region in plan.regions:
            split = assignment[_unit(plan, region, by_block)]
            for chip in chip_grid(region, plan.side, plan.stride, size):
                progress.update()
                labels = chip_labels(plan.scene.polygons, chip, chip_cfg["min_visible"])
                # Decide on background chips before reading pixels: most of a scene is empty.
                if not labels and rng.random() >= chip_cfg["background_keep"]:
                    continue
                image, valid = read_image(src, chip.col, chip.row, chip.window, size, bands,
                                          plan.low, plan.high, norm["fill"])
                if image is None or _nodata_share(chip, valid, plan) > chip_cfg["max_nodata"]:
                    continue
                writer.add(split, f"{plan.scene.name}_{chip.col}_{chip.row}", image, labels)
                written += 1
    return written


def _nodata_share(chip: Any, valid: np.ndarray, plan: ScenePlan) -> float:
    """Nodata share of the part of ``chip`` inside the scene (padding past its edge is not
    nodata: a scene smaller than a chip becomes one chip padded with the fill value)."""
    inside = inside_share(chip, plan.width, plan.height)
    return 1.0 - min(1.0, float(valid.mean()) / inside) if inside > 0 else 1.0


def _final_path(path: Path, scratch: Path, out: Path) -> str:
    """Where ``path`` will be once the scratch folder has become ``out``."""
    return str(out / path.relative_to(scratch)) if path.is_relative_to(scratch) else str(path)


def _report(problems: list[str]) -> None:
    for line in problems:
        log.warning("%s", line)


def build_dataset(data_cfg: DictConfig, out: str | Path, task: str = "obb") -> Path:
    """Chip the scenes of ``data_cfg`` into an Ultralytics dataset in ``out``.

    Args:
        data_cfg: the ``data`` config group (conf/data/*.yaml).
        out: dataset folder; replaced atomically when the build succeeds.
        task: ``obb`` (oriented boxes) or ``detect`` (axis-aligned boxes).

    Returns:
        The path of the written data.yaml.

    Raises:
        DetectorError: a config that cannot work, or a build that yields no chips.
    """
    settings = OmegaConf.to_container(data_cfg, resolve=True) if isinstance(
        data_cfg, DictConfig) else dict(data_cfg)
    check_settings(settings, task)
    out = Path(out).expanduser().resolve()
    _check_out(out)
    if settings["source"] == "yolo":
        return _import_yolo(settings, out, task)
    with atomic_dir(out) as scratch:
        scenes, problems = read_scenes(settings, scratch)
        plans = []
        for scene in scenes:
            try:
                plan, scene_problems = plan_chipping(scene, settings)
            except DetectorError as err:
                plan, scene_problems = None, [str(err)]
            problems += scene_problems
            if plan:
                plans.append(plan)
        _report(problems)
        if not plans:
            raise DetectorError(f"{settings.get('root') or 'data.synth'}: no usable scene "
                                f"({len(problems)} problem(s) above); fix them and rerun")
        split_cfg = settings["split"]
        by_block = split_cfg["by"] == "block" or (
            split_cfg["by"] == "auto"
            and not scenes_are_enough(len(plans), split_cfg["val"], split_cfg["test"]))
        for plan in plans:
            plan.set_regions(by_block)
        units = {_unit(p, r, by_block): _vehicles_in(p, r) for p in plans for r in p.regions}
        assignment = assign_splits(units, split_cfg["val"], split_cfg["test"], split_cfg["seed"])
        writer = DatasetWriter(scratch, task, settings["classes"])
        total = sum(len(chip_grid(r, p.side, p.stride, 1)) for p in plans for r in p.regions)
        scene_records = []
        # xView keeps every image's boxes in one file; the others have NAME.geojson per scene.
        labels_format = "xview" if settings["source"] == "xview" else "geojson"
        with progress_bar(total=total, unit="chip", desc="chipping") as progress:
            for plan in plans:
                chips = chip_scene(plan, assignment, by_block, settings, writer, progress)
                scene_records.append(_scene_record(plan, assignment, by_block, chips,
                                                   scratch, out, labels_format))
        splits = writer.splits_written()
        _check_counts(writer, problems, split_cfg)
        write_data_yaml(scratch / "data.yaml", out, settings["classes"],
                        {s: f"images/{s}" for s in splits})
        info = _info(settings, task, writer.counts, problems)
        info["split"]["by"] = "block" if by_block else "scene"
        info["scenes"] = scene_records
        write_dataset_json(scratch / "dataset.json", info)
    _summary(writer.counts, problems, out)
    return out / "data.yaml"


def _scene_record(plan: ScenePlan, assignment: dict[str, str], by_block: bool, chips: int,
                  scratch: Path, out: Path, labels_format: str) -> dict[str, Any]:
    record: dict[str, Any] = {
        "name": plan.scene.name,
        "image": _final_path(plan.scene.image, scratch, out),
        "labels": _final_path(plan.scene.labels, scratch, out),
        "labels_format": labels_format,
        "size": [plan.width, plan.height], "crs": plan.crs, "m_per_px": plan.m_per_px,
        "chip_side": plan.side,
        "stretch": {"low": plan.low.tolist(), "high": plan.high.tolist()},
        "instances": len(plan.scene.polygons), "chips": chips,
    }
    if by_block:
        record["blocks"] = [{"bounds": list(r), "split": assignment[_unit(plan, r, True)]}
                            for r in plan.regions]
    else:
        record["split"] = assignment[plan.scene.name]
    return record


def _check_counts(writer: DatasetWriter, problems: list[str], split_cfg: dict[str, Any]) -> None:
    counts = writer.counts
    if not any(counts[s]["chips"] for s in SPLITS):
        raise DetectorError(f"no chips written ({len(problems)} problem(s) above); check "
                            "data.chip.max_nodata / background_keep and the labels")
    for split in ("train", "val"):
        if not counts[split]["chips"]:
            raise DetectorError(f"the {split} split got no chips; add scenes, use "
                                "data.split.by=block or lower data.split.block_m")
    if split_cfg["test"] > 0 and not counts["test"]["chips"]:
        log.warning("the test split got no chips; data.yaml lists no test split")


def _info(settings: dict[str, Any], task: str, counts: dict[str, Any],
          problems: list[str]) -> dict[str, Any]:
    """dataset.json body shared by every source."""
    info = {
        "format": FORMAT,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "source": settings["source"],
        "task": task,
        "classes": settings["classes"],
        "m_per_px": settings["m_per_px"],
        "chip": {k: settings["chip"][k] for k in
                 ("size", "overlap", "min_visible", "max_nodata", "background_keep")},
        "normalization": settings["normalization"],
        "channel_order": "PNG holds the bands of normalization.bands as R, G, B",
        "split": dict(settings["split"]),
        "splits": counts,
        "problems": problems,
        "config": settings,
    }
    if settings["source"] == "synthetic":  # the whole generator config, not only overrides
        info["synth"] = synth_fingerprint(settings.get("synth"))
    return info


def _summary(counts: dict[str, Any], problems: list[str], out: Path) -> None:
    for split in SPLITS:
        if counts[split]["chips"]:
            per_class = ", ".join(f"{k} {v}" for k, v in counts[split]["instances"].items())
            log.info("%-5s %5d chips (%d background): %s", split, counts[split]["chips"],
                     counts[split]["background_chips"], per_class)
    log.info("dataset written to %s (%d problem(s)%s)", out, len(problems),
             ", listed above and in dataset.json" if problems else "")


def _import_yolo(settings: dict[str, Any], out: Path, task: str) -> Path:
    """data=yolo: validate an existing dataset, write data.yaml + dataset.json pointing at it."""
    yaml_path = find_data_yaml(settings["root"])
    data, root, names, counts, problems = scan_yolo_dataset(yaml_path, task,
                                                            settings.get("classes"))
    _report(problems)
    if not counts["train"]["chips"] or not counts["val"]["chips"]:
        raise DetectorError(f"{yaml_path}: train or val has no usable image; fix the problems "
                            "above or the split entries")
    with atomic_dir(out) as scratch:
        write_data_yaml(scratch / "data.yaml", root, names,
                        {s: data[s] for s in SPLITS if data.get(s)})
        info = _info({**settings, "classes": names}, task, counts, problems)
        info["scenes"] = []
        info["dataset"] = str(yaml_path.resolve())
        write_dataset_json(scratch / "dataset.json", info)
    _summary(counts, problems, out)
    return out / "data.yaml"
