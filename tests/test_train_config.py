"""Every option of every train config group, and every experiment, composes."""

from pathlib import Path

import detector.conf
import pytest
from omegaconf import OmegaConf

from detector.config import compose

CONF = Path(detector.conf.__file__).parent


def _options(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml") if not p.stem.startswith("_"))


@pytest.mark.parametrize("group", ["data", "model", "augment", "trainer", "paths",
                                   "experiment", "debug"])
def test_every_option_composes(group, tmp_path):
    options = _options(group)
    assert options, f"conf/{group} has no options"
    for option in options:
        cfg = compose("train", [f"{group}={option}", f"paths.output_dir={tmp_path}"])
        assert cfg.model.task in ("obb", "detect")
        assert cfg.trainer.imgsz > 0 and cfg.calibration.candidate_conf > 0


def test_defaults_and_hydra_run_folder():
    cfg = compose("train", [], with_hydra=True)
    assert cfg.model.arch == "yolo11n-obb.yaml" and cfg.model.init == "scratch"
    assert cfg.hydra.job.name == "train"
    assert cfg.hydra.run.dir.startswith("outputs/train/")
    assert cfg.hydra.output_subdir == ".hydra"  # the composed config is kept with the run
    assert cfg.dataset is None


def test_model_options_cover_tasks_and_sizes():
    options = _options("model")
    assert {"yolo11n-obb", "yolo26n-obb", "yolov8n-obb", "yolo11n", "yolo11s-obb"} <= set(options)
    for option in options:
        cfg = compose("train", [f"model={option}", "paths.output_dir=/tmp/unused"])
        assert cfg.model.arch == f"{option}.yaml"
        assert cfg.model.task == ("obb" if option.endswith("-obb") else "detect")
        assert cfg.paths.bundle_name == f"railcar_{cfg.model.task}"


def _leaves(node, prefix=""):
    for key, value in node.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


@pytest.mark.parametrize("name", _options("experiment"))
def test_experiment_holds_only_differences(name):
    """Every value an experiment sets differs from what the same groups give without it."""
    raw = OmegaConf.to_container(OmegaConf.load(CONF / "experiment" / f"{name}.yaml"))
    groups = [entry for entry in raw.pop("defaults", []) if isinstance(entry, dict)]
    choices = [f"{k.removeprefix('override /')}={v}" for entry in groups
               for k, v in entry.items()]
    base = compose("train", [*choices, "paths.output_dir=/tmp/unused"])
    exp = compose("train", [f"experiment={name}", "paths.output_dir=/tmp/unused"])
    leaves = dict(_leaves(raw))
    assert leaves, f"experiment {name} changes nothing"
    repeats = [k for k, v in leaves.items() if OmegaConf.select(base, k) == v]
    assert not repeats, f"experiment {name} repeats defaults: {repeats}"
    for key, value in leaves.items():  # and what it sets is what training gets
        assert OmegaConf.select(exp, key) == value, key


def test_smoke_is_tiny():
    cfg = compose("train", ["debug=smoke", "paths.output_dir=/tmp/unused"])
    assert cfg.trainer.epochs == 1 and cfg.trainer.imgsz <= 256
    assert cfg.data.synth.n_scenes <= 4
