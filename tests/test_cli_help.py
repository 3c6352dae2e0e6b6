"""``--help`` of each command: its own keys, described from its conf/*.yaml comments."""

import subprocess
import sys

import pytest

from detector.cli_help import COMMANDS, keys, usage
from detector.config import compose


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_usage_lists_every_key_of_the_command(name):
    text = usage(name)
    cfg = compose(name)
    inherited = set(compose("infer")) if name == "infer_ray" else set()
    assert not inherited or "Every key of conf/infer.yaml applies too" in text
    for key in set(cfg) - inherited:
        assert f"  {key}=" in text or f"  {key}." in text, (name, key)
    assert text.startswith(f"usage: python -m {COMMANDS[name]}")
    # only this command's groups: train's model options are not in infer's help
    if name != "train":
        assert "yolo11n-obb" not in text or "model" in cfg


def test_key_comments_become_descriptions():
    text = """# header
defaults:
  - tiling: default
a: 1        # the a
# about b, on the line above
b: null
# a section
c:
  d: x      # the d
            # continued
hydra:
  job: {name: x}
"""
    found = {k.name: k for k in keys(text)}
    assert found["a"].doc == "the a" and found["b"].doc == "about b, on the line above"
    assert found["c.d"].doc == "the d continued" and found["c"].doc == "a section"
    assert "hydra.job" not in found and "defaults" not in found


@pytest.mark.parametrize("module, key", [("detector.infer", "aoi="),
                                         pytest.param("detector.train.recalibrate", "weights=",
                                                      marks=pytest.mark.slow),
                                         pytest.param("detector.adapt", "minutes=",
                                                      marks=pytest.mark.slow)])
def test_help_prints_the_command_usage_not_hydras(tmp_path, cli_env, module, key):
    done = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True,
                          text=True, cwd=tmp_path, env=cli_env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: python -m {module}")
    assert key in done.stdout
    assert "powered by Hydra" not in done.stdout and "== Config ==" not in done.stdout
