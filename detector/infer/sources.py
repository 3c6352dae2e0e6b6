"""Turn ``source=`` (a GeoTIFF, a URL, a folder, a glob, a .txt list, or a list of these) into
scenes (STAC sources: :mod:`detector.stac`)."""

from __future__ import annotations

import glob
from collections.abc import Sequence
from pathlib import Path

from detector.errors import DetectorError
from detector.remote import SceneRef, as_scene, is_url
from detector.scene_files import RASTER_SUFFIXES, find_rasters, unique_names

__all__ = ["RASTER_SUFFIXES", "named_scenes", "resolve_sources", "source_root"]


def resolve_sources(source: str | Path | SceneRef) -> list[Path | SceneRef]:
    """Scenes named by ``source``; a folder's are found in its subfolders too, sorted.

    A URL (``https://``, ``http://``, ``s3://``) is one remote scene (a
    :class:`~detector.remote.SceneRef`), and so is each URL line of a ``.txt`` list.

    Raises:
        DetectorError: nothing matches, or a named scene does not exist.
    """
    if isinstance(source, SceneRef) or is_url(source):
        return [as_scene(source)]
    text = str(source)
    path = Path(text).expanduser()
    if path.is_dir():
        scenes = find_rasters(path)
        hint = (f"neither it nor its subfolders hold {'/'.join(RASTER_SUFFIXES)} files; "
                "point source= to scenes")
    elif path.suffix.lower() == ".txt" and path.is_file():
        scenes = [_listed(path.parent, line.strip()) for line in path.read_text().splitlines()
                  if line.strip() and not line.lstrip().startswith("#")]
        hint = "it lists no scenes; put one path per line"
    elif glob.has_magic(text):
        scenes = sorted(Path(p) for p in glob.glob(str(path), recursive=True)
                        if Path(p).is_file())
        hint = "the pattern matches no files"
    else:
        scenes = [path]
        hint = ""
    if not scenes:
        raise DetectorError(f"{source}: {hint}")
    missing = [p for p in scenes if not p.exists()]
    if missing:  # before any work, so a misspelt path leaves nothing behind
        more = f" (and {len(missing) - 1} more listed there)" if len(missing) > 1 else ""
        raise DetectorError(f"{missing[0]}: no such file{more}; check the path given as "
                            f"source={source}")
    return scenes


def _listed(base: Path, line: str) -> Path | SceneRef:
    """A line of a ``.txt`` list: a URL, an absolute path, or a path relative to the list."""
    if is_url(line):
        return SceneRef(line)
    return Path(line) if Path(line).is_absolute() else base / line


def source_root(source: str | Path | SceneRef) -> Path | None:
    """The folder scene names are taken under: a folder source itself, a glob's fixed part.

    None (the scenes' common folder) for a file or a list, whose scenes have no one root.
    """
    if isinstance(source, SceneRef) or is_url(source):
        return None
    text = str(source)
    path = Path(text).expanduser()
    if path.is_dir():
        return path
    if glob.has_magic(text):
        fixed = _until_magic(path.parts)
        return Path(*fixed) if fixed else Path(".")
    return None


def _until_magic(parts: Sequence[str]) -> list[str]:
    fixed = []
    for part in parts:
        if glob.has_magic(part):
            break
        fixed.append(part)
    return fixed


def named_scenes(sources: Sequence[str | Path | SceneRef]) -> list[tuple[Path | SceneRef, str]]:
    """(path, unique output name) of every scene of ``sources``, in order.

    One source names its scenes by their path under it (a folder keeps its scenes' names
    as it grows); several sources name them under their common folder.

    Raises:
        DetectorError: nothing matches, or two scenes would share a name.
    """
    paths = [p for s in sources for p in resolve_sources(s)]
    root = source_root(sources[0]) if len(sources) == 1 else None
    return list(zip(paths, unique_names(paths, root), strict=True))
