import hydra
from omegaconf import DictConfig

from detector.config import CONFIG_PATH, HYDRA_VERSION_BASE


@hydra.main(config_path=CONFIG_PATH, config_name="synth", version_base=HYDRA_VERSION_BASE)
def main(cfg: DictConfig) -> None:
    print(cfg)


main()
