"""Configuration: YAML files -> validated `DesiredState`. See `loader` (reading) and `schema` (file shape)."""

from reconciler.config.desired import DesiredInstallation, DesiredPartner, DesiredState
from reconciler.config.loader import (
    CONFIG_FILE,
    DEFAULT_ENVIRONMENT,
    ENVIRONMENTS_DIR,
    LoadedConfig,
    environment_names,
    load_config,
)

__all__ = [
    "CONFIG_FILE",
    "DEFAULT_ENVIRONMENT",
    "ENVIRONMENTS_DIR",
    "DesiredInstallation",
    "DesiredPartner",
    "DesiredState",
    "LoadedConfig",
    "environment_names",
    "load_config",
]
