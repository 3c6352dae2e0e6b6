"""``python -m detector.infer source=PATH [weights=BUNDLE.pt] [out=DIR]`` (Hydra)."""

import hydra
from omegaconf import DictConfig

from detector.config import CONFIG_PATH, HYDRA_VERSION_BASE
from detector.errors import DetectorError, guarded
from detector.infer.api import run_config
from detector.infer.outputs import format_table


@hydra.main(config_path=CONFIG_PATH, config_name="infer", version_base=HYDRA_VERSION_BASE)
def main(cfg: DictConfig) -> None:
    def body() -> None:
        results = run_config(cfg)
        classes = list(results[0].counts.get("classes", {})) if results else []
        classes = classes or next((list(r.counts["classes"]) for r in results if r.counts), [])
        print(format_table(results, classes))
        for res in results:
            for kind, path in res.outputs.items():
                print(f"  {kind}: {path}")
        failed = [r for r in results if not r.ok]
        if failed and len(failed) == len(results):
            raise DetectorError(failed[0].error if len(failed) == 1 else
                                f"all {len(failed)} scenes failed; see the table above")
        if failed:
            raise SystemExit(1)

    guarded(body)


if __name__ == "__main__":
    main()
