"""Shared fixtures: tiny scenes, configs, and the environment for command-line tests."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _fp32_unless_marked_int8(request, monkeypatch) -> None:
    """``precision=auto`` is INT8 on OpenVINO where NNCF is installed; in-process tests run
    FP32 so that the suite gives the same detections whatever extras are installed. Tests
    marked ``int8`` see the real installation."""
    if request.node.get_closest_marker("int8") is None:
        from detector.infer import backends

        monkeypatch.setattr(backends, "int8_available", lambda: False)


@pytest.fixture
def cli_env() -> dict[str, str]:
    """Environment for ``python -m detector...`` subprocesses that imports this checkout.

    Tests run the commands from a temporary folder; without this an installed copy of
    ``detector`` elsewhere would answer instead of the code under test.
    """
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}


@pytest.fixture(scope="session")
def untrained_models(tmp_path_factory) -> dict[str, Path]:
    """Untrained yolo11n obb and detect models with our 4 classes and a card (built once)."""
    from tests.helpers import save_untrained

    folder = tmp_path_factory.mktemp("untrained")
    return {task: save_untrained(folder / f"tiny_{task}.pt", task) for task in ("obb", "detect")}


@pytest.fixture
def tiny_scene(tmp_path) -> Callable[..., Path]:
    """Factory: ``tiny_scene(name="s.tif", size=(w, h), ...)`` writes a noise GeoTIFF."""
    from tests.helpers import random_scene

    def make(name: str = "s.tif", **kwargs) -> Path:
        return random_scene(tmp_path / name, **kwargs)

    return make


@pytest.fixture
def infer_cfg(tmp_path) -> Callable[..., DictConfig]:
    """Factory: the composed conf/infer.yaml writing to ``tmp_path/out``, quiet, plus
    ``overrides`` (checked as the Python API checks them)."""
    from detector.infer.api import config

    def make(source=None, weights=None, **overrides) -> DictConfig:
        return config(source, weights, **{"out": str(tmp_path / "out"), "progress": False,
                                          **overrides})

    return make
