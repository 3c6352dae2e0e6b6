"""``detector.monitor`` end to end with a stand-in for inference: bad scenes, outputs, reuse."""

import csv
import io
import json
from datetime import date, timedelta
from pathlib import Path

import pytest
from test_monitor_dates_cover import aoi_file, tiny_scene

from detector.errors import DetectorError
from detector.infer.results import SceneResult
from detector.monitor.api import config, monitor, settings_of
from detector.monitor.outputs import format_table

START = date(2019, 3, 2)
CLASSES = ["freight_car", "covered_car", "tank_car", "locomotive"]


class FakeInfer:
    """Writes counts JSON as detector.infer would; wagons from the scene's ``TRUTH`` tag."""

    def __init__(self):
        self.calls: list[list[str]] = []

    def __call__(self, sources, weights=None, out=None, aoi=None, overwrite=False, **_):
        import rasterio

        from detector.atomic import sha256_file

        self.calls.append([Path(s).name for s in sources])
        results = []
        for s in map(Path, sources):
            with rasterio.open(s) as src:
                n = int(src.tags().get("TRUTH", 0))
            if n < 0:
                results.append(SceneResult(s, False, f"{s}: inference failed"))
                continue
            lo, hi = max(0, int(n * 0.7) - 3), int(n * 1.3) + 4
            stats = {"count": n, "expected": float(n), "ci95": [lo, hi]}
            counts = {"scene": str(s), "model": {"path": str(weights),
                                                 "sha256": sha256_file(weights)},
                      "classes": {c: dict(stats) if c == "covered_car" else
                                  {"count": 0, "expected": 0.0, "ci95": [0, 0]}
                                  for c in CLASSES},
                      "wagons": stats, "aoi": aoi}
            Path(out).mkdir(parents=True, exist_ok=True)
            (Path(out) / f"{s.stem}.counts.json").write_text(json.dumps(counts))
            results.append(SceneResult(s, True, None, [], counts))
        return results


def make_site(folder, counts):
    """Scenes 100 m x 50 m; dates in TIFFTAG_DATETIME, ~4 months apart."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, n in enumerate(counts):
        day = START + timedelta(days=120 * i)
        tiny_scene(folder / f"pass_{i:02d}.tif", tags={
            "TIFFTAG_DATETIME": f"{day:%Y:%m:%d} 01:30:00", "TRUTH": str(n)})
    return folder


@pytest.fixture
def site(tmp_path):
    folder = make_site(tmp_path / "site", [12, 8, 15, 10, 18, 9, 14, 75])
    weights = tmp_path / "model.pt"
    weights.write_bytes(b"weights one")
    aoi = aoi_file(tmp_path / "station.geojson", 10, 10, 90, 40)
    return folder, weights, aoi


def run(tmp_path, site, fake, **overrides):
    folder, weights, aoi = site
    settings = {"source": str(folder), "aoi": str(aoi), "weights": str(weights),
                "out": str(tmp_path / "out"), "progress": False, "baseline.min_dates": 4}
    return monitor(config(**{**settings, **overrides}), runner=fake)


def test_surge_flagged_bad_scenes_left_out_with_one_line_each(tmp_path, site):
    folder, _, _ = site
    (folder / "broken.tif").write_text("not a raster")
    tiny_scene(folder / "undated.tif", tags={"TRUTH": "10"})
    # pass_00's date, imaging less of the AOI: pass_00 is kept
    tiny_scene(folder / "again_2019-03-02.tif", nodata_cols=40, tags={"TRUTH": "10"})
    tiny_scene(folder / "elsewhere_2020-05-05.tif", origin=(600000.0, 4700000.0),
               tags={"TRUTH": "10"})
    tiny_scene(folder / "sliver_2022-01-05.tif", nodata_cols=170, tags={"TRUTH": "60"})
    tiny_scene(folder / "failing_2022-02-05.tif", tags={"TRUTH": "-1"})
    fake = FakeInfer()
    result = run(tmp_path, site, fake)
    status = {e.scene.name: e.verdict.status for e in result.series}
    assert status["pass_07.tif"] == "flagged"
    assert status["sliver_2022-01-05.tif"] == "partial"
    assert sum(s == "flagged" for s in status.values()) == 1
    reasons = {e.scene.name: e.left_out for e in result.left_out}
    assert set(reasons) == {"broken.tif", "undated.tif", "again_2019-03-02.tif",
                            "elsewhere_2020-05-05.tif", "failing_2022-02-05.tif"}
    assert "not a readable raster" in reasons["broken.tif"]
    assert f"'undated.tif,YYYY-MM-DD' to {folder / 'dates.csv'}" in reasons["undated.tif"]
    assert "header 'scene,date'" in reasons["undated.tif"]
    assert "same date (2019-03-02) as pass_00.tif" in reasons["again_2019-03-02.tif"]
    assert "AOI lies outside" in reasons["elsewhere_2020-05-05.tif"]
    assert all("\n" not in r for r in reasons.values())
    text = format_table(result)
    assert "flagged: 1 of 9 dates; 4 of 9 could be compared: 4 had fewer than 4 comparable " \
        "earlier dates in the 5 years before it (baseline.min_dates); 1 imaged too little" in text
    assert "left out: 5 scene(s)" in text
    assert "pass_07.tif: 75 (95% 49–101) vs at most 18 in 7 dates since 2019-03-02: " \
        "P(above all) > 0.999" in text
    rows = list(csv.DictReader(io.StringIO(result.outputs["timeseries"].read_text())))
    assert len(rows) == 14 and rows[-1]["status"] == "left out"
    dated = [r for r in rows if r["status"] != "left out"]
    assert [r["date"] for r in dated] == sorted(r["date"] for r in dated)
    assert dated[0]["date_source"] == "tag TIFFTAG_DATETIME"
    assert float(next(r for r in rows if "sliver" in r["scene"])["aoi_imaged_share"]) < 0.2
    assert result.outputs["plot"].stat().st_size > 20_000
    report = result.outputs["report"].read_text()
    assert "## Left out" in report and "P(above all)" in report and "pass_07.tif" in report
    assert not list((tmp_path / "out").rglob(".*partial*"))


def test_too_few_dates_say_how_many_earlier_dates_are_needed(tmp_path):
    folder = make_site(tmp_path / "short", [12, 8, 15, 60])
    weights = tmp_path / "model.pt"
    weights.write_bytes(b"weights")
    aoi = aoi_file(tmp_path / "station.geojson", 10, 10, 90, 40)
    result = run(tmp_path, (folder, weights, aoi), FakeInfer(), **{"baseline.min_dates": 5})
    line = next(li for li in format_table(result).splitlines() if li.startswith("flagged:"))
    assert line == ("flagged: 0 of 4 dates; 0 of 4 could be compared: 4 had fewer than 5 "
                    "comparable earlier dates in the 5 years before it (baseline.min_dates)")


def test_undated_scene_of_a_glob_source_names_dates_csv_header(tmp_path, site):
    folder, _, _ = site
    tiny_scene(folder / "undated.tif", tags={"TRUTH": "10"})
    result = run(tmp_path, site, FakeInfer(), source=str(folder / "*.tif"))
    [undated] = [e.left_out for e in result.left_out if e.scene.name == "undated.tif"]
    assert "header 'scene,date', and pass it as dates=CSV" in undated


def test_dates_csv_overrides_and_a_duplicate_csv_date(tmp_path, site):
    folder, _, _ = site
    (folder / "dates.csv").write_text("scene,date\npass_07.tif,2018-01-01\n")
    result = run(tmp_path, site, FakeInfer())
    first = result.series[0]
    assert (first.scene.name, first.date.source) == ("pass_07.tif", "dates.csv")
    assert first.verdict.status == "no history"  # the surge moved to the start


def test_counts_are_reused_and_recounted_when_model_aoi_or_scene_change(tmp_path, site):
    folder, weights, aoi = site
    fake = FakeInfer()
    run(tmp_path, site, fake)
    assert len(fake.calls[-1]) == 8
    again = run(tmp_path, site, fake)
    assert len(fake.calls) == 1 and again.reused == 8  # nothing recounted
    stamp = json.loads((tmp_path / "out/scenes/pass_00.monitor.json").read_text())
    assert stamp["model"]["sha256"] and stamp["aoi"]["sha256"]
    make_site(tmp_path / "extra", [11] * 9)
    (tmp_path / "extra/pass_08.tif").rename(folder / "pass_08.tif")  # next month's scene
    run(tmp_path, site, fake)
    assert fake.calls[-1] == ["pass_08.tif"]
    weights.write_bytes(b"weights two")  # a new model: everything again
    run(tmp_path, site, fake)
    assert len(fake.calls[-1]) == 9
    card = weights.with_suffix(".json")  # a recalibrated card changes the counts too
    card.write_text("{}")
    run(tmp_path, site, fake)
    assert len(fake.calls[-1]) == 9
    aoi_file(aoi, 12, 10, 90, 40)  # a new AOI: everything again
    run(tmp_path, site, fake)
    assert len(fake.calls[-1]) == 9
    run(tmp_path, site, fake, recount=True)
    assert len(fake.calls[-1]) == 9
    assert run(tmp_path, site, fake).reused == 9


def test_bad_settings_and_inputs_are_one_line_errors(tmp_path, site):
    with pytest.raises(DetectorError, match="baseline.mode"):
        settings_of(config(**{"baseline.mode": "weekly"}))
    with pytest.raises(DetectorError, match="baseline.end"):
        settings_of(config(**{"baseline.end": "last spring"}))
    with pytest.raises(DetectorError, match="flag.p"):
        settings_of(config(**{"flag.p": 1.5}))
    with pytest.raises(DetectorError, match="AOI file not found"):
        run(tmp_path, site, FakeInfer(), aoi=str(tmp_path / "nope.geojson"))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "x.tif").write_text("junk")
    with pytest.raises(DetectorError, match="no scene could be dated"):
        run(tmp_path, (empty, *site[1:]), FakeInfer())


@pytest.mark.slow
def test_demo_site_with_the_bundled_model_end_to_end(tmp_path, monkeypatch):
    """A small demo site through real inference: dates from TIFFTAG_DATETIME, reuse."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    small = {"source": None, "out": str(tmp_path / "out"), "progress": False,
             "demo.ordinary_dates": 4, "demo.surge_dates": 1, "demo.min_history": 2,
             "demo.scene.size": [512, 512], "baseline.min_dates": 2}
    result = monitor(config(**small))
    assert not result.left_out and len(result.series) == 5
    assert {e.date.source for e in result.series} == {"tag TIFFTAG_DATETIME"}
    assert [e.verdict.status for e in result.series].count("partial") == 1
    truth = list(csv.DictReader(io.StringIO(result.demo_truth.read_text())))
    assert [r["kind"] for r in truth].count("surge") == 1
    assert int(truth[-1]["wagons"]) > 3 * max(int(r["wagons"]) for r in truth[:-1])
    assert monitor(config(**small)).reused == 5
