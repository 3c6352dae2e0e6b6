"""Turn ``source=`` (a GeoTIFF, a folder, a glob, or a .txt list) into scene paths."""

from __future__ import annotations

import glob
from pathlib import Path

from detector.errors import DetectorError

RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".img")


def resolve_sources(source: str | Path) -> list[Path]:
    """Scene paths named by ``source``, sorted within a folder or glob.

    Raises:
        DetectorError: nothing matches.
    """
    text = str(source)
    path = Path(text).expanduser()
    if path.is_dir():
        scenes = sorted(p for p in path.iterdir() if p.suffix.lower() in RASTER_SUFFIXES)
        hint = f"it holds no {'/'.join(RASTER_SUFFIXES)} files; point source= to scenes"
    elif path.suffix.lower() == ".txt" and path.is_file():
        base = path.parent
        scenes = [(base / line.strip()) if not Path(line.strip()).is_absolute()
                  else Path(line.strip())
                  for line in path.read_text().splitlines()
                  if line.strip() and not line.lstrip().startswith("#")]
        hint = "it lists no scenes; put one path per line"
    elif glob.has_magic(text):
        scenes = sorted(Path(p) for p in glob.glob(str(path)) if Path(p).is_file())
        hint = "the pattern matches no files"
    else:
        scenes = [path]
        hint = ""
    if not scenes:
        raise DetectorError(f"{source}: {hint}")
    return scenes
