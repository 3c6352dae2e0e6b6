"""Fail loudly when a dependency leaves its tested range or an Ultralytics internal moved.

detector reaches past Ultralytics' public API in a few places (batched forward + NMS,
checkpoint loading, the AMP check, trainer attributes); an upgrade that moves one of these
breaks here with the name of the symbol, not deep inside a run.
"""

import ast
import inspect
import textwrap
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
REQUIREMENTS = [Requirement(r) for r in
                tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]]
CONF_MODELS = Path(__file__).resolve().parents[1] / "conf" / "model"


@pytest.mark.parametrize("req", REQUIREMENTS, ids=lambda r: r.name)
def test_core_dependency_is_pinned_and_installed_within_range(req):
    assert any(s.operator in ("<", "<=") for s in req.specifier), f"{req.name}: no upper bound"
    assert any(s.operator == ">=" for s in req.specifier), f"{req.name}: no lower bound"
    installed = version(req.name)
    assert req.specifier.contains(installed, prereleases=True), (
        f"{req.name} {installed} is outside the tested range {req.specifier}")


def test_ultralytics_internals_we_call_are_where_we_expect():
    import ultralytics
    import ultralytics.engine.trainer as trainer_module
    from ultralytics import YOLO  # noqa: F401
    from ultralytics.engine.trainer import BaseTrainer
    from ultralytics.nn.tasks import guess_model_task, load_checkpoint  # noqa: F401
    from ultralytics.utils import USER_CONFIG_DIR, WEIGHTS_DIR, nms, ops  # noqa: F401

    assert callable(trainer_module.check_amp)  # replaced in detector.train.offline
    assert callable(ops.xywhr2xyxyxyxy)
    assert {"device"} <= set(inspect.signature(load_checkpoint).parameters)
    assert {"conf_thres", "iou_thres", "agnostic", "max_det", "nc", "rotated", "end2end"} <= set(
        inspect.signature(nms.non_max_suppression).parameters)
    assert hasattr(ultralytics.settings, "update") and "tensorboard" in ultralytics.settings
    # Trainer attributes detector.train reads after model.train().
    tree = ast.parse(textwrap.dedent(inspect.getsource(BaseTrainer)))
    assigned = {t.attr for node in ast.walk(tree) if isinstance(node, ast.Assign | ast.AnnAssign)
                for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
                for t in ast.walk(target)
                if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name)
                and t.value.id == "self"}
    for attr in ("best", "last", "save_dir", "epoch", "train_time_start", "device", "args"):
        assert attr in assigned, f"BaseTrainer.{attr} moved"


def test_custom_albumentations_list_is_still_a_train_argument():
    """detector.train passes its augmentations as ``YOLO.train(augmentations=[...])``."""
    from ultralytics.data import augment

    assert 'getattr(hyp, "augmentations"' in inspect.getsource(augment.v8_transforms)


@pytest.mark.parametrize("name", sorted(p.stem for p in CONF_MODELS.glob("*.yaml")))
def test_every_model_config_builds_offline(name):
    from omegaconf import OmegaConf

    from detector.train.model import build_model

    model_cfg = OmegaConf.load(CONF_MODELS / f"{name}.yaml")
    model_cfg.init = "scratch"
    model = build_model(model_cfg)
    assert model.task == model_cfg.task
