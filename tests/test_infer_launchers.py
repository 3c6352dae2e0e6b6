"""Sharded runs on real engines (joblib, submitit local, Ray) with the bundled model.

Each compares a multirun's per-scene outputs and summary with one single-process run over
the same tiny generated scenes (two share a file name, in 2023/ and 2024/).
"""

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from detector.config import compose
from detector.infer.api import config, run_config
from detector.infer.shards import FAIL_AFTER_TILES_ENV
from detector.synth import write_scenes

# Small tiles and batches: four tiles per 400x400 scene, two per forward (as in `clean`).
FAST = ["quicklook=false", "progress=false", "tiling.tile_px=256", "batch=2"]
NO_LAUNCHERS = "needs the Hydra launchers of the dev extra: pip install -e '.[dev,fast]'"


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scenes")
    cfg = compose("synth", [f"out={folder}", "n_scenes=3", "seed=5", "size=[400,400]",
                            "vehicles.min=8", "vehicles.max=15", "vehicles.empty_prob=0"])
    written = write_scenes(cfg)
    for path, year in zip(written[:2], ("2023", "2024"), strict=True):
        (folder / year).mkdir()
        for suffix in (".tif", ".geojson"):
            path.with_suffix(suffix).rename(folder / year / f"site{suffix}")
    return folder


@pytest.fixture(scope="module")
def clean(scenes, tmp_path_factory):
    """The reference: one process, every scene (in this process, the model loaded once)."""
    out = tmp_path_factory.mktemp("clean")
    results = run_config(config(scenes, None, out=str(out), quicklook=False, progress=False,
                                batch=2, **{"tiling.tile_px": 256}))
    assert [r.name for r in results] == ["2023__site", "2024__site", "scene_002"]
    assert all(r.ok for r in results)
    return out


def multirun(scenes, out, launcher, *extra, env=None):
    cmd = [sys.executable, "-m", "detector.infer", "-m", f"source={scenes}", f"out={out}",
           "shards=2", "shard=0,1", f"hydra/launcher={launcher}", *FAST, *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})


def outputs(out: Path) -> dict[str, object]:
    """Every output file (seconds taken left out) and the summary rows."""
    files: dict[str, object] = {}
    for path in sorted(out.iterdir()):
        if path.name == "jobs":
            continue
        if path.name.endswith(".counts.json"):
            counts = json.loads(path.read_text())
            counts.pop("seconds")
            files[path.name] = counts
        elif path.name == "summary.csv":
            files[path.name] = [{k: v for k, v in row.items() if k != "seconds"}
                                for row in csv.DictReader(path.open())]
        elif path.name == "summary.json":
            summary = json.loads(path.read_text())
            for row in summary["rows"]:
                row.pop("seconds")
            files[path.name] = summary
        else:
            files[path.name] = path.read_bytes()
    return files


def assert_same_as(clean: Path, out: Path, proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "3 scenes: 3 done, 0 failed, 0 missing" in proc.stdout
    assert outputs(out) == outputs(clean)  # same names: nothing duplicated, nothing stray
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_joblib_task_killed_mid_scene_then_rerun_equals_one_process(scenes, clean, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher", reason=NO_LAUNCHERS)
    out = tmp_path / "out"
    # Shard 0 holds two scenes of four tiles; its process dies on the second one's 3rd tile.
    killed = multirun(scenes, out, "joblib", env={FAIL_AFTER_TILES_ENV: "6"})
    assert killed.returncode != 0
    assert "killing this task mid-scene" in killed.stdout + killed.stderr, killed.stderr[-2000:]
    assert not (out / "scene_002.counts.json").exists()  # the scene it died in: not done
    assert (out / "2023__site.counts.json").exists()  # the one before it: done
    assert not list(out.glob(".scene_002.*"))  # killed between tiles: no temporary file
    rerun = multirun(scenes, out, "joblib")
    assert_same_as(clean, out, rerun)


def test_submitit_local_multirun_equals_one_process(scenes, clean, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason=NO_LAUNCHERS)
    out = tmp_path / "out"
    assert_same_as(clean, out, multirun(scenes, out, "submitit_local"))
    logs = list((out / "jobs").glob("*/.submitit/*/*_log.err"))
    assert len(logs) == 2  # one log per task


@pytest.mark.slow
def test_ray_runner_on_a_local_two_cpu_cluster_equals_one_process(scenes, clean, tmp_path):
    pytest.importorskip("ray", reason="needs Ray: pip install -e '.[cluster]'")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "detector.infer.ray", f"source={scenes}",
                           f"out={out}", "shards=2", "ray.num_cpus=2", *FAST],
                          capture_output=True, text=True, timeout=600)
    assert_same_as(clean, out, proc)


def test_reduce_only_summarises_a_partial_run(scenes, clean, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    for name in ("2023__site.counts.json", "2023__site.geojson"):
        shutil.copy(clean / name, out / name)
    proc = subprocess.run([sys.executable, "-m", "detector.infer", f"source={scenes}",
                           f"out={out}", "reduce_only=true"], capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stdout.strip().startswith("3 scenes: 1 done, 0 failed, 2 missing")
    summary = json.loads((out / "summary.json").read_text())
    assert [Path(s).name for s in summary["missing_scenes"]] == ["site.tif", "scene_002.tif"]
