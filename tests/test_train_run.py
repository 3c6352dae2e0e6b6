"""End-to-end training runs on tiny datasets: the bundle, init weights, errors, resume."""

import json
import subprocess
import sys

import pytest
import torch

from detector.bundle import CARD_VERSION, card_path, read_card
from detector.config import compose
from detector.errors import DetectorError
from detector.train.model import build_model, resolve_init
from detector.train.train import resolve_resume, train
from tests.helpers import TOY_CLASSES, write_toy_dataset


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return write_toy_dataset(tmp_path_factory.mktemp("toy"), n_train=6, n_val=3, size=64,
                             with_test=True)


def _cfg(toy, out, *overrides):
    return compose("train", ["debug=smoke", f"dataset={toy}", f"paths.output_dir={out}",
                             "trainer.imgsz=64", "trainer.batch=4", *overrides])


@pytest.fixture(scope="module")
def smoke_bundle(toy, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    return train(_cfg(toy, out, "evaluate_test=true"))


def test_smoke_run_writes_a_bundle_whose_card_has_every_field(smoke_bundle):
    assert smoke_bundle.name == "railcar_obb.pt" and smoke_bundle.is_file()
    card = read_card(smoke_bundle)  # verifies the sha256 and the schema
    raw = json.loads(card_path(smoke_bundle).read_text())
    assert raw["card_version"] == CARD_VERSION and raw["sha256"] and raw["created"]
    assert card.task == "obb" and card.classes == TOY_CLASSES
    assert card.imgsz == 64 and card.m_per_px == 0.5  # chips are 64 px too
    assert card.normalization["bands"] == [1, 2, 3]
    assert set(card.calibration) == set(TOY_CLASSES)
    assert set(card.operating_threshold) == {*TOY_CLASSES, "default"}
    assert set(card.recall_at_candidate_conf) == set(TOY_CLASSES)
    assert set(card.recall_counts) == set(TOY_CLASSES)
    assert card.candidate_conf == 0.05 and card.not_wagons == ["locomotive"]
    assert card.init == "scratch"
    metrics = card.metrics
    for key in ("mAP50", "mAP50-95", "per_class", "ece_before", "ece_after", "test"):
        assert key in metrics, key
    assert set(metrics["per_class"]) == set(TOY_CLASSES)
    assert card.dataset["info"]["source"] == "tests.helpers"
    assert len(card.git_commit) > 0


def test_init_from_a_local_pt_transfers_matching_layers(tmp_path, toy):
    from ultralytics import YOLO

    source = YOLO("yolo11n.yaml")  # a COCO-shaped detect model: 80 classes, other head
    weights = tmp_path / "tiny.pt"
    source.save(weights)
    cfg = _cfg(toy, tmp_path / "run", f"model.init={weights}")
    model = build_model(cfg.model)
    first = next(iter(source.model.state_dict().items()))
    assert torch.allclose(model.model.state_dict()[first[0]].float(), first[1].float(), atol=1e-3)
    bundle = train(cfg)
    card = read_card(bundle)
    assert card.training["init"] == card.init == str(weights)


def test_missing_init_weights_fail_with_the_fix(tmp_path):
    with pytest.raises(DetectorError, match="nothing is downloaded"):
        resolve_init(str(tmp_path / "missing.pt"))
    assert resolve_init("scratch") is None


def test_cli_reports_bad_input_in_one_line(tmp_path, toy, cli_env):
    run = subprocess.run(
        [sys.executable, "-m", "detector.train", "debug=smoke", f"dataset={toy}",
         f"model.init={tmp_path / 'nope.pt'}", f"hydra.run.dir={tmp_path / 'run'}"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env=cli_env)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1].startswith(f"error: {tmp_path / 'nope.pt'}")
    assert not list(tmp_path.glob("run/*.pt"))


def test_missing_dataset_fails(tmp_path):
    cfg = _cfg(tmp_path / "none" / "data.yaml", tmp_path / "run")
    with pytest.raises(DetectorError, match="dataset not found"):
        train(cfg)


def test_resume_continues_an_interrupted_run(tmp_path, toy):
    from detector.train.train import train_args

    cfg = _cfg(toy, tmp_path / "run", "trainer.epochs=2")
    model = build_model(cfg.model)

    def interrupt(trainer):
        raise KeyboardInterrupt  # after epoch 1 was saved with its optimizer state

    model.add_callback("on_fit_epoch_end", interrupt)
    with pytest.raises(KeyboardInterrupt):
        model.train(**train_args(cfg, toy, tmp_path / "run"))
    last = tmp_path / "run" / "ultralytics" / "weights" / "last.pt"
    runs = [str(tmp_path / "run")]
    assert resolve_resume(True, runs) == last
    bundle = train(_cfg(toy, tmp_path / "run", "trainer.resume=true", "trainer.epochs=2",
                        f"paths.runs_dirs=[{tmp_path / 'run'}]"))
    assert read_card(bundle).training["epochs_run"] == 2
    with pytest.raises(DetectorError, match="already finished"):
        resolve_resume(str(last), runs)  # completed runs lose their optimizer state
    with pytest.raises(DetectorError, match="no unfinished run"):
        resolve_resume(True, runs)


def test_cli_smoke_builds_a_synthetic_dataset_and_keeps_the_config(tmp_path, cli_env):
    run_dir = tmp_path / "run"
    run = subprocess.run(
        [sys.executable, "-m", "detector.train", "debug=smoke", f"hydra.run.dir={run_dir}",
         f"paths.datasets_dir={tmp_path / 'datasets'}"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=cli_env)
    assert run.returncode == 0, run.stderr[-2000:]
    card = read_card(run_dir / "railcar_obb.pt")
    assert card.dataset["built"] and card.dataset["info"]["source"] == "synthetic"
    assert card.imgsz == 160 and card.m_per_px == 0.5
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert len(list((tmp_path / "datasets").glob("synthetic-obb-*/data.yaml"))) == 1


def test_cli_multirun_sweep_trains_one_bundle_per_choice(toy, tmp_path, cli_env):
    """The README's `-m model=...,...` sweep: one job, run folder and bundle per model."""
    sweep = tmp_path / "sweep"
    run = subprocess.run(
        [sys.executable, "-m", "detector.train", "-m", "debug=smoke", f"dataset={toy}",
         "model=yolo11n-obb,yolov8n-obb", "trainer.imgsz=64", "trainer.batch=4",
         "calibration.level=chips", f"hydra.sweep.dir={sweep}"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path, env=cli_env)
    assert run.returncode == 0, run.stderr[-2000:]
    archs = [read_card(sweep / str(job) / "railcar_obb.pt").training["arch"] for job in (0, 1)]
    assert archs == ["yolo11n-obb.yaml", "yolov8n-obb.yaml"]
    for job in (0, 1):
        assert (sweep / str(job) / ".hydra" / "config.yaml").is_file()
