"""User-facing errors and the thin wrapper every entry point runs under."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import NoReturn


class DetectorError(Exception):
    """A problem with the user's input: one line that names the file and the fix."""


class OutputError(DetectorError):
    """The output folder cannot take files (full, read-only, no permission): this stops the
    whole run, where a bad scene stops only itself."""


def exit_with(error: DetectorError) -> NoReturn:
    """Print ``error`` as one line on stderr and exit with status 2."""
    print(f"error: {error}", file=sys.stderr)
    raise SystemExit(2)


def guarded(main: Callable[[], object]) -> None:
    """Run an entry point, turning :class:`DetectorError` into a one-line message and exit 2."""
    try:
        main()
    except DetectorError as error:
        exit_with(error)
