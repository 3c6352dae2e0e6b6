"""Write files and folders so that an interrupted run never leaves a half-written output."""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    The temporary name keeps the suffix, so libraries that choose a format by extension
    (GDAL, matplotlib) still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".partial{path.suffix}",
                               dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_current_umask())  # mkstemp makes 0600; outputs are shared
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; it replaces ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_current_umask())
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def atomic_files(paths: Mapping[str, Path], last: str | None = None
                 ) -> Iterator[dict[str, Path]]:
    """Temporary paths beside several outputs, renamed onto them only when the block succeeds.

    The block writes whichever temporaries it needs (they are not created beforehand);
    on success each one written is renamed onto its output, ``last`` after all others
    (a done marker), and on any failure every temporary goes and no output is touched.
    Temporary names are ``.<stem>.<8 hex>.partial<suffix>``, as :func:`atomic_path`'s.
    """
    tmps = {}
    for key, path in paths.items():
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmps[key] = path.parent / f".{path.stem}.{secrets.token_hex(4)}.partial{path.suffix}"
    try:
        yield dict(tmps)
        order = [k for k in tmps if k != last] + ([last] if last in tmps else [])
        for key in order:
            if tmps[key].exists():
                os.replace(tmps[key], paths[key])
    finally:
        for tmp in tmps.values():
            tmp.unlink(missing_ok=True)


# errno values that mean "the output folder cannot take files", not "this input is bad".
OUTPUT_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM,
                 errno.EFBIG)


def check_writable(folder: str | Path, probe_bytes: int = 4096) -> str | None:
    """Why files cannot be written to ``folder`` (created if missing), or None when they can.

    Writes, syncs and removes a small probe file, so a full disk or a read-only or
    foreign folder shows before any work, not halfway through it.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe.", dir=folder)
        try:
            os.write(fd, b"\0" * probe_bytes)
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as err:
        return err.strerror or str(err)
    return None


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_csv(path: str | Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write ``rows`` (dicts sharing the first row's keys) as CSV with a header, atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buffer.getvalue())


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()
