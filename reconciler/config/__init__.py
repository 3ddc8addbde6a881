"""Configuration: YAML files -> validated `DesiredState`. `loader` orders a load; `schema` is the file shape;
`documents` (files, includes), `overlay` (environments), `translate` (schema errors), `values` (references) and
`partners`/`installations` (the catalog rules) each own one concern; `located` says where a problem is.

The names below load on first use, so that the light submodules (`cache`, `includes`, `ahead`) import without
the schema and pydantic: the plan memo's fast path (`reconciler.memo`) needs only those.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_HOME = {"DesiredInstallation": "desired", "DesiredPartner": "desired", "DesiredState": "desired"}


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{_HOME.get(name, 'loader')}")
    return getattr(module, name)
