"""Publish dated scenes as COGs with a STAC Collection:
``python -m detector.publish SCENES OUT --base-url URL [--collection ID]``.

Each scene (a folder, glob or ``.txt`` list, as ``source=`` takes) is written to ``OUT`` as
a Cloud-Optimized GeoTIFF (internal tiles, overviews) and described by a STAC Item (its
footprint in lon/lat, its date from ``dates.csv``/tags/file name as ``detector.monitor``
finds it, ``gsd``, ``proj:epsg``) whose ``visual`` asset is ``BASE_URL/<name>.tif``.
Serve ``OUT`` with ``python -m detector.serve OUT`` and the collection with a STAC API
(``rustac serve collection.json --load-collection-items``), and ``detector.infer`` /
``detector.monitor`` can count it by search: README "Remote imagery and STAC".
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path

import rasterio
from rasterio.warp import transform_bounds
from shapely.geometry import box, mapping

from detector.atomic import atomic_path
from detector.errors import DetectorError, guarded
from detector.infer.sources import named_scenes
from detector.monitor.dates import DEFAULT_TAGS, read_dates_csv, scene_date
from detector.raster import open_raster, scene_m_per_px

RGB_BANDS = [{"name": n, "common_name": n} for n in ("red", "green", "blue")]


def write_cog(src_path: Path, dst: Path, blocksize: int = 512) -> None:
    """Copy a raster to a COG (deflate, ``blocksize`` tiles, overviews), atomically."""
    with open_raster(src_path) as src:
        profile = {**src.profile, "driver": "COG", "compress": "deflate",
                   "blocksize": blocksize, "overview_resampling": "average"}
        for key in ("blockxsize", "blockysize", "tiled", "interleave"):
            profile.pop(key, None)
        with atomic_path(dst) as tmp, rasterio.open(tmp, "w", **profile) as out:
            out.write(src.read())
            out.update_tags(**src.tags())


def scene_item(path: Path, name: str, day: date, href: str, collection: str):
    """The STAC Item of one published scene (``pystac.Item``)."""
    import pystac

    with open_raster(path) as src:
        if src.crs is None:
            raise DetectorError(f"{path}: no CRS; STAC needs a georeferenced scene")
        west, south, east, north = transform_bounds(src.crs, "EPSG:4326", *src.bounds)
        props = {"gsd": round(float(scene_m_per_px(src)), 4)}
        if src.crs.to_epsg():
            props["proj:epsg"] = src.crs.to_epsg()
        bands = RGB_BANDS if src.count >= 3 else []
    when = datetime(day.year, day.month, day.day, tzinfo=UTC)
    item = pystac.Item(name, mapping(box(west, south, east, north)),
                       [west, south, east, north], when, props, collection=collection)
    asset = pystac.Asset(href, media_type=pystac.MediaType.COG, roles=["visual", "data"])
    if bands:
        asset.extra_fields["eo:bands"] = bands
    item.add_asset("visual", asset)
    return item


def publish(sources: Sequence[str | Path], out: str | Path, base_url: str,
            collection: str = "scenes", dates: str | Path | None = None) -> Path:
    """Write COGs and a self-contained STAC Collection of ``sources`` to ``out``.

    Returns:
        ``out/collection.json``.

    Raises:
        DetectorError: a scene without a date or CRS.
    """
    import pystac

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    default = Path(sources[0]) / "dates.csv" if len(sources) == 1 else None
    dates = dates or (default if default is not None and default.is_file() else None)
    overrides = read_dates_csv(dates) if dates else {}
    items = []
    for path, name in named_scenes(list(sources)):
        day = scene_date(Path(path), overrides, DEFAULT_TAGS)
        if day is None:
            raise DetectorError(f"{path}: no date in its metadata or file name; give "
                                "--dates with a line 'NAME.tif,YYYY-MM-DD'")
        write_cog(Path(path), out / f"{name}.tif")
        items.append(scene_item(Path(path), name, day.day,
                                f"{base_url.rstrip('/')}/{name}.tif", collection))
    days = sorted(i.datetime for i in items)
    extent = pystac.Extent(
        pystac.SpatialExtent([_union([i.bbox for i in items])]),
        pystac.TemporalExtent([[days[0], days[-1]]]))
    coll = pystac.Collection(collection, f"{len(items)} scenes published by detector.publish",
                             extent)
    for item in items:
        coll.add_item(item)
    coll.normalize_hrefs(str(out.absolute()))
    coll.save(pystac.CatalogType.SELF_CONTAINED)
    return out / "collection.json"


def _union(boxes: list[list[float]]) -> list[float]:
    return [min(b[0] for b in boxes), min(b[1] for b in boxes),
            max(b[2] for b in boxes), max(b[3] for b in boxes)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sources", nargs="+", help="scenes: folder, glob, .txt list or files")
    parser.add_argument("out", help="folder for the COGs and collection.json")
    parser.add_argument("--base-url", required=True,
                        help="URL OUT will be served at, e.g. http://127.0.0.1:8000")
    parser.add_argument("--collection", default="scenes", help="collection id")
    parser.add_argument("--dates", default=None,
                        help="CSV scene,date overriding dates (default: SOURCE/dates.csv)")
    args = parser.parse_args(argv)

    def body() -> None:
        path = publish(args.sources, args.out, args.base_url, args.collection, args.dates)
        print(f"wrote {path}")

    guarded(body)


if __name__ == "__main__":
    main()
