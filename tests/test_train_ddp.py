"""Multi-GPU training without GPUs: the DDP command Ultralytics builds from our entry point,
and the pickled trainer state its worker processes load, checked in a fresh interpreter."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import ultralytics.engine.trainer as trainer_module

from detector.config import compose
from detector.train.train import train
from tests.helpers import write_toy_dataset

BUNDLED = Path(__file__).parents[1] / "detector" / "assets" / "railcar_obb.pt"


class LaunchedError(Exception):
    """Raised instead of starting ``torch.distributed.run``."""


def test_two_gpu_run_builds_a_ddp_command_whose_state_loads_in_a_fresh_process(
        tmp_path, monkeypatch):
    toy = write_toy_dataset(tmp_path / "toy", n_train=4, n_val=2, size=64)
    cfg = compose("train", ["debug=smoke", f"dataset={toy}", f"paths.output_dir={tmp_path}",
                            "trainer.imgsz=64", "trainer.batch=4", "trainer.device=[0,1]",
                            f"model.init={BUNDLED}"])
    # Two "GPUs" for the launching process; the DDP launch itself is captured.
    monkeypatch.setattr(trainer_module, "select_device",
                        lambda *a, **k: torch.device("cuda", 0))
    launched = {}

    def capture(cmd, **kwargs):
        script = Path(cmd[-1])
        launched.update(cmd=cmd, script=script.read_text())
        (tmp_path / "state.pt").write_bytes(script.with_suffix(".pt").read_bytes())
        raise LaunchedError

    monkeypatch.setattr(trainer_module.subprocess, "run", capture)
    with pytest.raises(LaunchedError):
        train(cfg)
    monkeypatch.undo()  # subprocess.run is the real one again
    cmd = launched["cmd"]
    assert cmd[:5] == [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    compile(launched["script"], "ddp_script", "exec")  # the worker script is valid Python
    check = textwrap.dedent(f"""
        import albumentations as A
        import ultralytics.engine.trainer as trainer_module
        from ultralytics.utils.patches import torch_load
        state = torch_load({str(tmp_path / 'state.pt')!r}, map_location="cpu")
        args = state["args"]
        assert state["trainer"].__name__ == "OBBTrainer", state["trainer"]
        assert args["device"] == "0,1" and args["data"] == {str(toy)!r}, args
        assert args["imgsz"] == 64 and args["task"] == "obb"
        augs = [A.from_dict(t) for t in args["augmentations"]]  # stored as to_dict() dicts
        assert augs and all(isinstance(a, A.BasicTransform) for a in augs), augs
        # init weights travel with the model (without model.init it is the YAML name)
        assert type(state["model"]).__name__ == "OBBModel", type(state["model"])
        hooks = state["callbacks"]["on_pretrain_routine_start"]
        names = [f.__module__ + "." + f.__name__ for f in hooks]
        assert "detector.train.offline.in_every_process" in names, names
        for hook in hooks:
            if hook.__module__.startswith("detector"):
                hook(None)
        from ultralytics.utils import WEIGHTS_DIR
        if not (WEIGHTS_DIR / "yolo26n.pt").is_file():  # else the real check runs offline
            assert trainer_module.check_amp.__name__ == "check_amp_offline"
        print("ok", " ".join(type(a).__name__ for a in augs))
    """)
    proc = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and proc.stdout.startswith("ok"), proc.stderr[-3000:]
    wanted = [spec["_target_"].rsplit(".", 1)[-1] for spec in cfg.augment.albumentations]
    assert proc.stdout.split() == ["ok", *wanted]
