"""Keep Ultralytics off the network: nothing may be downloaded at run time.

Import this module before ``ultralytics`` (``detector.train`` does) and call
:func:`prepare` before training.
"""

from __future__ import annotations

import logging
import os
import shutil
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


def skip_amp_download() -> None:
    """Stop the AMP check from downloading ``yolo26n.pt`` (CUDA only).

    Ultralytics compares FP32 and FP16 outputs of a downloaded reference model before it
    enables AMP. Without that file locally we trust AMP on CUDA (the check's own offline
    outcome) and keep FP32 elsewhere, as the check would.
    """
    import ultralytics.engine.trainer as trainer_module
    from ultralytics.utils import WEIGHTS_DIR

    if (Path(WEIGHTS_DIR) / "yolo26n.pt").is_file():
        return

    def check_amp_offline(model) -> bool:
        return next(model.parameters()).device.type == "cuda"

    trainer_module.check_amp = check_amp_offline


def enable_tensorboard(enabled: bool) -> bool:
    """Turn on Ultralytics' TensorBoard logger when asked and ``tensorboard`` is installed."""
    if not enabled or find_spec("tensorboard") is None:
        return False
    from ultralytics import settings

    if not settings.get("tensorboard"):
        settings.update({"tensorboard": True})  # Ultralytics only reads this from its settings
    return True


def in_every_process(trainer: object = None) -> None:
    """Ultralytics callback (``on_pretrain_routine_start``): the offline AMP check in each
    process that trains, DDP workers included (they are fresh interpreters that load the
    trainer's pickled callbacks, so this function must stay importable at module level)."""
    skip_amp_download()


def prepare(tensorboard: bool = True) -> None:
    """Make a training run offline-safe (font, AMP check) and set up optional logging."""
    provide_font()
    skip_amp_download()
    if enable_tensorboard(tensorboard):
        log.info("TensorBoard logs go to the run's ultralytics/ folder")
