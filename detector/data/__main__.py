"""``python -m detector.data data=geojson data.root=DIR out=OUT task=obb``."""

import hydra
from omegaconf import DictConfig

from detector.config import CONFIG_PATH, HYDRA_VERSION_BASE
from detector.data.build import build_dataset
from detector.errors import guarded
from detector.validation import check_config


@hydra.main(config_path=CONFIG_PATH, config_name="dataset", version_base=HYDRA_VERSION_BASE)
def main(cfg: DictConfig) -> None:
    """Build the dataset described by ``cfg.data`` into ``cfg.out``."""
    def body() -> None:
        check_config(cfg, "dataset")
        build_dataset(cfg.data, cfg.out, cfg.task)

    guarded(body)


if __name__ == "__main__":
    main()
