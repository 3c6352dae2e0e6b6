"""Start-up config checks: unknown keys and impossible values fail with one line naming the key."""

import subprocess
import sys

import pytest

from detector.config import compose
from detector.errors import DetectorError
from detector.infer import run
from detector.infer.api import config
from detector.validation import RULES, check_config

ENTRY_POINTS = {"infer": [], "evaluate": [], "train": [], "dataset": [],
                "recalibrate": ["weights=model.pt"], "monitor": []}


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_default_configs_pass(name):
    check_config(compose(name, ENTRY_POINTS[name]), name)


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_every_rule_names_a_key_the_config_has(name):
    """A rule for a key that was renamed or removed would never fire."""
    cfg = compose(name, [*ENTRY_POINTS[name], "data=geojson"] if name in ("train", "dataset")
                  else ENTRY_POINTS[name])
    for key in RULES[name]:
        node = cfg
        for part in key.split("."):
            assert part in node, f"{name}: rule for missing key {key}"
            node = node[part]


@pytest.mark.parametrize(("overrides", "key"), [
    ({"tiling.overlap": 20}, "tiling.overlap"),
    ({"conf": 2}, "conf"),
    ({"merge": "nms"}, "merge"),
    ({"merge.method": "nms"}, "merge.method"),
    ({"tiling.overlap_m": -5}, "tiling.overlap_m"),
    ({"batch": 0}, "batch"),
])
def test_python_api_rejects_typos_and_impossible_values(tmp_path, overrides, key):
    with pytest.raises(DetectorError, match=rf"^{key}[=:]") as err:
        run(tmp_path / "missing.tif", out=tmp_path / "out", **overrides)
    assert "\n" not in str(err.value) and not (tmp_path / "out").exists()


def test_python_api_keeps_valid_dotted_overrides():
    cfg = config(**{"tiling.overlap_m": 20, "merge.threshold": 0.6, "conf": 0.1})
    assert (cfg.tiling.overlap_m, cfg.merge.threshold, cfg.conf) == (20, 0.6, 0.1)
    check_config(cfg, "infer")


@pytest.mark.parametrize(("name", "override", "key"), [
    ("train", "data.chip.min_visible=2", "data.chip.min_visible"),
    ("train", "calibration.operating=best", "calibration.operating"),
    ("train", "trainer.imgsz=0", "trainer.imgsz"),
    ("train", "data.normalization.method=histogram", "data.normalization"),
    ("dataset", "task=segment", "task"),
    ("dataset", "data.split.by=random", "data.split.by"),
    ("recalibrate", "calibration.candidate_conf=0", "calibration.candidate_conf"),
    ("evaluate", "min_inside=1.5", "min_inside"),
    ("evaluate", "geometry=round", "geometry"),
    ("infer", "stac.min_aoi_share=2", "stac.min_aoi_share"),
    ("monitor", "stac.datetime=yesterday", "stac.datetime"),
    ("monitor", "stac.max_off_nadir=95", "stac.max_off_nadir"),
])
def test_each_entry_point_rejects_out_of_range_values(name, override, key):
    cfg = compose(name, [*ENTRY_POINTS[name], override])
    with pytest.raises(DetectorError, match=rf"^{key}="):
        check_config(cfg, name)


def test_cli_bad_value_exits_2_with_one_line(tmp_path, cli_env):
    proc = subprocess.run([sys.executable, "-m", "detector.infer", "conf=2",
                           f"out={tmp_path / 'out'}"], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path, env=cli_env)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: conf=2: must be")
