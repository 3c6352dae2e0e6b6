"""``monitor(cfg)``: dated scenes of one site → counts over time, baselines, flags, outputs."""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from detector.config import compose
from detector.errors import DetectorError
from detector.infer.aoi import read_aoi
from detector.infer.sources import resolve_sources
from detector.monitor.baseline import Assessment, BaselineSettings, Observation, assess
from detector.monitor.coverage import scene_share
from detector.monitor.dates import (
    SceneDate,
    parse_date,
    read_dates_csv,
    read_tags,
    scene_date,
    unknown_scenes,
)
from detector.monitor.inference import Runner, count_scenes
from detector.progress import progress
from detector.remote import SceneRef
from detector.stac import candidates, stac_sources
from detector.tables import text_table
from detector.validation import check_config

log = logging.getLogger(__name__)


@dataclass
class Entry:
    """One scene of the site and what became of it."""

    scene: Path | SceneRef
    date: SceneDate | None = None
    share: float | None = None  # imaged share of the AOI
    counts: dict[str, Any] = field(default_factory=dict)
    left_out: str | None = None  # why the scene is not in the series
    verdict: Assessment | None = None


@dataclass
class Monitoring:
    """The whole run: the dated series (sorted), what was left out, settings and outputs."""

    site: str
    aoi: str | None
    series: list[Entry]
    left_out: list[Entry]
    settings: BaselineSettings
    min_share: float
    model: dict[str, Any]
    reused: int
    demo_truth: Path | None = None
    outputs: dict[str, Path] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """The site's name in titles."""
        return "synthetic demo site" if self.demo_truth is not None else Path(self.site).name


def config(**overrides: Any) -> DictConfig:
    """Compose ``conf/monitor.yaml`` with Python-valued (dotted) overrides."""
    cfg = compose("monitor")
    OmegaConf.set_struct(cfg, False)
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, str(value) if isinstance(value, Path) else value, merge=True)
    return cfg


def settings_of(cfg: DictConfig) -> BaselineSettings:
    """Validated baseline and flag settings.

    Raises:
        DetectorError: a setting out of range, naming the key.
    """
    b, f = cfg.baseline, cfg.flag
    if b.mode not in ("rolling", "fixed"):
        raise DetectorError(f"baseline.mode={b.mode!r}: use rolling or fixed")
    if f.direction not in ("up", "down", "both"):
        raise DetectorError(f"flag.direction={f.direction!r}: use up, down or both")
    if not 0 < float(f.p) < 1:
        raise DetectorError(f"flag.p={f.p}: give a probability between 0 and 1, e.g. 0.99")
    if not 0 <= float(cfg.min_share) <= 1:
        raise DetectorError(f"min_share={cfg.min_share}: give a share between 0 and 1")
    if float(b.years) <= 0 or int(b.min_dates) < 1:
        raise DetectorError("baseline.years must be > 0 and baseline.min_dates >= 1")
    window = []
    for key in ("start", "end"):
        value = b.get(key)
        day = parse_date(str(value)) if value not in (None, "") else None
        if value not in (None, "") and day is None:
            raise DetectorError(f"baseline.{key}={value!r}: not a date; write YYYY-MM-DD")
        window.append(day)
    return BaselineSettings(str(b.mode), float(b.years), window[0], window[1],
                            int(b.min_dates), bool(b.exclude_flagged), float(f.p),
                            str(f.direction))


def _check_aoi(aoi: str | None) -> None:
    if not aoi:
        return
    read_aoi(aoi)  # the one AOI reader: a clear line now, not one per scene later


def _site(cfg: DictConfig) -> tuple[str, str | None, Path | None]:
    """(source, aoi, demo truth CSV): the demo site when no source (nor STAC search) is
    given."""
    if cfg.get("source") not in (None, ""):
        return str(cfg.source), (str(cfg.aoi) if cfg.get("aoi") else None), None
    if (cfg.get("stac") or {}).get("url"):
        return str(cfg.stac.url), (str(cfg.aoi) if cfg.get("aoi") else None), None
    from detector.monitor.demo import demo_site

    folder, aoi = demo_site(cfg.demo, bool(cfg.progress))
    return str(folder), str(cfg.aoi) if cfg.get("aoi") else str(aoi), folder / "truth.csv"


def dates_csv_path(cfg: DictConfig, source: str) -> Path | None:
    """Where scene dates are overridden: ``dates=``, else ``dates.csv`` in a folder source
    (None for a glob or list source without ``dates=``)."""
    if cfg.get("dates"):
        return Path(str(cfg.dates))
    return Path(source) / "dates.csv" if Path(source).is_dir() else None


def _dates_csv(cfg: DictConfig, source: str) -> dict[str, date]:
    path = dates_csv_path(cfg, source)
    if cfg.get("dates") and not path.is_file():
        raise DetectorError(f"{cfg.dates}: dates CSV not found; give dates=<CSV with the "
                            "header scene,date>")
    return read_dates_csv(path) if path is not None and path.is_file() else {}


def undated_hint(scene: Path | SceneRef, csv_path: Path | None) -> str:
    """Why a scene has no date and exactly how to give it one."""
    where = (f"to {csv_path} (a CSV whose first line is the header 'scene,date'; create it "
             "if missing)" if csv_path is not None else
             "to a CSV whose first line is the header 'scene,date', and pass it as dates=CSV")
    return (f"no date in its metadata or file name; add the line "
            f"'{scene.name},YYYY-MM-DD' {where}")


def inspect(entry: Entry, overrides: dict[str, date], tags: list[str], aoi: str | None,
            csv_path: Path | None = None) -> None:
    """Fill in an entry's date and imaged share, or why it is left out (``csv_path``: the
    dates CSV named in the hint for an undated scene)."""
    try:
        scene_tags = read_tags(entry.scene)  # also: is it a readable raster at all
        entry.date = scene_date(entry.scene, overrides, tags, scene_tags)
        if entry.date is None:
            entry.left_out = undated_hint(entry.scene, csv_path)
            return
        entry.share = scene_share(entry.scene, aoi)
        if entry.share <= 0:
            entry.left_out = ("the AOI lies outside this scene or only over its nodata "
                              "(a scene of another site?); remove it or check the AOI")
    except DetectorError as err:
        entry.left_out = str(err)


def site_scenes(cfg: DictConfig, source: str, aoi: str | None) -> list[Entry]:
    """An entry per scene of the site: its files, URLs or STAC items; STAC items the
    ``stac.*`` filters leave out come already left out, with the reason.

    Raises:
        DetectorError: a missing source, or unreadable STAC.
    """
    stac = cfg.get("stac") or {}
    searching = cfg.get("source") in (None, "") and stac.get("url")
    sources = [] if searching else [source]
    if stac_sources(sources, stac):
        return [Entry(c.scene or SceneRef(c.item_id, hint=c.item_id), left_out=c.skipped)
                for c in candidates(sources, cfg.stac, aoi)]
    return [Entry(s) for s in resolve_sources(source)]  # a missing path: one line, now


def site_entries(cfg: DictConfig, source: str, aoi: str | None) -> list[Entry]:
    """Every scene of the site with its date and imaged AOI share, or why it is left out.

    Raises:
        DetectorError: bad config values, AOI, source or dates CSV.
    """
    _check_aoi(aoi)
    entries = site_scenes(cfg, source, aoi)
    if aoi is None:
        log.warning("no aoi= given: counting whole scenes, which is only comparable when every "
                    "scene covers the same ground")
    overrides = _dates_csv(cfg, source)
    for name in unknown_scenes(overrides, [e.scene for e in entries]):
        log.warning("dates.csv names %s, which is not among the scenes", name)
    csv_path = dates_csv_path(cfg, source)
    for entry in progress(entries, desc="dates and AOI cover", unit="scene",
                          enabled=bool(cfg.progress)):
        if entry.left_out is None:
            inspect(entry, overrides, list(cfg.date_tags), aoi, csv_path)
    drop_duplicates(entries)
    return entries


def dry_run(cfg: DictConfig) -> str:
    """What a monitor run would count: each scene's date, AOI share (STAC: also gsd and
    cloud cover), or why it is left out; nothing is counted."""
    check_config(cfg, "monitor")
    source, aoi, _ = _site(cfg)
    entries = site_entries(cfg, source, aoi)
    rows = [[e.scene.name, str(e.date.day) if e.date else "",
             "" if e.share is None else f"{e.share:.0%}",
             _field(e, "gsd"), _field(e, "eo:cloud_cover"),
             _status(e, float(cfg.min_share))] for e in entries]
    kept = sum(e.left_out is None for e in entries)
    return (text_table(["scene", "date", "AOI imaged", "gsd m", "cloud %", "status"], rows,
                       markdown=False)
            + f"\n{kept} of {len(entries)} scenes would be counted (dry run: nothing counted)")


def _status(entry: Entry, min_share: float) -> str:
    if entry.left_out is not None:
        return f"left out: {entry.left_out}"
    if (entry.share or 0.0) < min_share:
        return f"count, not compared (images < {min_share:.0%} of the AOI)"
    return "count"


def _field(entry: Entry, key: str) -> str:
    meta = entry.scene.meta if isinstance(entry.scene, SceneRef) else {}
    return "" if meta.get(key) is None else f"{meta[key]:g}"


def drop_duplicates(entries: list[Entry]) -> None:
    """Of scenes sharing a date keep the one imaging most of the AOI (then by name)."""
    by_day: dict[date, list[Entry]] = defaultdict(list)
    for e in entries:
        if e.left_out is None and e.date is not None:
            by_day[e.date.day].append(e)
    for day, group in by_day.items():
        group.sort(key=lambda e: (-(e.share or 0.0), e.scene.name))
        for e in group[1:]:
            e.left_out = (f"same date ({day}) as {group[0].scene.name}, which images more of "
                          "the AOI; fix its date in dates.csv or remove one")


def observation(entry: Entry) -> Observation:
    """The wagon total of a counted entry."""
    w = entry.counts["wagons"]
    return Observation(entry.date.day, int(w["count"]), float(w["expected"]),
                       (int(w["ci95"][0]), int(w["ci95"][1])))


def monitor(cfg: DictConfig, runner: Runner | None = None) -> Monitoring:
    """Run site monitoring and write ``timeseries.csv``, ``monitor.png`` and ``report.md``.

    Bad scenes (unreadable, undated, duplicate dates, AOI outside, failed inference) are
    left out with one line each; the rest carries on. ``runner`` stands in for
    ``detector.infer.api.run`` (tests).

    Raises:
        DetectorError: bad settings, AOI, dates CSV or weights, or no scene left to report.
    """
    check_config(cfg, "monitor")
    settings = settings_of(cfg)
    source, aoi, truth = _site(cfg)
    entries = site_entries(cfg, source, aoi)
    todo = [e for e in entries if e.left_out is None]
    out = Path(cfg.out)
    extra = cfg.get("infer")
    infer_overrides = {"progress": bool(cfg.progress),
                       **(OmegaConf.to_container(extra, resolve=True) if extra else {})}
    results, reused = (count_scenes([e.scene for e in todo], out / "scenes", cfg.get("weights"),
                                    aoi, bool(cfg.recount), infer_overrides, runner)
                       if todo else ({}, 0))
    for e in todo:
        result = results[e.scene]
        if isinstance(result, str):
            e.left_out = result
        else:
            e.counts = result
    series = sorted((e for e in entries if e.left_out is None), key=lambda e: e.date.day)
    left_out = [e for e in entries if e.left_out is not None]
    for e in left_out:
        log.warning("left out %s: %s", e.scene.name, e.left_out)
    if not series:
        raise DetectorError(f"{source}: no scene could be dated and counted ("
                            f"{len(left_out)} left out, first: {left_out[0].scene.name}: "
                            f"{left_out[0].left_out})" if left_out else f"{source}: no scenes")
    min_share = float(cfg.min_share)
    comparable = [(e.share or 0) >= min_share for e in series]
    why = [f"imaged {e.share:.0%} of the AOI ({min_share:.0%} needed): not compared"
           for e in series]
    for e, verdict in zip(series, assess([observation(e) for e in series], comparable,
                                         settings, why), strict=True):
        e.verdict = verdict
    model = next((e.counts.get("model", {}) for e in series), {})
    result = Monitoring(source, aoi, series, left_out, settings, min_share, model, reused,
                        truth)
    from detector.monitor.outputs import write_outputs

    result.outputs = write_outputs(result, out)
    return result


def run(source: str | Path | None = None, **overrides: Any) -> Monitoring:
    """Python API: ``run("site/", aoi="station.geojson", out="monitor")``.

    Args:
        source: folder, glob or ``.txt`` list of scenes (paths or URLs) of one site, or
            STAC JSON; None: the ``stac.url`` search when set, else the demo site.
        **overrides: ``conf/monitor.yaml`` keys (dotted allowed), e.g. ``min_share=0.8``.
    """
    return monitor(config(source=None if source is None else str(source), **overrides))
