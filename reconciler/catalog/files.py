"""Reading the connector catalog shipped in this package: `connectors/*.yaml` into a `Catalog`, once per process.

Owns: the YAML reading and the checks a model cannot make (implied scopes exist). Must not: read user
configuration, state, the network or the clock.
"""

from __future__ import annotations

import functools
from importlib import resources

import yaml
from pydantic import ValidationError

from reconciler.catalog import Catalog, Connector
from reconciler.errors import ReconcilerError

__all__ = ["CatalogError", "load_catalog"]


class CatalogError(ReconcilerError):
    """A connector definition shipped in the package is invalid (a packaging bug, reported plainly)."""


@functools.lru_cache(maxsize=1)
def load_catalog() -> Catalog:
    """Read every `connectors/*.yaml` file in this package into a `Catalog`."""
    connectors: dict[str, Connector] = {}
    folder = resources.files(__package__).joinpath("connectors")
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".yaml"):
            continue
        data = yaml.load(entry.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506 - a safe loader
        try:
            connector = Connector.model_validate(data)
        except ValidationError as exc:
            raise CatalogError(f"connector definition {entry.name} is invalid: {exc.errors()[0]['msg']}") from None
        for scope, spec in connector.scopes.items():
            for implied in spec.implies:
                if implied not in connector.scopes:
                    raise CatalogError(f"connector {connector.name}: scope {scope} implies unknown {implied}")
        connectors[connector.name] = connector
    return Catalog(connectors=connectors)
