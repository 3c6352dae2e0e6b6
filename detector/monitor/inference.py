"""Counts per scene through ``detector.infer``, reusing results already in ``out``.

Beside each scene's counts JSON we write ``<scene>.monitor.json``: the model (weights and
card sha256), the AOI (file sha256) and the scene file (size, mtime; a URL or STAC asset by
its address and item date) the counts were made with. A scene is counted again when any of
them changed, so adding next month's scene costs one scene, and a new model or AOI recounts
everything.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from detector.atomic import sha256_file, write_text
from detector.bundle import card_path, resolve_weights
from detector.infer.reuse import aoi_identity, scene_identity
from detector.remote import SceneRef
from detector.scene_files import unique_names

log = logging.getLogger(__name__)

Runner = Callable[..., list[Any]]  # detector.infer.api.run's signature


def model_identity(weights: str | Path | None) -> dict[str, Any]:
    """The weights path and the sha256 of the weights and of their card (None without one).

    The card counts too: recalibration rewrites it and changes the counts.

    Raises:
        DetectorError: the weights file does not exist.
    """
    path = resolve_weights(weights)
    card = card_path(path)
    return {"path": str(path), "sha256": sha256_file(path),
            "card_sha256": sha256_file(card) if card.is_file() else None}


def result_paths(out: Path, name: str) -> tuple[Path, Path]:
    """``<out>/<name>.counts.json`` (written by detector.infer) and its stamp; ``name`` is
    the scene's output name (:func:`detector.scene_files.unique_names`)."""
    return out / f"{name}.counts.json", out / f"{name}.monitor.json"


def reusable(out: Path, scene: Path | SceneRef, name: str, model: dict[str, Any],
             aoi: dict[str, Any] | None) -> dict[str, Any] | None:
    """The scene's counts when they were made with this model, AOI and scene file, else None."""
    counts_path, stamp_path = result_paths(out, name)
    try:
        stamp = json.loads(stamp_path.read_text())
        counts = json.loads(counts_path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    same_scene = {k: v for k, v in stamp.get("scene", {}).items() if k != "path"} == {
        k: v for k, v in scene_identity(scene).items() if k != "path"}
    same_model = (stamp.get("model", {}).get("sha256") == model["sha256"]
                  and stamp.get("model", {}).get("card_sha256") == model["card_sha256"]
                  and counts.get("model", {}).get("sha256") == model["sha256"])
    same_aoi = (stamp.get("aoi") or {}).get("sha256") == (aoi or {}).get("sha256")
    return counts if same_scene and same_model and same_aoi else None


def write_stamp(out: Path, scene: Path | SceneRef, name: str, model: dict[str, Any],
                aoi: dict[str, Any] | None) -> None:
    """Record what the scene's counts were made with (after the counts JSON is written)."""
    stamp = {"scene": scene_identity(scene), "model": model, "aoi": aoi}
    write_text(result_paths(out, name)[1], json.dumps(stamp, indent=2))


def count_scenes(scenes: Sequence[Path | SceneRef], out: Path, weights: str | Path | None,
                 aoi: str | Path | None, recount: bool = False,
                 overrides: dict[str, Any] | None = None, runner: Runner | None = None
                 ) -> tuple[dict[Path | SceneRef, dict[str, Any] | str], int]:
    """Counts JSON (dict) or the error (str) for every scene, and how many were reused.

    Args:
        scenes: scene paths, URLs or STAC assets (:class:`~detector.remote.SceneRef`).
        out: folder of the per-scene inference outputs.
        weights: model bundle (None: the bundled model).
        aoi: polygon GeoJSON the counts are restricted to.
        recount: ignore reusable results.
        overrides: further ``conf/infer.yaml`` keys.
        runner: ``detector.infer.api.run`` (injectable for tests).

    Raises:
        DetectorError: weights that cannot be found or loaded.
    """
    model = model_identity(weights)
    area = aoi_identity(aoi)
    names = dict(zip(scenes, unique_names(scenes), strict=True))
    results: dict[Path | SceneRef, dict[str, Any] | str] = {}
    todo = []
    for scene in scenes:
        counts = None if recount else reusable(out, scene, names[scene], model, area)
        if counts is not None:
            results[scene] = counts
        else:
            todo.append(scene)
    reused = len(results)
    if reused:
        log.info("reusing counts of %d scene(s) from %s", reused, out)
    if todo:
        if runner is None:
            from detector.infer.api import run as runner
        extra = dict(overrides or {})
        extra.setdefault("quicklook", False)
        found = runner([str(s) for s in todo], weights=model["path"], out=str(out),
                       aoi=str(aoi) if aoi else None, overwrite=True,
                       scenes=[(s, names[s]) for s in todo], **extra)
        for scene, res in zip(todo, found, strict=True):
            if res.ok:
                write_stamp(out, scene, names[scene], model, area)
                results[scene] = res.counts
            else:
                results[scene] = res.error or "inference failed"
    return results, reused
