"""No telemetry: nothing this package runs reports usage or writes tracking files.

OpenVINO's model converter (run by the OpenVINO export, detector.infer.backends) loads the
``openvino_telemetry`` package, which, without a consent file, counts as consent: it writes a
client id and usage statistics under ``~/intel/`` and sends events to Google Analytics.
Its only switches are that consent file (``~/intel/openvino_telemetry`` holding ``0``, itself
a file under ``~/intel``) and CI detection; OpenVINO falls back to a built-in no-op stub when
the package cannot be imported. So :func:`disable` marks it as not importable for this
process, before OpenVINO is imported (``detector/__init__.py`` calls it), and sets the
ONNX Runtime and Ultralytics opt-outs.
"""

from __future__ import annotations

import os
import sys

TELEMETRY_PACKAGE = "openvino_telemetry"
ENV_OPT_OUTS = {"YOLO_OFFLINE": "1",  # Ultralytics: no network probes, no usage events
                "ORT_TELEMETRY_DISABLED": "1"}  # ONNX Runtime


def disable() -> bool:
    """Turn third-party telemetry off for this process; False when OpenVINO's was already
    loaded by someone else (then its consent file decides)."""
    for key, value in ENV_OPT_OUTS.items():
        os.environ.setdefault(key, value)
    if sys.modules.get(TELEMETRY_PACKAGE) is not None:
        return False
    sys.modules[TELEMETRY_PACKAGE] = None  # ``import openvino_telemetry`` → ImportError
    return True
