"""When a finished scene in ``out`` may be reused: only for the same inputs.

Each counts JSON records under ``inputs`` what its counts were made from: the scene file
(absolute path, size, modification time; a URL without its query string), the model
(weights and card sha256), the AOI (path and sha256) and the settings that change counts.
A rerun reuses a scene only when all of these are this run's; otherwise it counts the scene
again and says why in one line.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from detector.atomic import sha256_file
from detector.remote import SceneRef

# Settings that do not change the counts: where the model ran.
NOT_COUNT_SETTINGS = ("device",)


def scene_identity(scene: str | Path | SceneRef) -> dict[str, Any]:
    """The scene as it is now: absolute path, size (bytes) and mtime (ns) of a file.

    A remote scene (URL, STAC asset) is known by its address without query string (a new
    signed-URL token is the same scene), its size and mtime being unknown without a request
    (None); a STAC asset adds its item's ``datetime``.
    """
    if isinstance(scene, SceneRef) and scene.remote:
        ident: dict[str, Any] = {"path": scene.public, "size": None, "mtime_ns": None}
    else:
        path = Path(scene.href if isinstance(scene, SceneRef) else scene).absolute()
        stat = path.stat()
        ident = {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    if isinstance(scene, SceneRef) and scene.meta:
        ident["datetime"] = scene.meta.get("datetime")
    return ident


def aoi_identity(aoi: str | Path | None) -> dict[str, Any] | None:
    """The AOI file's path and sha256 (None when counting whole scenes)."""
    if not aoi:
        return None
    return {"path": str(Path(aoi).absolute()), "sha256": sha256_file(aoi)}


def card_sha256(card: Any) -> str:
    """sha256 of a model card's content (recalibration rewrites it and changes counts)."""
    text = json.dumps(card.to_dict(), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def run_inputs(scene: Path | SceneRef, model_sha256: str, card: Any, aoi: str | Path | None,
               settings: dict[str, Any]) -> dict[str, Any]:
    """What this run counts ``scene`` from (stored in its counts JSON under ``inputs``)."""
    return {"scene": scene_identity(scene),
            "model": {"sha256": model_sha256, "card_sha256": card_sha256(card)},
            "aoi": aoi_identity(aoi),
            "settings": {k: v for k, v in settings.items() if k not in NOT_COUNT_SETTINGS}}


def _changed_settings(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += _changed_settings(a, b, f"{prefix}{key}.")
        elif a != b:
            keys.append(f"{prefix}{key}")
    return keys


def stale_reason(counts_json: Path, inputs: dict[str, Any]) -> str | None:
    """Why the finished scene in ``counts_json`` cannot stand for this run (None: it can)."""
    try:
        old = json.loads(counts_json.read_text()).get("inputs")
    except (OSError, json.JSONDecodeError, AttributeError):
        return f"{counts_json.name} is unreadable"
    if not isinstance(old, dict):
        return f"{counts_json.name} does not record what it was made from (an older version)"
    scene, new_scene = old.get("scene") or {}, inputs["scene"]
    if scene.get("path") != new_scene["path"]:
        return f"it holds the counts of another scene file ({scene.get('path')})"
    if {k: v for k, v in scene.items() if k != "path"} != {
            k: v for k, v in new_scene.items() if k != "path"}:
        return "the scene file changed since it was counted"
    if old.get("model") != inputs["model"]:
        return "another model (weights or card) than the one counted with"
    if (old.get("aoi") or {}).get("sha256") != (inputs["aoi"] or {}).get("sha256"):
        return "another AOI than the one counted with"
    changed = _changed_settings(old.get("settings") or {}, inputs["settings"])
    if changed:
        return f"other settings than the ones counted with ({', '.join(changed)})"
    return None
