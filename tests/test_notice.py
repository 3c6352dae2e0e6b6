"""NOTICE names every binary file the repository ships, with its current sha256."""

import hashlib
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BINARY = (".pt", ".png", ".jpg", ".tif", ".onnx", ".bin")


def shipped_binaries() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the shipped files cannot be listed")
    return [ROOT / f for f in out if f.endswith(BINARY)]


def test_notice_lists_every_binary_with_its_sha256():
    notice = (ROOT / "NOTICE").read_text()
    missing = []
    for path in shipped_binaries():
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        rel = str(path.relative_to(ROOT))
        if rel not in notice or digest not in notice:
            missing.append(f"{rel} ({digest[:12]})")
    assert not missing, "add to NOTICE with origin, licence and sha256: " + ", ".join(missing)


def test_licence_is_agpl():
    assert "GNU AFFERO GENERAL PUBLIC LICENSE" in (ROOT / "LICENSE").read_text()
    assert 'license = "AGPL-3.0-or-later"' in (ROOT / "pyproject.toml").read_text()
