"""``python -m detector.infer source=PATH [weights=BUNDLE.pt] [out=DIR]`` (Hydra).

Sharded over many processes, GPUs or cluster nodes with Hydra multirun, e.g.
``python -m detector.infer -m source=DIR out=OUT shards=3 shard=0,1,2 hydra/launcher=joblib``;
``reduce_only=true`` (same source and out) rebuilds the summary of a partial run.
"""

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from detector.config import CONFIG_PATH, HYDRA_VERSION_BASE
from detector.errors import DetectorError, guarded
from detector.infer.api import reduce_run, run_config
from detector.infer.outputs import format_table


@hydra.main(config_path=CONFIG_PATH, config_name="infer", version_base=HYDRA_VERSION_BASE)
def main(cfg: DictConfig) -> None:
    def body() -> None:
        if cfg.get("reduce_only"):
            counts = reduce_run(cfg)
            if counts["failed"] or counts["missing"]:
                raise SystemExit(1)
            return
        results = run_config(cfg)
        if cfg.get("dry_run"):
            return
        classes = next((list(r.counts["classes"]) for r in results if r.counts), [])
        print(format_table(results, classes))
        for res in results:
            for kind, path in res.outputs.items():
                print(f"  {kind}: {path}")
        failed = [r for r in results if not r.ok]
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            return  # failed scenes are in the summary the multirun ends with
        if failed and len(failed) == len(results):
            raise DetectorError(failed[0].error if len(failed) == 1 else
                                f"all {len(failed)} scenes failed; see the table above")
        if failed:
            raise SystemExit(1)

    guarded(body)


if __name__ == "__main__":
    main()
