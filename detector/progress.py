"""Progress bars: a live tqdm bar on a terminal, plain lines in a log file or a pipe.

On a terminal the bar redraws in place. When the output is not a terminal (a log file, a
pipe, a batch job) the same bar writes one plain line every :data:`LOG_INTERVAL_S` seconds
and one at the end, without carriage returns or escape codes, so logs stay readable.
"""

from __future__ import annotations

import io
import re
import sys
from collections.abc import Iterable
from typing import Any, TextIO

from tqdm import tqdm

LOG_INTERVAL_S = 30.0  # seconds between progress lines when the output is not a terminal
_ESCAPES = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class LineWriter(io.TextIOBase):
    """A file for tqdm that turns each redraw into one plain line (blank redraws dropped)."""

    def __init__(self, stream: TextIO):
        self.stream = stream

    def write(self, text: str) -> int:
        for part in re.split(r"[\r\n]", _ESCAPES.sub("", text)):
            if part.strip():
                self.stream.write(part.rstrip() + "\n")
        self.stream.flush()
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return False


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def progress(iterable: Iterable[Any] | None = None, *, enabled: bool = True,
             stream: TextIO | None = None, **kwargs: Any) -> tqdm:
    """A tqdm bar over ``iterable`` (tqdm keyword arguments pass through).

    Args:
        enabled: False shows nothing (a ``progress=false`` config key).
        stream: where it writes; default ``sys.stderr`` as it is now.
    """
    stream = stream if stream is not None else sys.stderr
    if not enabled:
        return tqdm(iterable, disable=True, **kwargs)
    if _is_terminal(stream):
        return tqdm(iterable, file=stream, **kwargs)
    kwargs.pop("leave", None)  # a finished line in a log is kept
    return tqdm(iterable, file=LineWriter(stream), mininterval=LOG_INTERVAL_S, ascii=True,
                ncols=100, dynamic_ncols=False, **kwargs)
