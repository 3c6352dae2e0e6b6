"""``python -m detector.infer source=PATH [weights=BUNDLE.pt] [out=DIR]`` (Hydra).

Sharded over many processes, GPUs or cluster nodes with Hydra multirun, e.g.
``python -m detector.infer -m source=DIR out=OUT shards=3 shard=0,1,2 hydra/launcher=joblib``;
``reduce_only=true`` (same source and out) rebuilds the summary of a partial run.

A plain run (only ``key=value`` overrides: no Hydra flag, no ``hydra`` key) composes the
config once and runs it directly, as ``@hydra.main`` would with ``conf/hydra/tool.yaml`` (no
run folder, logs to stdout) but without its second composition; anything else, and any
override the composition rejects, goes through ``@hydra.main`` and its messages.
"""

import logging
import sys
from collections.abc import Sequence

import hydra
from omegaconf import DictConfig

from detector.config import CONFIG_PATH, HYDRA_VERSION_BASE, compose
from detector.errors import DetectorError, guarded
from detector.infer.api import reduce_run, run_config
from detector.infer.outputs import format_table


def run_body(cfg: DictConfig, multirun: bool) -> None:
    """The command's work for one composed config (one task of a multirun, or a plain run)."""
    if cfg.get("reduce_only"):
        counts = reduce_run(cfg)
        if counts["failed"] or counts["missing"]:
            raise SystemExit(1)
        return
    results = run_config(cfg)
    if cfg.get("dry_run"):
        return  # run_config printed the scenes; nothing was counted
    failed = [r for r in results if not r.ok]
    if len(results) == 1 and failed and not multirun:
        raise DetectorError(failed[0].error)  # printed once, by guarded
    classes = next((list(r.counts["classes"]) for r in results if r.counts), [])
    print(format_table(results, classes))
    if cfg.get("aoi"):
        print(f"  AOI applied: {cfg.aoi} (only cars whose centre lies inside are counted; "
              "area_km2 is the AOI's area in the scene)")
    for res in results:
        for kind, path in res.outputs.items():
            print(f"  {kind}: {path}")
    if multirun:
        return  # failed scenes are in the summary the multirun ends with
    if failed and len(failed) == len(results):
        raise DetectorError(f"all {len(failed)} scenes failed; the reasons are above and in "
                            f"{cfg.out}/summary.csv")
    if failed:
        raise SystemExit(1)


@hydra.main(config_path=CONFIG_PATH, config_name="infer", version_base=HYDRA_VERSION_BASE)
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    guarded(lambda: run_body(cfg, HydraConfig.get().mode == RunMode.MULTIRUN))


def plain_run(args: Sequence[str]) -> bool:
    """Whether ``args`` are only ``key=value`` overrides of the config (no Hydra machinery)."""
    return all("=" in a and not a.startswith("-") and not a.lstrip("+~").startswith("hydra")
               for a in args)


def fast_main(args: Sequence[str]) -> bool:
    """Run a plain run without ``@hydra.main``; False when it must go through Hydra."""
    if not plain_run(args):
        return False
    try:
        cfg = compose("infer", list(args))
    except Exception:  # noqa: BLE001 - Hydra's own entry point reports it in its words
        return False
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    guarded(lambda: run_body(cfg, multirun=False))
    return True


if __name__ == "__main__":
    if not fast_main(sys.argv[1:]):
        main()
