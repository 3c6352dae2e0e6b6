"""Remote scenes and STAC without a server: URL redaction and names, Range parsing, scoped
GDAL settings, asset choice and filters on in-memory items, start-up checks of ``stac.*``.
(With servers on loopback: tests/test_remote.py.)"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pystac
import pytest
from rasterio.env import get_gdal_config

from detector.errors import DetectorError
from detector.infer import run
from detector.monitor.api import config as monitor_config
from detector.monitor.api import monitor
from detector.remote import SceneRef, gdal_path, redact, scene_env
from detector.scene_files import unique_names
from detector.serve import parse_ranges
from detector.stac import dry_run_table, is_stac_source, pick_asset, select

TOKEN = "X-Amz-Signature=SECRET123"


def test_urls_are_redacted_mapped_to_gdal_and_named_stably():
    url = f"https://user:pw@data.example.org:8443/site/2023/scene.tif?{TOKEN}#x"
    assert redact(url) == "https://data.example.org:8443/site/2023/scene.tif"
    assert gdal_path(SceneRef(url)) == f"/vsicurl/{url}"
    assert gdal_path("s3://bucket/a/b.tif") == "/vsis3/bucket/a/b.tif"
    ref = SceneRef(url)
    assert str(ref) == redact(url) and "SECRET" not in f"{ref}: failed"
    other_token = SceneRef(url.replace("SECRET123", "OTHER"))
    other_host = SceneRef(url.replace("data.example.org", "mirror.example.org"))
    local = Path("/data/scene.tif")
    names = unique_names([ref, other_host, local])
    assert names[0].startswith("scene_") and names[0] != names[1] and names[2] == "scene"
    assert unique_names([other_token]) == names[:1]  # a new token keeps the name
    assert unique_names([SceneRef(url, hint="item-7")]) == ["item-7"]
    with pytest.raises(DetectorError, match="both would write outputs named"):
        unique_names([ref, other_token])


def test_range_header_parsing():
    assert parse_ranges("bytes=0-9", 100) == [(0, 9)]
    assert parse_ranges("bytes=90-", 100) == [(90, 99)]
    assert parse_ranges("bytes=-5", 100) == [(95, 99)]
    assert parse_ranges("bytes=0-1, 10-19,200-300", 100) == [(0, 1), (10, 19)]
    assert parse_ranges("bytes=200-300", 100) == []
    assert parse_ranges("items=0-1", 100) is None




def test_bad_stac_keys_fail_at_start_up_with_one_line(tmp_path):
    for key, value in [("stac.datetime", "May 2020"), ("stac.url", "ftp://x"),
                       ("stac.max_cloud_cover", 120), ("stac.limit", 0),
                       ("stac.collections", "yard")]:
        with pytest.raises(DetectorError, match=rf"^{key}="):
            run(None, out=tmp_path / "out", **{key: value})
        with pytest.raises(DetectorError, match=rf"^{key}="):
            monitor(monitor_config(**{key: value, "out": str(tmp_path / "mon")}))
    assert not (tmp_path / "out").exists() and not (tmp_path / "mon").exists()


def test_cog_settings_are_scoped_to_remote_reads(monkeypatch):
    monkeypatch.delenv("GDAL_HTTP_MULTIRANGE", raising=False)
    monkeypatch.setenv("GDAL_HTTP_TIMEOUT", "7")  # the user's own setting wins
    before = get_gdal_config("GDAL_HTTP_MULTIRANGE")
    with scene_env(SceneRef("https://example.org/a.tif")):
        assert get_gdal_config("GDAL_HTTP_MULTIRANGE") == "YES"
        assert get_gdal_config("GDAL_DISABLE_READDIR_ON_OPEN") == "EMPTY_DIR"
        assert str(get_gdal_config("GDAL_HTTP_TIMEOUT")) == "7"
    with scene_env(Path("a.tif")):
        assert get_gdal_config("GDAL_HTTP_MULTIRANGE") == before
    assert get_gdal_config("GDAL_HTTP_MULTIRANGE") == before


def item(item_id, day, assets, **props):
    geom = {"type": "Polygon", "coordinates": [[[10, 50], [11, 50], [11, 51], [10, 51],
                                                [10, 50]]]}
    it = pystac.Item(item_id, geom, [10, 50, 11, 51],
                     datetime(*day, tzinfo=UTC), props)
    for key, (href, extra) in assets.items():
        asset = pystac.Asset(href, media_type=extra.pop("type", pystac.MediaType.COG),
                             roles=extra.pop("roles", None))
        asset.extra_fields.update(extra)
        it.add_asset(key, asset)
    return it


def test_asset_choice_by_key_visual_bands_or_role():
    rgb = [{"common_name": c} for c in ("red", "green", "blue")]
    assert pick_asset(item("a", (2020, 1, 1), {"visual": ("v.tif", {}),
                                              "b04": ("r.tif", {})}), None)[0] == "visual"
    assert pick_asset(item("b", (2020, 1, 1), {"pan": ("p.tif", {}),
                                              "rgb": ("c.tif", {"eo:bands": rgb})}),
                      None)[0] == "rgb"
    assert pick_asset(item("c", (2020, 1, 1), {"tci": ("t.tif", {"roles": ["visual"]})}),
                      None)[0] == "tci"
    assert pick_asset(item("d", (2020, 1, 1), {"pan": ("p.tif", {})}), "pan")[0] == "pan"
    with pytest.raises(DetectorError, match=r"^item e: no RGB asset \(assets: meta, pan;"):
        pick_asset(item("e", (2020, 1, 1), {"pan": ("p.tif", {}),
                                            "meta": ("m.json", {"type": "application/json"})}),
                   None)


def test_filters_leave_items_out_with_the_reason_and_keep_unknowns():
    from shapely.geometry import box

    items = [item("clear", (2021, 3, 1), {"visual": ("https://x/c.tif?sig=1", {})},
                  **{"eo:cloud_cover": 3.0, "view:off_nadir": 10.0, "gsd": 0.3}),
             item("cloudy", (2020, 3, 1), {"visual": ("https://x/d.tif", {})},
                  **{"eo:cloud_cover": 70.0}),
             item("steep", (2019, 3, 1), {"visual": ("https://x/e.tif", {})},
                  **{"view:off_nadir": 40.0}),
             item("unknown", (2022, 3, 1), {"visual": ("https://x/f.tif", {})})]
    stac = {"max_cloud_cover": 20, "max_off_nadir": 30, "min_aoi_share": 0.5}
    found = select(items, stac, box(10.5, 50.5, 11.5, 51.5))  # a quarter inside each item
    assert [c.item_id for c in found] == ["steep", "cloudy", "clear", "unknown"]  # by date
    why = {c.item_id: c.skipped for c in found}
    assert why["steep"] == "off-nadir 40° > 30° (stac.max_off_nadir)"
    assert why["cloudy"] == "cloud cover 70% > 20% (stac.max_cloud_cover)"
    assert why["clear"] == why["unknown"] == "covers 25% of the AOI < 50% (stac.min_aoi_share)"
    found = select(items, {**stac, "min_aoi_share": 0.2}, box(10.5, 50.5, 11.5, 51.5))
    kept = [c for c in found if c.skipped is None]
    assert [c.item_id for c in kept] == ["clear", "unknown"]
    clear = kept[0].scene
    assert clear.href == "https://x/c.tif?sig=1" and str(clear) == "https://x/c.tif"
    assert clear.meta["gsd"] == 0.3 and clear.meta["datetime"].startswith("2021-03-01")
    assert clear.meta["aoi_share"] == 0.25 and clear.name == "clear"
    table = dry_run_table(found)
    assert "2 of 4 items would be counted" in table and "sig=1" not in table


def test_stac_sources_are_json_files_or_urls():
    assert is_stac_source("site/collection.json") and is_stac_source(
        "https://x.org/stac/items.json?token=1")
    assert not is_stac_source("https://x.org/a.tif") and not is_stac_source("scenes.txt")
