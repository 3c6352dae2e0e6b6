"""``python -m detector.monitor source=SITE_DIR [aoi=station.geojson] [weights=...] [out=DIR]``
(no source: a generated demo site with a surge at the end)."""

import hydra
from omegaconf import DictConfig

from detector.config import CONFIG_PATH, HYDRA_VERSION_BASE
from detector.errors import guarded


def _monitor_and_print(cfg: DictConfig) -> None:
    from detector.monitor.api import dry_run, monitor
    from detector.monitor.outputs import format_table

    if cfg.get("dry_run"):
        print(dry_run(cfg))
        return
    result = monitor(cfg)
    print(format_table(result))
    if result.reused:
        print(f"reused the counts of {result.reused} scene(s) from {cfg.out}/scenes")
    if result.demo_truth is not None:
        print(f"demo site: {result.site} (true totals in the AOI: {result.demo_truth})")
    for kind, path in result.outputs.items():
        print(f"  {kind}: {path}")


@hydra.main(config_path=CONFIG_PATH, config_name="monitor", version_base=HYDRA_VERSION_BASE)
def main(cfg: DictConfig) -> None:
    """Monitor a site and print the table; bad input exits 2 with one line."""
    guarded(lambda: _monitor_and_print(cfg))


if __name__ == "__main__":
    main()
