"""``out=`` is safe to reuse and to fill: a finished scene stands only for the same inputs,
a scene's files appear all together or not at all, and a full disk is one line."""

import errno
import json
import logging
import os

import pytest

from detector.errors import DetectorError, OutputError, guarded
from detector.infer import backends
from detector.infer import scene as scene_mod
from tests.test_infer_pipeline import fake_bundle, infer, planted_scene


def test_same_file_name_from_another_folder_is_counted_not_reused(tmp_path, caplog):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    planted_scene(tmp_path / "a" / "yard.tif")
    planted_scene(tmp_path / "b" / "yard.tif", size=(200, 150))  # fewer cars fit
    [first] = infer(tmp_path, tmp_path / "a" / "yard.tif", quicklook=False)
    with caplog.at_level(logging.INFO):
        [second] = infer(tmp_path, tmp_path / "b" / "yard.tif", quicklook=False)
    assert not second.skipped
    assert second.counts["wagons"]["count"] < first.counts["wagons"]["count"]
    assert second.counts["inputs"]["scene"]["path"] == str(tmp_path / "b" / "yard.tif")
    assert "counting again" in caplog.text and "another scene file" in caplog.text
    saved = json.loads((tmp_path / "out" / "yard.counts.json").read_text())
    assert saved["wagons"] == second.counts["wagons"]


def test_rerun_reuses_only_for_the_same_scene_model_aoi_and_settings(tmp_path, caplog,
                                                                    monkeypatch):
    scene = tmp_path / "yard.tif"
    planted_scene(scene)
    infer(tmp_path, scene, quicklook=False)
    [again] = infer(tmp_path, scene, quicklook=False)
    assert again.skipped
    aoi = tmp_path / "aoi.geojson"
    aoi.write_text(json.dumps({
        "type": "Polygon", "crs": {"type": "name", "properties": {"name": "EPSG:32652"}},
        "coordinates": [[[500000, 4700000], [500100, 4700000], [500100, 4699900],
                         [500000, 4699900], [500000, 4700000]]]}))
    # each step changes one more input; each is counted again once, then reused
    run = {"overrides": {}, "bundle": None}
    steps = [("other settings than the ones counted with (merge.threshold)",
              lambda: run["overrides"].update({"merge.threshold": 0.5})),
             ("another model", lambda: run.update(bundle=fake_bundle(imgsz=160))),
             # NNCF installed since: precision=auto now means INT8 on OpenVINO
             *([("other settings than the ones counted with (precision)",
                 lambda: monkeypatch.setattr(backends, "int8_available", lambda: True))]
               if backends.installed("openvino") else []),
             ("another AOI", lambda: run["overrides"].update(aoi=str(aoi))),
             ("the scene file changed", lambda: os.utime(
                 scene, ns=(scene.stat().st_atime_ns, scene.stat().st_mtime_ns + 10**9)))]
    for reason, change in steps:
        change()
        caplog.clear()
        with caplog.at_level(logging.INFO):
            [res] = infer(tmp_path, scene, run["bundle"], quicklook=False, **run["overrides"])
        assert not res.skipped and reason in caplog.text, reason
        [res] = infer(tmp_path, scene, run["bundle"], quicklook=False, **run["overrides"])
        assert res.skipped, reason


def test_counts_json_of_an_older_version_is_recounted(tmp_path, caplog):
    scene = tmp_path / "yard.tif"
    planted_scene(scene)
    [res] = infer(tmp_path, scene, quicklook=False)
    counts = json.loads(res.outputs["counts"].read_text())
    del counts["inputs"]
    res.outputs["counts"].write_text(json.dumps(counts))
    with caplog.at_level(logging.INFO):
        [again] = infer(tmp_path, scene, quicklook=False)
    assert not again.skipped and "older version" in caplog.text


def no_space(*_, **__):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_full_disk_mid_scene_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    scene = tmp_path / "yard.tif"
    planted_scene(scene)
    written = []
    real = scene_mod.write_detections

    def detections_then_full(path, *args):
        real(path, *args)
        written.append(path)
        no_space()

    monkeypatch.setattr(scene_mod, "write_detections", detections_then_full)
    with pytest.raises(OutputError) as err:
        infer(tmp_path, scene, quicklook=True)
    assert written and not written[0].exists()  # its temporary went too
    message = str(err.value)
    assert "\n" not in message and "No space left" in message and "out=" in message
    assert list((tmp_path / "out").iterdir()) == []  # no half-written scene, no error.json
    with pytest.raises(SystemExit) as code:
        guarded(lambda: infer(tmp_path, scene, quicklook=True))
    assert code.value.code == 2
    stderr = capsys.readouterr().err.strip().splitlines()
    assert len(stderr) == 1 and stderr[0].startswith("error: out=")


def test_quicklook_failure_keeps_no_geojson(tmp_path, monkeypatch):
    scene = tmp_path / "yard.tif"
    planted_scene(scene)
    import detector.infer.quicklook as quicklook

    monkeypatch.setattr(quicklook, "render_quicklook", no_space)
    with pytest.raises(OutputError):
        infer(tmp_path, scene, quicklook=True)
    assert list((tmp_path / "out").iterdir()) == []


def test_unwritable_out_is_refused_before_any_work(tmp_path, monkeypatch):
    scene = tmp_path / "yard.tif"
    planted_scene(scene)
    import detector.atomic as atomic

    monkeypatch.setattr(atomic.os, "write", no_space)
    calls = []
    with pytest.raises(DetectorError, match="No space left on device"):
        from detector.infer.api import config, run_config

        run_config(config(scene, out=str(tmp_path / "out"), progress=False), fake_bundle(),
                   lambda images: calls.append(images))
    assert calls == []
    assert list((tmp_path / "out").iterdir()) == []


def test_out_that_is_a_file_is_refused(tmp_path):
    scene = tmp_path / "yard.tif"
    planted_scene(scene)
    (tmp_path / "taken").write_text("a file")
    with pytest.raises(OutputError, match="out=.*taken: cannot write there"):
        infer(tmp_path, scene, out=str(tmp_path / "taken"))
