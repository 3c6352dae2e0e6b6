"""``python -m detector.adapt scenes=DIR [weights=BASE.pt] [minutes=15] [out=DIR]`` (Hydra)."""

import hydra
from omegaconf import DictConfig

from detector.config import CONFIG_PATH, HYDRA_VERSION_BASE
from detector.errors import guarded


@hydra.main(config_path=CONFIG_PATH, config_name="adapt", version_base=HYDRA_VERSION_BASE)
def main(cfg: DictConfig) -> None:
    def body() -> None:
        from detector.adapt.api import adapt

        result = adapt(cfg)
        info = result.card.adapted_from
        print(f"held-out folds ({len(info['scenes'])} scenes, "
              f"{info['cross_fitting']['folds']} folds; each scene scored by a model and a "
              "calibration fitted without it):")
        print(result.table)
        print(f"bundle: {result.weights} (+ {result.weights.with_suffix('.json').name}), "
              f"{info['minutes']:.1f} of {info['budget_minutes']:g} minutes")
        print(f"count with it: python -m detector.infer source=... weights={result.weights}")

    guarded(body)


if __name__ == "__main__":
    main()
