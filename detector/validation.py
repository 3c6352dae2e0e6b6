"""Start-up checks of composed configs: a wrong value fails with one line naming the key.

Hydra's struct mode already rejects unknown keys (on the command line and in
:func:`detector.infer.api.config`); these rules catch values of the right key that cannot
work: out of range, an unknown choice, or a group (``merge``, ``tiling``) replaced by a
scalar. Every entry point calls :func:`check_config` before doing any work.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from detector.bundle import TASKS
from detector.errors import DetectorError
from detector.raster import NORMALIZATION_METHODS, check_normalization
from detector.shift import SIGNALS

_MISSING = object()


@dataclass(frozen=True)
class Rule:
    """What a value must be: ``ok(value)`` and the words for it in the error."""

    ok: Callable[[Any], bool]
    expect: str


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def between(lo: float | None, hi: float | None, *, open_lo: bool = False,
            optional: bool = False, integer: bool = False) -> Rule:
    """A number in [lo, hi] (``open_lo``: lo excluded); None allowed when ``optional``."""
    def ok(v: Any) -> bool:
        if v is None:
            return optional
        if not _number(v) or (integer and int(v) != v):
            return False
        above = lo is None or (v > lo if open_lo else v >= lo)
        return above and (hi is None or v <= hi)

    kind = "an integer" if integer else "a number"
    low = "" if lo is None else f"{'>' if open_lo else '>='} {lo:g}"
    high = "" if hi is None else f"<= {hi:g}"
    expect = f"{kind} {' and '.join(x for x in (low, high) if x)}".strip()
    return Rule(ok, expect + (" or null" if optional else ""))


def one_of(*choices: Any, optional: bool = False) -> Rule:
    """One of ``choices`` (or None when ``optional``)."""
    return Rule(lambda v: v in choices or (optional and v is None),
                "one of " + ", ".join(map(str, choices)) + (" or null" if optional else ""))


def boolean(optional: bool = False) -> Rule:
    return Rule(lambda v: isinstance(v, bool) or (optional and v is None),
                "true or false" + (" or null" if optional else ""))


def _normalization_ok(value: Any) -> bool:
    try:
        check_normalization(dict(value) if isinstance(value, Mapping) else value)
    except (ValueError, TypeError):
        return False
    return True


def mapping(key: str) -> Rule:
    """A group of keys that must stay a group (``merge=nms`` would replace it)."""
    return Rule(lambda v: isinstance(v, Mapping),
                f"a group of keys; set one of them instead ({key}.KEY=VALUE)")



UNIT = between(0, 1)
UNIT_OPEN = between(0, 1, open_lo=True)
NORMALIZATION = Rule(_normalization_ok, "a normalisation spec: bands, method ("
                     + " | ".join(NORMALIZATION_METHODS)
                     + "), percentiles [low, high], fill 0..255")


def prefixed(prefix: str, rules: Mapping[str, Rule]) -> dict[str, Rule]:
    """``rules`` with keys under ``prefix`` (the group itself must stay a group)."""
    return {prefix: mapping(prefix), **{f"{prefix}.{k}": r for k, r in rules.items()}}


TILING = {"tile_px": between(32, None, optional=True, integer=True),
          "overlap_m": between(0, None), "core_margin_m": between(0, None)}


def _merge_method(value: Any) -> bool:
    from detector.infer.merge import MERGERS  # here: detector.infer imports this module

    return value in MERGERS


MERGE = {"method": Rule(_merge_method, "a merge method of detector.infer.merge.MERGERS "
                        "(ownership, ownership_nms)"), "metric": one_of("iou", "ios"),
         "threshold": UNIT_OPEN, "cross_tile_only": boolean()}
CALIBRATION = {"candidate_conf": between(0, 1, open_lo=True), "iou": UNIT_OPEN,
               **prefixed("nms", {"iou": UNIT_OPEN, "agnostic": boolean()}),
               "min_samples": between(1, None, integer=True),
               "max_det": between(1, None, integer=True),
               "batch": between(1, None, integer=True),
               "level": one_of("scenes", "chips"), "operating": one_of("count", "f1"),
               "shift.alarm.threshold_z": between(0, None, open_lo=True),
               "shift.alarm.use": Rule(lambda v: isinstance(v, list) and bool(v)
                                       and set(v) <= set(SIGNALS),
                                       f"a non-empty list of {', '.join(SIGNALS)}")}
DATA_SOURCES = ("synthetic", "geojson", "xview", "yolo")
DATA = {"source": one_of(*DATA_SOURCES),
        "m_per_px": between(0, None, open_lo=True),
        "source_m_per_px": between(0, None, open_lo=True, optional=True),
        **prefixed("chip", {"size": between(32, None, integer=True),
                            "overlap": between(0, None, integer=True),
                            "min_visible": UNIT_OPEN, "max_nodata": UNIT,
                            "background_keep": UNIT}),
        "normalization": NORMALIZATION,
        **prefixed("split", {"val": UNIT, "test": UNIT, "by": one_of("auto", "scene", "block"),
                             "block_m": between(0, None, open_lo=True)})}
TASK = one_of(*TASKS)


def _http_url(value: Any) -> bool:
    return value is None or (isinstance(value, str)
                             and value.split("://")[0].lower() in ("http", "https"))


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) and v for v in value)


_DATE = r"(\d{4}-\d{2}-\d{2}([Tt ][0-9:.]+([Zz]|[+-]\d{2}:?\d{2})?)?|\.\.)?"


def _interval(value: Any) -> bool:
    import re

    if value is None:
        return True
    text = str(value)
    parts = text.split("/")
    return 1 <= len(parts) <= 2 and text != ".." and all(
        re.fullmatch(_DATE, p) for p in parts) and any(p not in ("", "..") for p in parts)


STAC = {"url": Rule(_http_url, "an http(s):// STAC API root or null"),
        "collections": Rule(_strings, "a list of collection ids, e.g. [maxar-open-data]"),
        "datetime": Rule(_interval, "a date or interval, e.g. 2018-01-01/2023-12-31 "
                                    "(.. for open) or null"),
        "asset": Rule(lambda v: v is None or (isinstance(v, str) and bool(v)),
                      "an asset key, e.g. visual, or null"),
        "max_cloud_cover": between(0, 100, optional=True),
        "max_off_nadir": between(0, 90, optional=True),
        "min_aoi_share": UNIT, "limit": between(1, None, integer=True, optional=True)}

RULES: dict[str, dict[str, Rule]] = {
    "infer": {"conf": between(0, 1, open_lo=True, optional=True),
              "iou": between(0, 1, open_lo=True, optional=True),
              "agnostic_nms": boolean(optional=True), "half": boolean(optional=True),
              "max_det": between(1, None, integer=True),
              "batch": between(1, None, integer=True, optional=True),
              "prefetch": between(1, None, integer=True),
              "m_per_px": between(0, None, open_lo=True, optional=True),
              "overwrite": boolean(), "quicklook": boolean(), "progress": boolean(),
              "precision": one_of("auto", "fp32", "int8"),
              "quicklook_max_side": between(16, None, integer=True),
              "quicklook_inset_m": between(0, None, open_lo=True),
              "dry_run": boolean(),
              **prefixed("tiling", TILING), **prefixed("merge", MERGE),
              **prefixed("stac", STAC)},
    "monitor": {"dry_run": boolean(), **prefixed("stac", STAC)},
    "evaluate": {"iou": UNIT_OPEN, "min_inside": UNIT,
                 "class_agnostic": one_of("auto", True, False),
                 "geometry": one_of("auto", "rotated", "axis_aligned"),
                 "plots": boolean(), "quicklook": boolean(), "infer": mapping("infer")},
    "train": {**prefixed("data", DATA), **prefixed("calibration", CALIBRATION),
              "model.task": TASK, "trainer": mapping("trainer"),
              "trainer.imgsz": between(32, None, integer=True),
              "trainer.epochs": between(1, None, integer=True),
              "trainer.time": between(0, None, open_lo=True, optional=True),
              "evaluate_test": boolean(), "tensorboard": boolean()},
    "dataset": {**prefixed("data", DATA), "task": TASK},
    "adapt": {**prefixed("calibration", CALIBRATION),
              "minutes": between(0, None, open_lo=True), "force": boolean(),
              "tie": between(0, None), "reserve": between(0, 1),
              **prefixed("budget", {"min_train_s": between(0, None, open_lo=True),
                                    "finetune_overhead_s": between(0, None),
                                    "fixed_s": between(0, None),
                                    "max_train_s": between(0, None, open_lo=True,
                                                           optional=True)}),
              **prefixed("replay", {"scenes": between(0, None, integer=True),
                                    "size": between(64, None, integer=True),
                                    "share": between(0, 0.9)}),
              "trainer": mapping("trainer")},
    "recalibrate": {**prefixed("calibration", CALIBRATION),
                    "split": one_of("train", "val", "test"), "progress": boolean()},
}


def _lookup(cfg: Any, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        if not isinstance(node, Mapping | DictConfig) or part not in node:
            return _MISSING
        node = node[part]
    if isinstance(node, DictConfig) or OmegaConf.is_list(node):
        return OmegaConf.to_container(node, resolve=True)
    return node


def check_values(cfg: Any, rules: Mapping[str, Rule], where: str) -> None:
    """Check each ``rules`` key present in ``cfg`` (a DictConfig or plain dict).

    Raises:
        DetectorError: ``KEY=VALUE: must be ...`` for the first value that breaks its rule.
    """
    for key, rule in rules.items():
        value = _lookup(cfg, key)
        if value is not _MISSING and not rule.ok(value):
            raise DetectorError(f"{key}={value!r}: must be {rule.expect}; fix it in {where} "
                                "or on the command line")


def check_config(cfg: DictConfig, name: str) -> None:
    """Check the composed ``conf/<name>.yaml`` (``infer``, ``evaluate``, ``train``,
    ``dataset``, ``recalibrate``, ``monitor``) before any work starts.

    Raises:
        DetectorError: one line naming the key, its value and what it must be.
    """
    check_values(cfg, RULES[name], f"conf/{name}.yaml")
