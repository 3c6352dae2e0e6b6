"""Scenes that live elsewhere: GeoTIFFs behind ``https://``, ``http://`` and ``s3://`` URLs.

A remote scene is a :class:`SceneRef`: the URL as given (a signed URL keeps its token, which
reading needs), and what outputs and logs show, ``str(ref)``, the URL without query string,
fragment or user info, so no secret is written anywhere. STAC assets are ``SceneRef`` too
(their ``meta`` holds the item's date, gsd, ... for ``counts.json``), local ones included.

GDAL reads them through its virtual file systems (``/vsicurl/``, ``/vsis3/``) inside
:func:`scene_env`, a ``rasterio.Env`` with the settings a Cloud-Optimized GeoTIFF needs:
no directory listing on open, several ranges per request, a bounded block cache, retries
with back-off on 429/5xx and a time-out. Credentials come from the usual environment
(``AWS_*`` and ``GDAL_HTTP_*`` variables, ``~/.netrc``), which GDAL reads itself.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import rasterio
from rasterio.errors import RasterioError

from detector.errors import DetectorError

try:  # GDAL errors rasterio raises as they are (not wrapped in RasterioIOError)
    from rasterio._err import CPLE_BaseError
except ImportError:  # pragma: no cover - rasterio moved it
    CPLE_BaseError = RasterioError  # type: ignore[misc,assignment]

REMOTE_SCHEMES = ("http", "https", "s3")
# What a failed remote open or read raises.
READ_ERRORS = (RasterioError, CPLE_BaseError)
# Block cache: enough for a few tile rows of a COG, small against a scene (see raster.py).
CACHE_BYTES = 256 * 2**20
# What every remote read runs under (GDAL config options; README "Remote imagery").
COG_OPTIONS: dict[str, Any] = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",  # no listing of the "folder" on open
    "GDAL_HTTP_MULTIRANGE": "YES",  # several block ranges in one request
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    "GDAL_CACHEMAX": CACHE_BYTES,
    "GDAL_HTTP_MAX_RETRY": 4,  # on 429 and 5xx, the delay doubling each time
    "GDAL_HTTP_RETRY_DELAY": 1,  # seconds
    "GDAL_HTTP_TIMEOUT": 60,  # seconds per request
    "GDAL_HTTP_CONNECTTIMEOUT": 15,
    "VSI_CACHE": "TRUE",
}
# A remote GeoTIFF whose longer side is above this needs overviews: the stretch and the
# quicklook read the whole scene decimated (detector.raster.scene_stretch reads <= 1024 px).
OVERVIEWS_ABOVE_PX = 2048
COG_FIX = ("make it a Cloud-Optimized GeoTIFF (gdal_translate -of COG IN.tif OUT.tif, or "
           "rio cogeo create) and serve that")


def is_url(text: Any) -> bool:
    """Whether ``text`` is an ``http(s)://`` or ``s3://`` URL (a remote scene or STAC file)."""
    if isinstance(text, SceneRef):
        return text.remote
    return isinstance(text, str) and urlsplit(text).scheme.lower() in REMOTE_SCHEMES \
        and "://" in text


def redact(url: str) -> str:
    """``url`` without query string, fragment or ``user:password@``: safe to record."""
    if not is_url(url):
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


@dataclass(frozen=True)
class SceneRef:
    """A scene given by URL (or a STAC asset's href, which may be a local path).

    Attributes:
        href: as given; a signed URL keeps its query string (reading needs it).
        meta: STAC item fields recorded in ``counts.json`` (empty for a plain URL).
        hint: name the outputs are given (a STAC item id); None: from the URL.
    """

    href: str
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    hint: str | None = field(default=None, compare=False)

    @property
    def remote(self) -> bool:
        return urlsplit(self.href).scheme.lower() in REMOTE_SCHEMES and "://" in self.href

    @property
    def public(self) -> str:
        """The href as outputs record it (no query string, no credentials)."""
        return redact(self.href)

    @property
    def name(self) -> str:
        """What tables show: the hint (a STAC item id), else the href's file name."""
        if self.hint:
            return self.hint
        return PurePosixPath(urlsplit(self.public).path).name if self.remote \
            else Path(self.href).name

    @property
    def stem(self) -> str:
        """The hint, else the file name without suffix."""
        return self.hint or PurePosixPath(self.name).stem

    def exists(self) -> bool:
        """A local href's file exists; a remote one is only known once opened (True)."""
        return True if self.remote else Path(self.href).exists()

    def output_stem(self) -> str:
        """The name outputs get before sanitising: the hint (a STAC item id), or the file
        stem plus 8 hex of the URL's hash (URLs of one name on other hosts or paths differ;
        a new signed-URL token keeps the name, so a rerun resumes)."""
        if self.hint:
            return self.hint
        digest = hashlib.sha1(self.public.encode()).hexdigest()[:8]
        return f"{self.stem}_{digest}" if self.remote else self.stem

    def __str__(self) -> str:
        return self.public


# A scene as the pipeline passes it around: a local file, or a URL / STAC asset.
Scene = Path | SceneRef


def as_scene(text: str | Path | SceneRef) -> Path | SceneRef:
    """A URL → :class:`SceneRef`; anything else → ``Path``."""
    if isinstance(text, SceneRef | Path):
        return text
    return SceneRef(text) if is_url(text) else Path(text).expanduser()


def gdal_path(scene: str | Path | SceneRef) -> str:
    """The name GDAL opens: ``/vsicurl/URL`` for http(s), ``/vsis3/BUCKET/KEY`` for s3."""
    href = scene.href if isinstance(scene, SceneRef) else str(scene)
    if not is_url(href):
        return href
    parts = urlsplit(href)
    if parts.scheme.lower() == "s3":
        return f"/vsis3/{parts.netloc}{parts.path}"
    return f"/vsicurl/{href}"


def scene_env(scene: Any, **options: Any) -> rasterio.Env:
    """``rasterio.Env`` for reading ``scene``: :data:`COG_OPTIONS` when it is remote (each
    unless the environment sets that GDAL variable itself), plus ``options``. Scoped: the
    caller's settings come back on exit."""
    if not is_url(scene):
        return rasterio.Env(**options)
    cog = {k: v for k, v in COG_OPTIONS.items() if k not in os.environ}
    return rasterio.Env(**{**cog, **options})


_HTTP_CODE = re.compile(r"HTTP (?:response )?code:?\s*(\d{3})", re.IGNORECASE)


def remote_error(scene: Any, err: BaseException) -> DetectorError:
    """One line naming the scene (no query string) and what to do, for a failed remote read."""
    text = " ".join(str(err).split())
    code = _HTTP_CODE.search(text)
    status = int(code.group(1)) if code else None
    if status in (401, 403) or "access denied" in text.lower() or "permission" in text.lower():
        why = (f"access denied (HTTP {status or 403}); set credentials (AWS_ACCESS_KEY_ID/"
               "AWS_SECRET_ACCESS_KEY or AWS_NO_SIGN_REQUEST=YES for s3://, GDAL_HTTP_AUTH/"
               "GDAL_HTTP_USERPWD or ~/.netrc for https://) or renew the signed URL")
    elif status == 404 or (status is None and any(
            w in text.lower() for w in ("does not exist", "no such file", "not recognized"))):
        why = "not found (HTTP 404) or not a raster; check the URL"
    elif status is not None and status >= 400:
        why = (f"the server answered HTTP {status} (after GDAL_HTTP_MAX_RETRY retries); try "
               "again later, then rerun the same command (finished scenes are kept)")
    else:
        why = ("the connection failed or dropped while reading; check the URL and the "
               "network, then rerun the same command (finished scenes are kept)")
    return DetectorError(f"{scene}: {why} [{_strip_secrets(text)[:160]}]")


def _strip_secrets(text: str) -> str:
    """GDAL's message with any URL in it redacted."""
    return re.sub(r"(https?|s3)://[^\s'\"]+", lambda m: redact(m.group(0)), text)


def check_cog(src: rasterio.DatasetReader, scene: Any) -> None:
    """Refuse a remote GeoTIFF that would have to be fetched whole.

    A striped file (no internal tiles) returns whole rows of strips for any window, and a
    large one without overviews is read in full for the stretch and the quicklook.

    Raises:
        DetectorError: naming the URL and the fix (convert to a COG).
    """
    rows, cols = src.block_shapes[0]
    if cols >= src.width and src.width > 512:
        raise DetectorError(f"{scene}: a striped GeoTIFF (no internal tiles, blocks "
                            f"{cols}x{rows}): every window would fetch whole rows of the "
                            f"file; {COG_FIX}")
    if max(src.width, src.height) > OVERVIEWS_ABOVE_PX and not src.overviews(1):
        raise DetectorError(f"{scene}: no overviews in a {src.width}x{src.height} GeoTIFF: "
                            f"the stretch and quicklook would fetch the whole file; {COG_FIX}")
