"""Keep Ultralytics off the network: nothing may be downloaded at run time.

Import this module before ``ultralytics`` (``detector.train`` does) and train inside
:func:`training_session`. What it changes, and for how long:

- ``YOLO_OFFLINE=1`` in the environment (unless already set), at import: Ultralytics reads
  it once, when it is imported, to skip its network probes and usage events.
- ``Arial.ttf`` in Ultralytics' config folder (a copy of matplotlib's DejaVu Sans), kept:
  Ultralytics would otherwise download it.
- Ultralytics' AMP check is replaced, and its ``tensorboard`` setting switched on, only
  inside the session; both are restored when it ends.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.util import find_spec
from pathlib import Path

# Ultralytics probes DNS at import and sends usage events when it thinks it is online.
os.environ.setdefault("YOLO_OFFLINE", "1")

log = logging.getLogger(__name__)


def provide_font() -> None:
    """Give Ultralytics a local font for plot labels.

    ``check_det_dataset`` and the plotting code look for ``Arial.ttf`` in Ultralytics'
    config folder and download it when missing; matplotlib's bundled DejaVu Sans under
    that name satisfies the lookup without a download.
    """
    from matplotlib import font_manager
    from ultralytics.utils import USER_CONFIG_DIR

    target = Path(USER_CONFIG_DIR) / "Arial.ttf"
    if target.exists():
        return
    source = Path(font_manager.findfont("DejaVu Sans", fallback_to_default=True))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".{os.getpid()}.partial")
    shutil.copyfile(source, tmp)
    os.replace(tmp, target)


def check_amp_offline(model) -> bool:
    """AMP on CUDA, FP32 elsewhere: the outcome of Ultralytics' check when it cannot run."""
    return next(model.parameters()).device.type == "cuda"


@contextmanager
def offline_amp_check() -> Iterator[None]:
    """Inside the block, stop the AMP check from downloading ``yolo26n.pt``.

    Ultralytics compares FP32 and FP16 outputs of a downloaded reference model before it
    enables AMP. Without that file locally we trust AMP on CUDA (the check's own offline
    outcome) and keep FP32 elsewhere, as the check would.
    """
    import ultralytics.engine.trainer as trainer_module
    from ultralytics.utils import WEIGHTS_DIR

    if (Path(WEIGHTS_DIR) / "yolo26n.pt").is_file():
        yield
        return
    original = trainer_module.check_amp
    trainer_module.check_amp = check_amp_offline
    try:
        yield
    finally:
        trainer_module.check_amp = original


@contextmanager
def tensorboard_logging(enabled: bool) -> Iterator[bool]:
    """Inside the block, Ultralytics' TensorBoard logger is on when asked and installed.

    Ultralytics only reads this from its settings file; the user's value is put back after.
    """
    if not enabled or find_spec("tensorboard") is None:
        yield False
        return
    from ultralytics import settings

    before = settings.get("tensorboard")
    if not before:
        settings.update({"tensorboard": True})
    try:
        yield True
    finally:
        if not before:
            settings.update({"tensorboard": before})


def in_every_process(trainer: object = None) -> None:
    """Ultralytics callback (``on_pretrain_routine_start``): the offline AMP check in each
    process that trains, DDP workers included.

    DDP workers are fresh interpreters that load the trainer's pickled callbacks (so this
    function must stay importable at module level); there the check is replaced for the
    worker's lifetime. In the main process :func:`training_session` has replaced it already
    and restores it afterwards, so this does nothing.
    """
    import ultralytics.engine.trainer as trainer_module
    from ultralytics.utils import WEIGHTS_DIR

    if not (Path(WEIGHTS_DIR) / "yolo26n.pt").is_file():
        trainer_module.check_amp = check_amp_offline


@contextmanager
def training_session(tensorboard: bool = True) -> Iterator[None]:
    """An offline-safe training run (font, AMP check) with optional TensorBoard logging."""
    provide_font()
    with offline_amp_check(), tensorboard_logging(tensorboard) as logging_on:
        if logging_on:
            log.info("TensorBoard logs go to the run's ultralytics/ folder")
        yield
