"""``python -m detector.train``: Hydra entry point over :func:`detector.train.train`."""

import hydra
from omegaconf import DictConfig

from detector.config import CONFIG_PATH, HYDRA_VERSION_BASE
from detector.errors import guarded
from detector.train.train import train


@hydra.main(config_path=CONFIG_PATH, config_name="train", version_base=HYDRA_VERSION_BASE)
def main(cfg: DictConfig) -> None:
    """Train, calibrate and write the bundle; print where it is."""
    guarded(lambda: print(f"bundle: {train(cfg)}"))


if __name__ == "__main__":
    main()
