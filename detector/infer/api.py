"""Python API: ``run(source, weights=None, **overrides) -> list[SceneResult]``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError

from detector.atomic import check_writable
from detector.config import compose
from detector.errors import DetectorError, OutputError
from detector.infer.aoi import read_aoi
from detector.infer.demo import demo_scene
from detector.infer.model import Bundle, all_cores, load_bundle
from detector.infer.outputs import clear_partials, output_paths, write_error
from detector.infer.results import SceneResult
from detector.infer.scene import check_tiling, make_predictor, output_errors, process_scene
from detector.infer.shards import fail_after_tiles, select_shard, task_device
from detector.infer.sources import named_scenes
from detector.infer.summary import summarize
from detector.progress import progress
from detector.raster import gdal_cache
from detector.remote import Scene
from detector.scene_files import unique_names
from detector.stac import Candidate, candidates, dry_run_table, stac_sources
from detector.tables import text_table
from detector.validation import check_config

log = logging.getLogger(__name__)
# Overrides that select a config group option rather than set a value.
CONFIG_GROUPS = ("tiling",)


def config(source: Any = None, weights: Any = None, **overrides: Any) -> DictConfig:
    """Compose ``conf/infer.yaml`` with Python-valued overrides (dotted keys allowed).

    Keys are checked as on the command line: an unknown key is an error, not ignored.

    Raises:
        DetectorError: an override names a key ``conf/infer.yaml`` does not have.
    """
    groups = [f"{k}={v}" for k, v in overrides.items() if k in CONFIG_GROUPS]
    cfg = compose("infer", groups)
    for key, value in overrides.items():
        if key in CONFIG_GROUPS:
            continue
        try:
            OmegaConf.update(cfg, key, str(value) if isinstance(value, Path) else value,
                             merge=True)
        except (ConfigAttributeError, ConfigKeyError) as err:
            raise DetectorError(f"{key}: not a key of conf/infer.yaml; check its spelling "
                                f"(top-level keys: {', '.join(cfg)})") from err
    if source is not None:
        cfg.source = [str(s) for s in source] if _is_list(source) else str(source)
    if weights is not None:
        cfg.weights = str(weights)
    return cfg


def _is_list(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str | bytes)


def sources_of(cfg: DictConfig) -> list[str]:
    """``cfg.source`` as a list (empty when unset)."""
    source = cfg.get("source")
    if source in (None, ""):
        return []
    return [str(s) for s in source] if OmegaConf.is_list(source) else [str(source)]


def stac_candidates(cfg: DictConfig) -> list[Candidate] | None:
    """The STAC items of the run, kept or left out (None when the source is not STAC)."""
    sources, stac = sources_of(cfg), cfg.get("stac") or {}
    if not stac_sources(sources, stac):
        return None
    return candidates(sources, stac, cfg.get("aoi"))


def scenes_of(cfg: DictConfig) -> list[tuple[Scene, str]]:
    """(scene, unique output name) of every scene of ``cfg.source`` or its STAC search (all
    shards); the cached demo scene when there is neither."""
    found = stac_candidates(cfg)
    if found is not None:
        scenes = [c.scene for c in found if c.skipped is None and c.scene is not None]
        if not scenes:
            raise DetectorError(f"every one of the {len(found)} STAC items was left out (first: "
                                f"{found[0].item_id}: {found[0].skipped}); relax the stac.* "
                                "filters or pick stac.asset (dry_run=true lists them)")
        return list(zip(scenes, unique_names(scenes), strict=True))
    sources = sources_of(cfg)
    if not sources:
        path = demo_scene(int(cfg.demo_seed))
        return [(path, path.stem)]
    return named_scenes(sources)


def dry_run(cfg: DictConfig) -> str:
    """What would be counted, one line per scene (STAC: date, AOI share, gsd, cloud cover)."""
    found = stac_candidates(cfg)
    if found is not None:
        return dry_run_table(found)
    scenes = scenes_of(cfg)
    rows = [[name, str(scene)] for scene, name in scenes]
    return (text_table(["name", "scene"], rows, markdown=False)
            + f"\n{len(rows)} scene(s) would be counted (dry run: nothing counted)")


def shard_of(cfg: DictConfig) -> tuple[int, int]:
    """``(shards, shard)`` of this task (1, 0 for an unsharded run)."""
    shards, shard = int(cfg.get("shards") or 1), int(cfg.get("shard") or 0)
    if shards < 1 or not 0 <= shard < shards:
        raise DetectorError(f"shards={shards} shard={shard}: need shards >= 1 and "
                            f"0 <= shard < shards, e.g. shards=3 shard=0,1,2")
    return shards, shard


def run_config(cfg: DictConfig, bundle: Bundle | None = None, predictor: Any = None,
               scenes: Sequence[tuple[Scene, str]] | None = None) -> list[SceneResult]:
    """Run inference over this task's scenes of ``cfg``; one failing scene does not stop the
    rest.

    With ``shards=N shard=i`` the task takes its area-balanced share of the scenes
    (:mod:`detector.infer.shards`) and leaves the summary to the reduce step; a finished
    scene made from the same inputs is reused (:mod:`detector.infer.reuse`), so a rerun
    redoes only what is missing or changed.
    ``bundle``/``predictor`` may be injected (tests use a stand-in model); ``scenes``
    ((scene, output name) pairs, e.g. from ``detector.monitor``) replaces ``cfg.source``'s.
    ``dry_run=true`` prints the scenes (STAC: date, AOI share, gsd, cloud cover) and
    counts nothing.

    Raises:
        DetectorError: a config value that cannot work (with this model too), no scenes
            or a missing one, bad shard keys, or weights that cannot be loaded.
        OutputError: ``out`` cannot take files (checked first, and on every write).
    """
    check_config(cfg, "infer")
    if cfg.get("aoi"):
        read_aoi(cfg.aoi)  # a bad AOI is one line before any work, not one per scene
    if cfg.get("dry_run"):
        print(dry_run(cfg), flush=True)
        return []
    scenes = list(scenes) if scenes is not None else scenes_of(cfg)
    shards, shard = shard_of(cfg)
    mine = select_shard(scenes, [p for p, _ in scenes], shards, shard)
    if shards > 1:
        log.info("shard %d of %d: %d of %d scenes", shard, shards, len(mine), len(scenes))
    if not mine:
        return []
    if bundle is None:
        device = task_device(cfg.device, shard, _gpu_count())
        # lazy: an exported backend with a cached export never loads the torch network
        bundle = load_bundle(cfg.get("weights"), device, cfg.get("half"), lazy=True)
    check_tiling(cfg, bundle.card)  # before check_out: a refused run leaves no out folder
    check_out(Path(cfg.out))
    if predictor is None:
        predictor = make_predictor(bundle, cfg)
    predictor = fail_after_tiles(predictor)
    out = Path(cfg.out)
    desc = f"shard {shard}/{shards}" if shards > 1 else "scenes"
    with all_cores(bundle.device), gdal_cache():
        results = [run_scene(path, name, out, bundle, predictor, cfg)
                   for path, name in progress(mine, desc=desc, unit="scene",
                                              enabled=bool(cfg.progress) and len(mine) > 1)]
    if shards == 1 and len(scenes) > 1:
        summarize(out, scenes)
    return results


def reduce_run(cfg: DictConfig) -> dict[str, int]:
    """Rebuild ``out/summary.csv`` and ``summary.json`` from the per-scene outputs of every
    shard of ``cfg.source``; print and return the tally (done / failed / missing)."""
    from detector.infer.summary import status_line

    summary = summarize(cfg.out, scenes_of(cfg))
    counts = {k: summary[k] for k in ("scenes", "done", "failed", "missing")}
    print(status_line(counts, Path(cfg.out)), flush=True)
    return counts


def run_scene(path: Scene, name: str, out: Path, bundle: Bundle, predictor: Any,
              cfg: DictConfig) -> SceneResult:
    """One scene; a failure is written as ``<name>.error.json`` (the reason) and returned.

    The reason is not logged here: the caller reports it once (the table, or the exit line).

    Raises:
        OutputError: the output folder cannot take files (stops the whole run).
    """
    paths = output_paths(out, name)
    clear_partials(paths)
    if cfg.overwrite:  # the done marker goes first, so a redo killed halfway is not "done"
        paths["counts"].unlink(missing_ok=True)
    try:
        result = process_scene(path, bundle, predictor, cfg, name)
    except OutputError:
        raise
    except DetectorError as err:
        log.debug("%s", err)
        result = SceneResult(path, False, str(err))
    except Exception as err:  # noqa: BLE001 - one bad scene must not stop the others
        log.exception("%s: failed", path)
        result = SceneResult(path, False, f"{path}: {type(err).__name__}: {err}")
    result.name = name
    with output_errors(out):
        if result.ok:
            paths["error"].unlink(missing_ok=True)
        else:
            write_error(paths["error"], path, str(result.error))
    return result


def check_out(out: Path) -> None:
    """Refuse an output folder that cannot take files before any work is done.

    Raises:
        OutputError: ``out`` cannot be created or written (full, read-only, no permission).
    """
    reason = check_writable(out)
    if reason:
        raise OutputError(f"out={out}: cannot write there ({reason}); free space there or "
                          "choose another out=")


def _gpu_count() -> int:
    from detector.infer.model import gpu_possible

    if not gpu_possible():
        return 0
    import torch

    return torch.cuda.device_count()


def run(source: Any = None, weights: str | Path | None = None,
        scenes: Sequence[tuple[Scene, str]] | None = None, **overrides: Any
        ) -> list[SceneResult]:
    """Detect and count vehicles in one or more scenes.

    Args:
        source: a GeoTIFF, a URL (``https://``, ``http://``, ``s3://``), a folder, a glob,
            a ``.txt`` listing scenes, STAC JSON (Item, ItemCollection, Catalog,
            Collection), or a list of these; None runs the cached demo scene, or the
            ``stac.url`` search when that is set.
        weights: a ``.pt`` bundle; None uses the bundled model.
        scenes: (scene, output name) pairs already resolved (URLs as
            :class:`~detector.remote.SceneRef`, e.g. STAC items), counted instead of
            ``source``'s; ``source`` is then only recorded.
        **overrides: ``conf/infer.yaml`` keys, e.g. ``out="results"``, ``aoi="station.geojson"``,
            ``quicklook=False``, ``tiling="default"``, ``**{"merge.threshold": 0.6}``.

    Returns:
        One :class:`SceneResult` per scene (failed scenes have ``ok=False`` and ``error``).
    """
    if scenes is not None and source is None:
        source = [str(scene) for scene, _ in scenes]
    return run_config(config(source, weights, **overrides), scenes=scenes)
