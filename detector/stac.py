"""STAC sources → scenes: an Item, an ItemCollection, a static Catalog/Collection, or an API
search (``stac.url=... stac.collections=[...] stac.datetime=A/B``, bbox from ``aoi=``).

Read with ``pystac`` and searched with ``pystac-client``. Each item gives one scene, a
:class:`~detector.remote.SceneRef` of its chosen asset (``stac.asset``, or an RGB asset
found by ``eo:bands`` common names or the ``visual`` role) named by the item id, whose
``meta`` (date, gsd, EPSG, off-nadir, cloud cover, AOI share) goes into ``counts.json``.
The analysts' filters (``stac.max_cloud_cover``, ``stac.max_off_nadir``,
``stac.min_aoi_share``) leave items out with the reason, which a dry run lists.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urljoin, urlsplit

import shapely
from shapely.geometry import shape

from detector.errors import DetectorError
from detector.remote import SceneRef, is_url, redact

log = logging.getLogger(__name__)
RGB = ("red", "green", "blue")
IMAGE_TYPES = ("image/tiff", "image/vnd.stac.geotiff", "image/jp2")


@dataclass
class Candidate:
    """One STAC item and what became of it: its scene, or why it is left out."""

    item_id: str
    day: date | None
    meta: dict[str, Any]
    scene: SceneRef | None = None
    skipped: str | None = None


def is_stac_source(source: Any) -> bool:
    """Whether ``source`` names STAC JSON (an Item, ItemCollection, Catalog, Collection):
    a ``.json`` file or URL."""
    if isinstance(source, SceneRef) or source is None:
        return False
    text = str(source)
    path = urlsplit(text).path if is_url(text) else text
    return PurePosixPath(path).suffix.lower() == ".json"


def stac_sources(sources: list[Any], stac: Any) -> bool:
    """Whether scenes come from STAC: ``stac.url`` set or every source STAC JSON.

    Raises:
        DetectorError: STAC JSON mixed with other sources in one list.
    """
    flags = [is_stac_source(s) for s in sources]
    if any(flags) and not all(flags):
        raise DetectorError(f"source={[str(s) for s in sources]}: STAC JSON and scene files "
                            "in one list; run them separately")
    return bool(stac.get("url")) or (bool(flags) and all(flags))


def read_items(source: str) -> list[Any]:
    """The items of a STAC file or URL: an Item, an ItemCollection, or every item under a
    static Catalog/Collection (recursively).

    Raises:
        DetectorError: unreadable JSON, or JSON that is no STAC object.
    """
    import pystac

    href = source if is_url(source) else str(Path(source).expanduser().absolute())
    try:
        data = pystac.StacIO.default().read_json(href)
    except Exception as err:  # noqa: BLE001 - urllib, OSError, JSON: one line for all
        raise DetectorError(f"{redact(source)}: cannot read STAC JSON "
                            f"({type(err).__name__}: {err}); check the path or URL") from err
    kind = data.get("type") if isinstance(data, dict) else None
    try:
        if kind == "Feature":
            item = pystac.Item.from_dict(data)
            item.set_self_href(href)
            return [item]
        if kind == "FeatureCollection":
            items = list(pystac.ItemCollection.from_dict(data).items)
            for item in items:  # relative asset hrefs are relative to the file
                for asset in item.assets.values():
                    asset.href = _absolute(asset.href, href)
            return items
        if kind in ("Catalog", "Collection"):
            root = pystac.read_dict(data, href=href)
            return list(root.get_items(recursive=True))
    except pystac.STACError as err:
        raise DetectorError(f"{redact(source)}: not valid STAC ({err}); fix the file") from err
    raise DetectorError(f"{redact(source)}: JSON of type {kind!r} is no STAC Item, "
                        "ItemCollection, Catalog or Collection; give one of those")


def _absolute(href: str, base: str) -> str:
    if is_url(href) or Path(href).is_absolute():
        return href
    return urljoin(base, href) if is_url(base) else str(Path(base).parent / href)


def search_items(url: str, collections: list[str] | None, when: str | None,
                 bbox: list[float] | None, limit: int | None) -> list[Any]:
    """Items of a STAC API search (``pystac-client``), at most ``limit``.

    Raises:
        DetectorError: the API cannot be reached or refuses the search.
    """
    from pystac_client import Client
    from pystac_client.exceptions import APIError

    try:
        client = Client.open(url)
        search = client.search(collections=collections or None, datetime=when or None,
                               bbox=bbox, max_items=limit)
        return list(search.items())
    except (APIError, OSError, ValueError, NotImplementedError) as err:
        raise DetectorError(f"stac.url={redact(url)}: search failed ({type(err).__name__}: "
                            f"{' '.join(str(err).split())[:200]}); check the URL, "
                            "stac.collections and stac.datetime") from err


def aoi_share(item: Any, area: shapely.Geometry | None) -> float | None:
    """Share (0–1) of the AOI inside the item's footprint (lon/lat), None without either."""
    if area is None or item.geometry is None or area.area <= 0:
        return None
    footprint = shape(item.geometry).buffer(0)
    return float(footprint.intersection(area).area / area.area)


def pick_asset(item: Any, key: str | None) -> tuple[str, Any]:
    """The asset to count: ``key``, else ``visual``, else an image asset whose ``eo:bands``
    are red, green, blue, else one with the ``visual`` role.

    Raises:
        DetectorError: no such asset (naming the item and the assets it has).
    """
    assets = item.assets
    have = ", ".join(sorted(assets)) or "none"
    if key:
        if key not in assets:
            raise DetectorError(f"item {item.id}: has no asset {key!r} (assets: {have}); "
                                "set stac.asset to one of them")
        return key, assets[key]
    if "visual" in assets:
        return "visual", assets["visual"]
    for name, asset in assets.items():
        bands = asset.extra_fields.get("eo:bands") or asset.extra_fields.get("bands") or []
        common = [b.get("common_name") or b.get("eo:common_name") for b in bands]
        if common[:3] == list(RGB) and _is_image(asset):
            return name, asset
    for name, asset in assets.items():
        if "visual" in (asset.roles or []) and _is_image(asset):
            return name, asset
    raise DetectorError(f"item {item.id}: no RGB asset (assets: {have}; none is 'visual' or "
                        "has red, green, blue eo:bands); set stac.asset=KEY")


def _is_image(asset: Any) -> bool:
    media = (asset.media_type or "").split(";")[0].strip()
    return not media or media in IMAGE_TYPES or media.startswith("image/tiff")


def item_day(item: Any) -> date | None:
    """The item's date (``datetime``, else ``start_datetime``)."""
    when = item.datetime or item.common_metadata.start_datetime
    return when.date() if when is not None else None


def item_meta(item: Any, key: str, asset: Any, share: float | None) -> dict[str, Any]:
    """What ``counts.json`` records of an item (``stac``): ids, date and acquisition fields."""
    props = item.properties
    epsg = props.get("proj:epsg") or asset.extra_fields.get("proj:epsg")
    code = props.get("proj:code") or asset.extra_fields.get("proj:code")
    if epsg is None and isinstance(code, str) and code.upper().startswith("EPSG:"):
        epsg = int(code.split(":")[1])
    when = item.datetime or item.common_metadata.start_datetime
    meta = {"item": item.id, "collection": item.collection_id, "asset": key,
            "href": redact(asset.get_absolute_href() or asset.href),
            "datetime": when.isoformat() if when else None,
            "gsd": props.get("gsd", asset.extra_fields.get("gsd")),
            "proj:epsg": epsg,
            "view:off_nadir": props.get("view:off_nadir"),
            "eo:cloud_cover": props.get("eo:cloud_cover"),
            "aoi_share": None if share is None else round(share, 4)}
    return meta


def select(items: list[Any], stac: Any, area: shapely.Geometry | None) -> list[Candidate]:
    """Every item as a :class:`Candidate`: with its scene, or left out with the reason.

    Filters: ``max_cloud_cover`` (%), ``max_off_nadir`` (degrees), ``min_aoi_share``; an
    item without the field a filter needs is kept (and says so in the log).
    """
    out = []
    for item in sorted(items, key=lambda i: (str(item_day(i)), i.id)):
        share = aoi_share(item, area)
        cand = Candidate(item.id, item_day(item), {"item": item.id, "aoi_share": share})
        out.append(cand)
        try:
            key, asset = pick_asset(item, stac.get("asset"))
        except DetectorError as err:
            cand.skipped = str(err)
            continue
        cand.meta = item_meta(item, key, asset, share)
        cand.skipped = _filtered(cand.meta, stac)
        if cand.day is None and cand.skipped is None:
            cand.skipped = "no datetime; the item cannot be placed in time"
        href = asset.get_absolute_href() or asset.href
        cand.scene = SceneRef(href, cand.meta, hint=item.id)
    return out


def _filtered(meta: dict[str, Any], stac: Any) -> str | None:
    checks = (("eo:cloud_cover", "max_cloud_cover", "cloud cover {v:g}% > {t:g}%"),
              ("view:off_nadir", "max_off_nadir", "off-nadir {v:g}° > {t:g}°"))
    for field_name, key, text in checks:
        limit, value = stac.get(key), meta.get(field_name)
        if limit is not None and value is not None and float(value) > float(limit):
            return f"{text.format(v=float(value), t=float(limit))} (stac.{key})"
    need, share = float(stac.get("min_aoi_share") or 0), meta.get("aoi_share")
    if share is not None and share < need:
        return f"covers {share:.0%} of the AOI < {need:.0%} (stac.min_aoi_share)"
    return None


def candidates(sources: list[str], stac: Any, aoi: str | Path | None) -> list[Candidate]:
    """The items of ``sources`` (STAC JSON) and of the ``stac.url`` search, selected.

    Raises:
        DetectorError: unreadable STAC, a failed search, or no item at all.
    """
    from detector.infer.aoi import aoi_lonlat  # here: detector.infer imports this module

    area = aoi_lonlat(aoi) if aoi else None
    items = [item for s in sources for item in read_items(s)]
    limit = int(stac["limit"]) if stac.get("limit") else None
    if stac.get("url"):
        bbox = list(area.bounds) if area is not None else None
        collections = list(stac.get("collections") or []) or None
        items += search_items(str(stac.url), collections, stac.get("datetime"), bbox, limit)
    elif limit:
        items = items[:limit]
    if not items:
        where = " ".join(filter(None, [", ".join(map(redact, sources)),
                                       stac.get("url") and f"stac.url={stac.url}"]))
        raise DetectorError(f"{where}: no STAC items found; widen stac.datetime, check "
                            "stac.collections or the AOI")
    found = select(items, stac, area)
    for cand in found:
        if cand.skipped:
            log.warning("STAC item %s left out: %s", cand.item_id, cand.skipped)
    return found


def dry_run_table(found: list[Candidate]) -> str:
    """What a dry run prints: one line per item (date, AOI share, gsd, cloud cover, status)."""
    from detector.tables import text_table

    def fmt(value: Any, spec: str) -> str:
        return "" if value is None else format(value, spec)

    rows = [[c.item_id, str(c.day or ""), fmt(c.meta.get("aoi_share"), ".0%"),
             fmt(c.meta.get("gsd"), "g"), fmt(c.meta.get("eo:cloud_cover"), "g"),
             fmt(c.meta.get("view:off_nadir"), "g"),
             "count" if c.skipped is None else f"skip: {c.skipped}"] for c in found]
    kept = sum(c.skipped is None for c in found)
    header = ["item", "date", "AOI share", "gsd m", "cloud %", "off-nadir °", "status"]
    return (text_table(header, rows, markdown=False)
            + f"\n{kept} of {len(found)} items would be counted (dry run: nothing counted)")
