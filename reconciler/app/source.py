"""Where a command's configuration comes from: one interface, `ConfigSource.load()`, and the speed machinery as
wrappers around the plain source.

The plain source calls `load_config`. The parse cache, the parse-ahead worker (a second core parsing included
files) and the pause of the cyclic garbage collector each wrap a source and give exactly what it gives, sooner;
`config_source` composes them for a workspace. The core (loader, planner, backends) knows none of them beyond the
loader's two optional hand-ins (`cache=`, `ahead=`), passed down as `Assist`.
Owns: that composition and the GC pause. Must not: change what is loaded, print, or know about click.
"""

from __future__ import annotations

import dataclasses
import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from reconciler.app.workspace import Workspace

if TYPE_CHECKING:  # loading itself (pydantic, the schema) is imported only when a source loads
    from reconciler.config import LoadedConfig
    from reconciler.config.ahead import ParsedAhead
    from reconciler.config.cache import ParseCache

__all__ = ["Assist", "ConfigSource", "config_source", "paused_gc", "start_parse_ahead"]


@dataclass(frozen=True)
class Assist:
    """Files a load may take already parsed instead of parsing them: from the parse cache, from the worker."""

    cache: ParseCache | None = None
    ahead: ParsedAhead | None = None


NO_ASSIST = Assist()


class ConfigSource(Protocol):
    def load(self, assist: Assist = NO_ASSIST) -> LoadedConfig:
        """The workspace's configuration, loaded and validated (`ConfigError` listing every problem)."""


@dataclass(frozen=True)
class PlainSource:
    """`load_config` for the workspace. `unchecked_secrets`: for a command that never uses a secret's value."""

    ws: Workspace
    unchecked_secrets: bool = False

    def load(self, assist: Assist = NO_ASSIST) -> LoadedConfig:
        from reconciler.config import load_config

        ws = self.ws
        return load_config(
            ws.config_dir,
            environ=ws.environ,
            today=ws.clock().date(),
            environment=ws.environment,
            cache=assist.cache,
            ahead=assist.ahead,
            unchecked_secrets=self.unchecked_secrets,
        )


@dataclass(frozen=True)
class CachedSource:
    """Unchanged files are not parsed again (see `reconciler.config.cache`)."""

    inner: ConfigSource
    cache: ParseCache

    def load(self, assist: Assist = NO_ASSIST) -> LoadedConfig:
        return self.inner.load(dataclasses.replace(assist, cache=self.cache))


@dataclass(frozen=True)
class ParsedAheadSource:
    """Included files parsed on a second core (by `started`, a worker the caller started earlier, else by one
    started here) while `meanwhile()` runs; the worker is closed when the load returns."""

    inner: ConfigSource
    ws: Workspace
    started: ParsedAhead | None = None
    meanwhile: Callable[[], object] | None = None

    def load(self, assist: Assist = NO_ASSIST) -> LoadedConfig:
        ahead = self.started or start_parse_ahead(self.ws, assist.cache)
        try:
            if ahead is not None and self.meanwhile is not None:
                self.meanwhile()
            return self.inner.load(dataclasses.replace(assist, ahead=ahead))
        finally:
            if ahead is not None:
                ahead.close()


@dataclass(frozen=True)
class GcPausedSource:
    """Loading with the cyclic garbage collector paused (see `paused_gc`)."""

    inner: ConfigSource

    def load(self, assist: Assist = NO_ASSIST) -> LoadedConfig:
        with paused_gc():
            return self.inner.load(assist)


@contextmanager
def paused_gc() -> Iterator[None]:
    """Loading and planning allocate about a million objects and free none of them in cycles: the cyclic garbage
    collector would only rescan the growing heap, again and again (a third of a 10,000-installation plan), so it
    is paused for the phase."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def start_parse_ahead(ws: Workspace, cache: ParseCache | None = None) -> ParsedAhead | None:
    """A worker parsing the included files (None where it does not pay); light: the CLI starts it before it
    imports the rest. The caller closes it (or hands it to `config_source`, which does)."""
    from reconciler.config.ahead import parse_includes_ahead

    return parse_includes_ahead(ws.config_dir, cache if cache is not None else parse_cache(ws), ws.environ)


def parse_cache(ws: Workspace) -> ParseCache | None:
    """The workspace's parse cache (None: off)."""
    from reconciler.config.cache import parse_cache as open_cache

    return open_cache(ws.environ) if ws.cache else None


def config_source(
    ws: Workspace,
    *,
    unchecked_secrets: bool = False,
    ahead: ParsedAhead | None = None,
    meanwhile: Callable[[], object] | None = None,
    parse_ahead: bool = True,
) -> ConfigSource:
    """The workspace's configuration, with every speed wrapper that applies (`ahead`, `meanwhile`: see
    `ParsedAheadSource`; `parse_ahead` False: no worker, for a command that parses a single file)."""
    source: ConfigSource = PlainSource(ws, unchecked_secrets)
    if parse_ahead:
        source = ParsedAheadSource(source, ws, ahead, meanwhile)
    cache = parse_cache(ws)
    if cache is not None:
        source = CachedSource(source, cache)
    return GcPausedSource(source)
