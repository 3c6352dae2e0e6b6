"""``python -m detector.adapt scenes=DIR [weights=BASE.pt] [minutes=15] [out=DIR]`` (Hydra)."""

import time

_STARTED = time.monotonic()  # minutes= bounds the whole command, imports and start-up included

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from detector.config import CONFIG_PATH, HYDRA_VERSION_BASE  # noqa: E402
from detector.errors import guarded  # noqa: E402


@hydra.main(config_path=CONFIG_PATH, config_name="adapt", version_base=HYDRA_VERSION_BASE)
def main(cfg: DictConfig) -> None:
    def body() -> None:
        from detector.adapt.api import adapt

        result = adapt(cfg, started=_STARTED)
        info = result.card.adapted_from
        print(f"held-out folds ({len(info['scenes'])} scenes, "
              f"{info['cross_fitting']['folds']} folds; each scene scored by a model and a "
              "calibration fitted without it):")
        print(result.table)
        print(result.reason)
        minutes = (time.monotonic() - _STARTED) / 60
        print(f"bundle: {result.weights} (+ {result.weights.with_suffix('.json').name}), "
              f"{minutes:.1f} of {info['budget_minutes']:g} minutes")
        if result.recommended:
            print(f"count with it: python -m detector.infer source=... weights={result.weights}")
        else:
            print("NOT RECOMMENDED: this bundle is worse than the base on the held-out folds "
                  "(written because force=true); count with the base instead")

    guarded(body)


if __name__ == "__main__":
    main()
