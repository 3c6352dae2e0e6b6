"""Scene names, shards and the reduce step, in-process with the stand-in model."""

import csv
import json

import numpy as np
import pytest
from affine import Affine
from test_infer_pipeline import UTM, fake_bundle, fake_predictor, planted_scene

from detector.errors import DetectorError
from detector.evaluate.scenes import find_scenes
from detector.infer.api import config, reduce_run, run_config
from detector.infer.outputs import output_paths
from detector.infer.shards import partition, select_shard, task_device
from detector.infer.sources import named_scenes
from detector.raster import write_geotiff
from detector.scene_files import unique_names


def shard_run(tmp_path, source, **overrides):
    cfg = config(source, None, out=str(tmp_path / "out"), progress=False, quicklook=False,
                 **overrides)
    return run_config(cfg, fake_bundle(), fake_predictor)


@pytest.mark.parametrize("shards", [1, 2, 3, 5, 8])
def test_partition_covers_every_item_once_and_is_balanced(shards):
    rng = np.random.default_rng(shards)
    weights = list(rng.integers(1, 100, 23) ** 2)
    assignment = partition(weights, shards)
    assert len(assignment) == len(weights) and set(assignment) == set(range(shards))
    loads = np.bincount(assignment, weights=weights, minlength=shards)
    assert loads.max() - loads.min() <= max(weights)
    assert loads.max() <= sum(weights) / shards + max(weights)
    assert partition(weights, shards) == assignment  # deterministic
    huge = partition([*weights, 10 * sum(weights)], shards)  # one scene bigger than the rest
    if shards > 1:  # it is alone in its shard: it does not hold up anything else
        assert huge.count(huge[-1]) == 1
    with pytest.raises(DetectorError, match="shards=0"):
        partition(weights, 0)


def test_select_shard_is_a_partition_of_scene_files_by_area(tmp_path):
    sizes = [(300, 300), (60, 50), (80, 80), (90, 40), (120, 100), (70, 70), (50, 50)]
    paths = []
    for k, (w, h) in enumerate(sizes):
        paths.append(tmp_path / f"s{k}.tif")
        write_geotiff(paths[-1], np.zeros((1, h, w), np.uint8), Affine(0.5, 0, 0, 0, -0.5, 0),
                      UTM)
    for shards in (1, 2, 3, 4):
        parts = [select_shard(paths, paths, shards, i) for i in range(shards)]
        assert sorted(p for part in parts for p in part) == sorted(paths)
        assert all(part == sorted(part, key=paths.index) for part in parts)  # source order
        if shards > 1:
            assert [paths[0]] in parts  # the 300x300 scene outweighs all others together
    with pytest.raises(DetectorError, match="shard=3"):
        select_shard(paths, paths, 3, 3)


def test_task_device_spreads_local_tasks_over_visible_gpus():
    assert task_device("auto", 5, 4) == "cuda:1"
    assert task_device("auto", 5, 1) == "auto"  # SLURM/Ray gave this task one GPU
    assert task_device("cpu", 5, 4) == "cpu"


def test_same_file_name_in_subfolders_gets_distinct_outputs(tmp_path):
    site = tmp_path / "site"
    for year, seed in (("2023", 0), ("2024", 1)):
        (site / year).mkdir(parents=True)
        planted_scene(site / year / "yard.tif", size=(200, 150), seed=seed)
    planted_scene(site / "yard.tif", size=(200, 150))
    results = shard_run(tmp_path, site)
    assert [r.name for r in results] == ["2023__yard", "2024__yard", "yard"]
    assert all(r.ok for r in results)
    out = tmp_path / "out"
    for res in results:
        counts = json.loads((out / f"{res.name}.counts.json").read_text())
        assert counts["scene"] == str(res.scene)
    # one scene given alone keeps its plain name; the evaluation finds the same scenes
    assert named_scenes([site / "2023" / "yard.tif"])[0][1] == "yard"
    assert [p.relative_to(site).as_posix() for p, _ in with_empty_labels(site)] == [
        "2023/yard.tif", "2024/yard.tif", "yard.tif"]


def with_empty_labels(folder):
    for tif in folder.rglob("*.tif"):
        tif.with_suffix(".geojson").write_text('{"type": "FeatureCollection", "features": []}')
    return find_scenes(folder)


def test_colliding_names_are_refused_with_both_files(tmp_path):
    (tmp_path / "a.tif").touch()
    (tmp_path / "a.tiff").touch()
    with pytest.raises(DetectorError, match=r"a\.tif and .*a\.tiff: both would write"):
        named_scenes([tmp_path])
    with pytest.raises(DetectorError, match="both would write"):
        unique_names([tmp_path / "a.tif", tmp_path / "a.tif"])


def test_shards_together_equal_one_run_and_reduce_tells_the_state(tmp_path):
    folder = tmp_path / "scenes"
    folder.mkdir()
    for k, size in enumerate([(400, 300), (200, 150), (260, 200), (220, 160), (300, 240)]):
        planted_scene(folder / f"y{k}.tif", size=size, seed=k)
    (folder / "y5.tif").write_text("not a raster")
    single = {r.name: r.counts for r in shard_run(tmp_path / "single", folder)}
    sharded = {}
    for shard in (0, 1):
        results = shard_run(tmp_path, folder, shards=3, shard=shard)
        sharded.update({r.name: r.counts for r in results})
    cfg = config(folder, None, out=str(tmp_path / "out"), shards=3)
    counts = reduce_run(cfg)
    assert counts["done"] + counts["failed"] == len(sharded) and counts["missing"] > 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert len(summary["missing_scenes"]) == counts["missing"] == 6 - len(sharded)
    sharded.update({r.name: r.counts for r in shard_run(tmp_path, folder, shards=3, shard=2)})
    assert reduce_run(cfg) == {"scenes": 6, "done": 5, "failed": 1, "missing": 0}
    assert sharded.keys() == single.keys()
    for name, counts in single.items():
        assert {k: v for k, v in sharded[name].items() if k != "seconds"} == {
            k: v for k, v in counts.items() if k != "seconds"}
    rows = {r["name"]: r for r in csv.DictReader((tmp_path / "out" / "summary.csv").open())}
    ref = {r["name"]: r for r in csv.DictReader((tmp_path / "single" / "out" /
                                                 "summary.csv").open())}
    assert rows.keys() == ref.keys() and rows["y5"]["status"] == "failed"
    for name, row in rows.items():
        assert {k: v for k, v in row.items() if k != "seconds"} == {
            k: v for k, v in ref[name].items() if k != "seconds"}


def test_rerun_redoes_only_what_is_missing_and_clears_stale_temporaries(tmp_path):
    folder = tmp_path / "scenes"
    folder.mkdir()
    for k in range(3):
        planted_scene(folder / f"y{k}.tif", size=(200, 150), seed=k)
    shard_run(tmp_path, folder)
    out = tmp_path / "out"
    paths = output_paths(out, "y1")
    paths["counts"].unlink()  # as if its task died after writing the GeoJSON
    stale = out / ".y1.abcd1234.partial.geojson"
    stale.write_text("{")
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("y[02].*")}
    results = shard_run(tmp_path, folder)
    assert [r.skipped for r in results] == [True, False, True]
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("y[02].*")} == before
    assert paths["counts"].exists() and not stale.exists()
