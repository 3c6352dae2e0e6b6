"""``python -m detector.infer.ray source=DIR out=OUT shards=N``: every shard as a Ray task.

A small runner instead of the Hydra Ray launcher, which pins ``cloudpickle<3`` (Ultralytics'
multi-GPU training needs ``>=3.1.1``). Each task runs the same per-shard function as a
Hydra multirun job (:func:`detector.infer.api.run_config` with ``shard=i``) on a GPU Ray
gives it; Ray retries tasks whose worker died (``ray.max_retries``); the summary follows.
"""

from __future__ import annotations

import logging
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from detector.config import CONFIG_PATH, HYDRA_VERSION_BASE
from detector.errors import DetectorError, guarded

log = logging.getLogger(__name__)


def run_shard(cfg: dict[str, Any], shard: int) -> dict[str, int]:
    """One task: shard ``shard`` of the run ``cfg`` (a plain dict, so it travels to workers).

    Returns:
        How many of its scenes are ok and failed.
    """
    from detector.infer.api import run_config

    task_cfg = OmegaConf.create({**cfg, "shard": shard})
    results = run_config(task_cfg)
    return {"ok": sum(r.ok for r in results), "failed": sum(not r.ok for r in results)}


def run_on_ray(cfg: DictConfig) -> dict[str, int]:
    """Run every shard of ``cfg`` as a Ray task, wait, and reduce; return the tally.

    Raises:
        DetectorError: Ray is not installed, or bad shard keys.
    """
    try:
        import ray
    except ImportError as err:
        raise DetectorError("python -m detector.infer.ray needs Ray: pip install -e "
                            '".[cluster]"') from err
    from detector.infer.api import reduce_run, scenes_of, shard_of

    shards, _ = shard_of(cfg)
    scenes_of(cfg)  # a bad source fails here, once, not in every task
    opts = cfg.ray
    if not ray.is_initialized():
        ray.init(address=opts.address,
                 **({"num_cpus": opts.num_cpus} if opts.num_cpus and not opts.address else {}),
                 include_dashboard=False, log_to_driver=True)
    task = ray.remote(run_shard).options(num_cpus=float(opts.cpus_per_task),
                                          num_gpus=float(opts.num_gpus),
                                          max_retries=int(opts.max_retries))
    plain = OmegaConf.to_container(cfg, resolve=True)
    plain.pop("ray")
    pending = {task.remote(plain, shard): shard for shard in range(shards)}
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        shard = pending.pop(done[0])
        try:
            log.info("shard %d of %d finished: %s", shard, shards, ray.get(done[0]))
        except ray.exceptions.RayError as err:  # its scenes show up as missing below
            log.error("shard %d of %d died: %s", shard, shards, str(err).splitlines()[0])
    return reduce_run(cfg)


@hydra.main(config_path=CONFIG_PATH, config_name="infer_ray", version_base=HYDRA_VERSION_BASE)
def main(cfg: DictConfig) -> None:
    def body() -> None:
        counts = run_on_ray(cfg)
        if counts["failed"] or counts["missing"]:
            raise SystemExit(1)

    guarded(body)


if __name__ == "__main__":
    main()
