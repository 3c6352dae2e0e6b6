"""Third-party chatter (Ultralytics' log lines, library warnings, prints) kept off the
terminal while a step that produces it runs; it is logged at debug level instead."""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, redirect_stderr, redirect_stdout


@contextmanager
def quiet(log: logging.Logger, what: str, loggers: Sequence[str] = ()) -> Iterator[None]:
    """Inside the block, Ultralytics logs only errors, warnings are not shown and anything
    printed is captured; afterwards the captured text goes to ``log`` at debug level
    (``hydra.verbose=true`` or a debug handler shows it), under ``what``. The named
    ``loggers`` (e.g. ``detector.train``) log only warnings and errors meanwhile.

    Only for steps that run alone (an export, a training run): other threads' output in
    the meantime is captured too.
    """
    from ultralytics.utils import LOGGER

    quieted = [LOGGER, *(logging.getLogger(name) for name in loggers)]
    levels = [logger.level for logger in quieted]
    buffer = io.StringIO()
    LOGGER.setLevel(logging.ERROR)
    for logger in quieted[1:]:
        logger.setLevel(max(logging.WARNING, logger.getEffectiveLevel()))
    try:
        with warnings.catch_warnings(), redirect_stdout(buffer), redirect_stderr(buffer):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(quieted, levels, strict=True):
            logger.setLevel(level)
        text = buffer.getvalue().strip()
        if text:
            log.debug("%s output:\n%s", what, text)
