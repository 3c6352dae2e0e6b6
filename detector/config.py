"""Compose Hydra configs from the installed ``detector.conf`` package (for APIs and tests)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

from hydra import compose as hydra_compose
from hydra import initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

CONFIG_MODULE = "detector.conf"
# Entry points use ``@hydra.main(config_path=CONFIG_PATH, ...)``.
CONFIG_PATH = "pkg://detector.conf"
HYDRA_VERSION_BASE = "1.3"


def compose(config_name: str, overrides: Sequence[str] = (),
            with_hydra: bool = False) -> DictConfig:
    """Compose ``conf/<config_name>.yaml`` with Hydra overrides, outside ``@hydra.main``.

    Args:
        config_name: primary config, e.g. ``"train"`` or ``"infer"``.
        overrides: Hydra override strings such as ``"debug=smoke"``.

    Returns:
        The composed config; ``with_hydra`` keeps Hydra's own ``hydra`` node in it.
    """
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    with initialize_config_module(config_module=CONFIG_MODULE, version_base=HYDRA_VERSION_BASE):
        return hydra_compose(config_name=config_name, overrides=list(overrides),
                             return_hydra_config=with_hydra)


def allow_launcher_schemas() -> None:
    """Silence Hydra's note that ``conf/hydra/launcher/*.yaml`` are checked against the
    launcher plugins' schemas of the same name.

    The shared names keep the plugins' own commands (``hydra/launcher=joblib``) working
    with our settings, and the check catches typos; it works throughout Hydra 1.3.
    """
    warnings.filterwarnings("ignore", message=r"(?s).*hydra/launcher/.*is validated against "
                            "ConfigStore schema with the same name")


def register_help() -> None:
    """``${detector_help:NAME}``: the ``--help`` text of conf/NAME.yaml (conf/hydra/*.yaml)."""
    from detector.cli_help import help_template

    OmegaConf.register_new_resolver("detector_help", help_template, replace=True)


register_help()
# Here, not in the entry points: launcher worker processes (joblib, submitit, Ray) compose
# their job's config without running ``__main__``, but import this module first.
allow_launcher_schemas()
