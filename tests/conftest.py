"""Shared fixtures: tiny scenes, configs, and the environment for command-line tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def cli_env() -> dict[str, str]:
    """Environment for ``python -m detector...`` subprocesses that imports this checkout.

    Tests run the commands from a temporary folder; without this an installed copy of
    ``detector`` elsewhere would answer instead of the code under test.
    """
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
