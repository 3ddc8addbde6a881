"""Configuration: YAML files -> validated `DesiredState`. See `loader` (reading) and `schema` (file shape)."""

from reconciler.config.desired import DesiredInstallation, DesiredPartner, DesiredState
from reconciler.config.loader import CONFIG_FILE, LoadedConfig, load_config

__all__ = ["CONFIG_FILE", "DesiredInstallation", "DesiredPartner", "DesiredState", "LoadedConfig", "load_config"]
