"""Where a command works, and the state it works on: the workspace, the backend factory, and reading state
under the lock.

Owns: the `Workspace` (configuration directory, environment variables, environment, clock, cache switch, HTTP
timeout), opening the backend the root configuration names, and "no state yet, else take the lock and read
again". Must not: print, prompt, read the clock or the environment itself, or know about click.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler.errors import ReconcilerError, UsageError

if TYPE_CHECKING:  # light on purpose: the CLI builds a workspace before it imports the configuration's models
    from reconciler.config.schema import RootFile
    from reconciler.state.backend import StateBackend
    from reconciler.state.model import StateDocument

__all__ = ["Workspace", "check_backend", "key_directory", "locked_state", "open_backend", "read_root"]

DEFAULT_ENVIRONMENT = "default"


@dataclass(frozen=True)
class Workspace:
    """Where a command works: the configuration directory, the environment variables it may read, the
    environment (None: the base configuration), and the clock."""

    config_dir: Path
    environ: Mapping[str, str]
    environment: str | None = None
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)
    cache: bool = False  # the parse cache (on for the CLI unless --no-cache; off by default for library calls)
    http_timeout: float = 30.0  # seconds for each request to a provider (connect, read, write)
    refresh_catalog: bool = False  # fetch the platform's connector list even when the cached one is fresh

    @property
    def environment_name(self) -> str:
        return self.environment or DEFAULT_ENVIRONMENT


def read_root(ws: Workspace) -> RootFile:
    """The root configuration file (with the environment's overlay), without the included files."""
    from reconciler.config.root import load_root

    return load_root(ws.config_dir, environment=ws.environment)


def open_backend(ws: Workspace, root: RootFile) -> StateBackend:
    """The state backend the configuration names, for the workspace's environment."""
    from reconciler.config.located import display_path
    from reconciler.config.schema import LocalBackendSpec
    from reconciler.state.local import LocalBackend

    spec = root.backend
    if isinstance(spec, LocalBackendSpec):
        directory = ws.config_dir / spec.path
        return LocalBackend(directory, ws.environment_name, display_dir=display_path(directory))
    from reconciler.state.postgres import PostgresBackend

    dsn, source = _dsn(ws, root)
    return PostgresBackend(dsn, ws.environment_name, source=source)


def check_backend(ws: Workspace, root: RootFile) -> None:
    """Offline: a PostgreSQL DSN that is available must parse (`validate` runs where the DSN's variable may not be
    set, and says nothing about it then)."""
    from reconciler.config.schema import LocalBackendSpec

    if isinstance(root.backend, LocalBackendSpec):
        return
    from reconciler.state.postgres import PostgresBackend

    try:
        dsn, source = _dsn(ws, root)
    except ReconcilerError:
        return
    PostgresBackend(dsn, ws.environment_name, source=source)


def _dsn(ws: Workspace, root: RootFile) -> tuple[str, str]:
    """The shared backend's DSN, resolved, and where it was named (for messages)."""
    from reconciler.config.loader import CONFIG_FILE, display_path, resolve_reference
    from reconciler.config.schema import LocalBackendSpec

    assert not isinstance(root.backend, LocalBackendSpec)
    root_file = ws.config_dir / CONFIG_FILE
    dsn = resolve_reference(
        root.backend.dsn, config_dir=ws.config_dir, environ=ws.environ, where=root_file, key=("backend", "dsn")
    )
    return dsn, f"{display_path(root_file)}: backend.dsn"


def key_directory(ws: Workspace, root: RootFile) -> Path | None:
    """Where a generated state key may live: beside local state only (a shared backend needs an explicit key)."""
    from reconciler.config.schema import LocalBackendSpec

    return ws.config_dir / root.backend.path if isinstance(root.backend, LocalBackendSpec) else None


@contextmanager
def locked_state(backend: StateBackend, operation: str, *, timeout: float, missing: str) -> Iterator[StateDocument]:
    """The state, read again under the lock for `operation`; a usage error `missing` when there is none. Checked
    before the lock too, which would create the state directory."""
    if backend.read() is None:
        raise UsageError(missing)
    with backend.lock(operation, timeout=timeout):
        doc = backend.read()
        if doc is None:
            raise UsageError(missing)
        yield doc
