"""Global state the package changes is scoped to the call that needs it and put back."""

import subprocess
import sys
from types import SimpleNamespace

import pytest
import rasterio
import torch
from rasterio.env import get_gdal_config

from detector.bundle import default_card
from detector.infer import api
from detector.infer.model import all_cores
from detector.infer.results import SceneResult
from detector.raster import GDAL_CACHE_BYTES
from detector.train import offline
from tests.helpers import CLASSES


def test_importing_the_package_changes_neither_gdal_nor_the_matplotlib_backend(cli_env):
    code = ("import os, matplotlib, detector.infer, detector.infer.quicklook, "
            "detector.evaluate.plots, detector.evaluate.api; "
            "print(matplotlib.get_backend(), os.environ.get('GDAL_CACHEMAX'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**cli_env, "MPLBACKEND": "svg"}, timeout=120, check=True)
    assert out.stdout.split() == ["svg", "None"]


def test_gdal_cache_is_bounded_while_scenes_run_then_restored(tiny_scene, infer_cfg,
                                                            monkeypatch):
    path = tiny_scene(size=(64, 64))
    before = get_gdal_config("GDAL_CACHEMAX")
    seen = []

    def process_scene(scene, bundle, predictor, cfg, name=None):
        seen.append(get_gdal_config("GDAL_CACHEMAX"))
        return SceneResult(scene, True)

    monkeypatch.setattr(api, "process_scene", process_scene)
    bundle = SimpleNamespace(device=torch.device("cpu"), classes=CLASSES,
                             card=default_card("obb", CLASSES, 512))
    api.run_config(infer_cfg(path), bundle, predictor=object())
    assert seen == [GDAL_CACHE_BYTES] and before != GDAL_CACHE_BYTES
    assert get_gdal_config("GDAL_CACHEMAX") == before
    with rasterio.open(path) as src:  # and GDAL still works after
        assert src.read(1).shape == (64, 64)


def test_all_cores_restores_the_thread_count():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with all_cores(torch.device("cpu")):
            inside = torch.get_num_threads()
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    import os

    assert inside == len(os.sched_getaffinity(0))


class FakeSettings(dict):
    def update(self, values):  # Ultralytics' settings write the file on update
        self.writes = getattr(self, "writes", 0) + 1
        super().update(values)


def test_training_session_restores_amp_check_and_tensorboard_setting(monkeypatch):
    import ultralytics
    import ultralytics.engine.trainer as trainer_module

    settings = FakeSettings(tensorboard=False)
    monkeypatch.setattr(ultralytics, "settings", settings)
    monkeypatch.setattr(offline, "find_spec", lambda name: object())
    monkeypatch.setattr(offline, "provide_font", lambda: None)
    monkeypatch.setattr("ultralytics.utils.WEIGHTS_DIR", "/nonexistent")
    original = trainer_module.check_amp
    with offline.training_session(tensorboard=True):
        assert trainer_module.check_amp is offline.check_amp_offline
        assert settings["tensorboard"] is True
    assert trainer_module.check_amp is original
    assert settings["tensorboard"] is False and settings.writes == 2


def test_training_session_restores_even_when_training_fails(monkeypatch):
    import ultralytics.engine.trainer as trainer_module

    monkeypatch.setattr(offline, "provide_font", lambda: None)
    monkeypatch.setattr("ultralytics.utils.WEIGHTS_DIR", "/nonexistent")
    original = trainer_module.check_amp
    with pytest.raises(RuntimeError), offline.training_session(tensorboard=False):
        raise RuntimeError("training failed")
    assert trainer_module.check_amp is original
