"""Scene files on disk: find the rasters under a folder and give each scene a unique name.

One copy for every command that takes a folder of scenes (infer, evaluate, recalibrate,
data): a folder means the scenes in it *and in its subfolders*, and a scene's outputs are
named by its path under the folder, so ``2023/site.tif`` and ``2024/site.tif`` (a time
series of one station) never collide.
"""

from __future__ import annotations

import hashlib
import os
import unicodedata
from collections.abc import Sequence
from pathlib import Path

from detector.errors import DetectorError
from detector.remote import SceneRef

RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".img")


def find_rasters(folder: str | Path, pattern: str | None = None) -> list[Path]:
    """Files under ``folder`` (recursively, sorted) that are rasters or match ``pattern``.

    Hidden files and folders (temporary files, ours included) are never scenes.
    """
    folder = Path(folder)
    return sorted(p for p in folder.rglob(pattern or "*")
                  if p.is_file() and (pattern or p.suffix.lower() in RASTER_SUFFIXES)
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


# Longest output name in UTF-8 bytes: room for ``.counts.json`` and a temporary prefix and
# suffix (detector.atomic) within the 255 bytes most file systems allow.
MAX_NAME_BYTES = 180


def _kept(char: str) -> bool:
    """Letters, marks and digits of any script, and ``_ . -``: safe in a file name."""
    return unicodedata.category(char)[0] in "LMN" or char in "_.-"


def safe_name(text: str) -> str:
    """``text`` as a file-name-safe name that keeps the letters of every script.

    Runs of anything else (spaces, slashes, ``:*?"<>|``, control characters, symbols)
    become one ``_``; leading dots go (a hidden file would look like a temporary one);
    a name longer than :data:`MAX_NAME_BYTES` is cut and ends in a hash of the whole
    text, so it stays unique. ``"Станция Хасан 2023.tif"`` → ``"Станция_Хасан_2023.tif"``.
    Every command names scene outputs with this (local paths here; URLs too).
    """
    text = unicodedata.normalize("NFC", text)
    out, gap = [], False
    for char in text:
        if _kept(char):
            out.append(char)
            gap = False
        elif not gap:
            out.append("_")
            gap = True
    name = "".join(out).lstrip(".") or "_"
    if len(name.encode()) > MAX_NAME_BYTES:
        digest = hashlib.sha1(text.encode()).hexdigest()[:8]
        cut = name.encode()[:MAX_NAME_BYTES - 9].decode(errors="ignore")
        name = f"{cut}~{digest}"
    return name


def scene_name(path: Path | SceneRef, root: Path | None) -> str:
    """A file-name-safe name for a scene: its path under ``root`` without suffix.

    ``site/2023/a.tif`` under ``site`` → ``2023__a``; a scene outside ``root`` (or with no
    root) is named by its file stem; a URL by its file stem and a hash of the URL without
    query string (``a_1f2e3d4c``), a STAC asset by its item id: names that do not depend on
    the other scenes of the run or on a signed URL's token, so a rerun finds its outputs.
    Letters of any script are kept (:func:`safe_name`).
    """
    if isinstance(path, SceneRef):  # a URL or STAC asset: see SceneRef.output_stem
        rel = Path(path.output_stem().replace("/", "_"))
    else:
        path = Path(path)
        rel = (path.relative_to(root).with_suffix("")
               if root is not None and path.is_relative_to(root) else Path(path.stem))
    return safe_name("__".join(rel.parts))


def common_folder(paths: Sequence[Path]) -> Path | None:
    """The deepest folder holding every path (None for no paths or different drives)."""
    try:
        return Path(os.path.commonpath([Path(p).absolute().parent for p in paths]))
    except ValueError:
        return None


def unique_names(paths: Sequence[Path | SceneRef], root: Path | None = None) -> list[str]:
    """One distinct name per scene, by its path under ``root`` (default: their common folder).

    Raises:
        DetectorError: two scenes would get one name (e.g. ``a.tif`` and ``a.tiff``, ``A.tif``
            and ``a.tif``, or a scene listed twice), so one's outputs would overwrite the other's.
    """
    local = [p for p in paths if not isinstance(p, SceneRef)]
    base = Path(root).absolute() if root is not None else common_folder(local)
    names = [scene_name(p if isinstance(p, SceneRef) else Path(p).absolute(), base)
             for p in paths]
    first: dict[str, Path | SceneRef] = {}
    for path, name in zip(paths, names, strict=True):
        key = name.casefold()  # one file on case-insensitive file systems (macOS, Windows)
        if key in first:
            raise DetectorError(
                f"{first[key]} and {path}: both would write outputs named {name!r}; list each "
                "scene once and give scenes in one folder distinct names")
        first[key] = path
    return names
