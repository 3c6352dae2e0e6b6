"""``python -m detector.synth out=DIR n_scenes=N seed=S``: write synthetic scenes + labels."""

from collections import Counter

import hydra
from omegaconf import DictConfig

from detector.config import CONFIG_PATH, HYDRA_VERSION_BASE
from detector.errors import DetectorError, exit_with
from detector.labels import read_geojson


@hydra.main(config_path=CONFIG_PATH, config_name="synth", version_base=HYDRA_VERSION_BASE)
def main(cfg: DictConfig) -> None:
    """Write the scenes and print where they are and what they hold."""
    from detector.synth import write_scenes

    try:
        paths = write_scenes(cfg)
    except DetectorError as error:
        exit_with(error)
    counts: Counter[str] = Counter()
    for path in paths:
        labels, _ = read_geojson(path.with_suffix(".geojson"))
        counts.update(p.cls for p in labels)
    summary = ", ".join(f"{k}={counts[k]}" for k in sorted(counts)) or "no vehicles"
    print(f"wrote {len(paths)} scene(s) to {paths[0].parent if paths else cfg.out}: {summary}")


if __name__ == "__main__":
    main()
