"""Hydra callback: when a sharded multirun ends, reduce every shard's outputs to one summary."""

from __future__ import annotations

import logging
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)


class SummarizeShards(Callback):
    """Writes ``out/summary.csv`` and ``summary.json`` and prints one status line.

    Registered in ``conf/infer.yaml`` (``hydra.callbacks.summarize``). The multirun's config
    holds ``source`` and ``out`` but not the swept ``shard``, which is all the reduce needs.
    Exits 1 when a scene failed or is missing, so a scheduler or script sees it.
    """

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from detector.errors import DetectorError, exit_with
        from detector.infer.api import reduce_run

        if int(config.get("shards") or 1) < 2:
            return  # unsharded jobs write their own summary
        try:
            counts = reduce_run(config)
        except DetectorError as err:
            exit_with(err)
        if counts["failed"] or counts["missing"]:
            raise SystemExit(1)
