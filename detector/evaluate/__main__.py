"""``python -m detector.evaluate [source=DIR] [weights=BUNDLE.pt] [out=DIR]`` (no source: the
built-in demo scene and its labels)."""

import hydra
from omegaconf import DictConfig

from detector.config import CONFIG_PATH, HYDRA_VERSION_BASE
from detector.errors import guarded


def _evaluate_and_print(cfg: DictConfig) -> None:
    from detector.evaluate.api import evaluate
    from detector.evaluate.report import summary_lines

    report = evaluate(cfg)
    print("\n".join(summary_lines(report)))
    print(f"report: {cfg.out}/report.md")


@hydra.main(config_path=CONFIG_PATH, config_name="evaluate", version_base=HYDRA_VERSION_BASE)
def main(cfg: DictConfig) -> None:
    """Evaluate and print the headline figures; bad input exits 2 with one line."""
    # guarded runs inside Hydra so a DetectorError becomes `error: ...` rather than
    # Hydra's traceback report.
    guarded(lambda: _evaluate_and_print(cfg))


if __name__ == "__main__":
    main()
