"""Offline and quiet: no telemetry files under ~/intel, no exporter chatter on a first run."""

import subprocess
import sys

import pytest

from detector.infer import backends
from tests.helpers import random_scene

needs_openvino = pytest.mark.skipif(not backends.installed("openvino"),
                                    reason="openvino is not installed (the [fast] extra)")


def isolated_env(cli_env, home):
    return {**cli_env, "HOME": str(home), "XDG_CACHE_HOME": str(home / "cache"),
            "YOLO_CONFIG_DIR": str(home / "ultralytics")}


@needs_openvino
def test_openvino_telemetry_is_the_no_op_stub_and_writes_nothing(tmp_path, cli_env):
    code = ("import detector; from openvino.tools.ovc import telemetry_utils as t; "
            "tm = t.init_ovc_telemetry(); tm.send_event('ovc', 'test', 'x'); "
            "print(t.tm.__name__)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=isolated_env(cli_env, tmp_path), timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("telemetry_stub")
    assert not (tmp_path / "intel").exists()


@needs_openvino
@pytest.mark.slow
def test_first_run_exports_with_one_line_and_no_intel_folder(tmp_path, cli_env,
                                                             untrained_models):
    scene = random_scene(tmp_path / "s.tif", size=(150, 120))
    cmd = [sys.executable, "-m", "detector.infer", f"weights={untrained_models['obb']}",
           f"source={scene}", f"out={tmp_path / 'out'}", "backend=openvino", "batch=2",
           "progress=false", "quicklook=false", "precision=fp32"]  # auto: INT8 with nncf
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env=isolated_env(cli_env, tmp_path))
    assert done.returncode == 0, done.stderr
    text = done.stdout + done.stderr
    assert text.count("exporting the model to OpenVINO (once, cached at") == 1
    for noise in ("FutureWarning", "Predict:", "yolo predict", "export success", "Warning"):
        assert noise not in text, text
    assert not (tmp_path / "intel").exists()
