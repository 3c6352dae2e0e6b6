"""When was a scene taken: ``dates.csv`` override, then metadata tags, then the file name.

A scene without a date is left out, never guessed. ``TIFFTAG_DATETIME`` comes after the
acquisition-time tags because many processors write the file's creation time there.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from detector.errors import DetectorError
from detector.raster import open_scene
from detector.remote import SceneRef

# Acquisition time first; TIFFTAG_DATETIME last (often the processing time).
DEFAULT_TAGS = ("ACQUISITION_DATETIME", "ACQUISITIONDATETIME", "ACQUISITION_DATE",
                "ACQUISITIONDATE", "DATE_ACQUIRED", "SENSING_TIME", "SENSING_DATE",
                "FIRSTLINETIME", "IMAGING_DATE", "EXIF_DATETIMEORIGINAL", "TIFFTAG_DATETIME")
# Metadata domains that describe pixels, not the acquisition.
_SKIP_DOMAINS = {"IMAGE_STRUCTURE", "DERIVED_SUBDATASETS", "xml:XMP"}
_YEARS = (1950, 2100)
# YYYY-MM-DD, YYYY:MM:DD, YYYY_MM_DD, YYYY.MM.DD, YYYY/MM/DD or YYYYMMDD; one separator kind.
_DATE = re.compile(r"(?<!\d)(\d{4})([-:/._]?)(\d{2})\2(\d{2})(?!\d)")


@dataclass(frozen=True)
class SceneDate:
    """A scene's date and where it came from (``dates.csv``, ``tag NAME`` or ``file name``)."""

    day: date
    source: str


def parse_date(text: str) -> date | None:
    """The first valid calendar date in ``text`` (``2023-06-14``, ``20230614``, ...), or None."""
    for match in _DATE.finditer(str(text)):
        year, month, day = int(match[1]), int(match[3]), int(match[4])
        if not _YEARS[0] <= year <= _YEARS[1]:
            continue
        try:
            return date(year, month, day)
        except ValueError:
            continue
    return None


def date_from_tags(tags: Mapping[str, str], names: Sequence[str] = DEFAULT_TAGS
                   ) -> SceneDate | None:
    """The date in the first tag of ``names`` present in ``tags`` with a valid date.

    A tag matches by its whole name or as the last part of a dotted name
    (``IMAGE_1.FIRSTLINETIME``), case-insensitively.
    """
    upper = {key.upper(): value for key, value in tags.items()}
    for name in names:
        name = name.upper()
        for key, value in upper.items():
            if key == name or key.endswith("." + name):
                day = parse_date(value)
                if day is not None:
                    return SceneDate(day, f"tag {key}")
    return None


def read_tags(path: str | Path | SceneRef) -> dict[str, str]:
    """Every metadata tag of a raster (default domain first, then the other domains).

    Raises:
        DetectorError: the file is not a readable raster.
    """
    with open_scene(path) as src:
        tags = dict(src.tags())
        for domain in src.tag_namespaces() or []:
            if domain not in _SKIP_DOMAINS:
                for key, value in src.tags(ns=domain).items():
                    tags.setdefault(key, value)
    return tags


def read_dates_csv(path: str | Path) -> dict[str, date]:
    """``dates.csv`` as {scene file name: date}; columns ``scene`` and ``date``.

    Raises:
        DetectorError: unreadable file, missing columns, a bad date or a scene named twice.
    """
    path = Path(path)
    try:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DetectorError(f"{path}: cannot read dates CSV ({err}); give a CSV with "
                            "columns scene,date") from err
    if rows and not {"scene", "date"} <= set(rows[0]):
        raise DetectorError(f"{path}: needs columns 'scene' and 'date' (has "
                            f"{list(rows[0])}); e.g. 'scene,date' then 'pass_01.tif,2023-06-14'")
    out: dict[str, date] = {}
    for line, row in enumerate(rows, start=2):
        name = Path((row.get("scene") or "").strip()).name
        day = parse_date(row.get("date") or "")
        if not name or day is None:
            raise DetectorError(f"{path}: line {line}: {row.get('scene')!r}, "
                                f"{row.get('date')!r} is not a scene and a date; "
                                "write e.g. pass_01.tif,2023-06-14")
        if name in out:
            raise DetectorError(f"{path}: line {line}: {name} is listed twice; keep one date")
        out[name] = day
    return out


def scene_date(path: Path | SceneRef, overrides: Mapping[str, date], tag_names: Sequence[str],
               tags: Mapping[str, str] | None = None) -> SceneDate | None:
    """A scene's date: ``dates.csv`` (by file name, or STAC item id), then a STAC item's
    ``datetime``, then tags, then the file name."""
    if path.name in overrides:
        return SceneDate(overrides[path.name], "dates.csv")
    when = path.meta.get("datetime") if isinstance(path, SceneRef) else None
    if when:
        return SceneDate(date.fromisoformat(str(when)[:10]), "STAC datetime")
    found = date_from_tags(read_tags(path) if tags is None else tags, tag_names)
    if found is not None:
        return found
    day = parse_date(path.stem)
    return SceneDate(day, "file name") if day is not None else None


def unknown_scenes(overrides: Mapping[str, date], scenes: Iterable[Path | SceneRef]
                   ) -> list[str]:
    """Names in ``dates.csv`` that match no scene (probably a typo)."""
    names = {p.name for p in scenes}
    return sorted(n for n in overrides if n not in names)
