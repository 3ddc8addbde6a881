"""Where a command's configuration comes from: one interface, `ConfigSource.load()`, and the speed machinery as
wrappers around the plain source.

The plain source calls `load_config`. The parse-ahead worker (a second core parsing included files), the parse
cache and the pause of the cyclic garbage collector each wrap a source and give exactly what it gives, sooner;
`config_source` composes them for a workspace. The core knows none of them: the loader parses each file through
a `Parser` (reconciler.config.documents), and the wrappers here hand it one that answers from the worker or the
cache before parsing.
Owns: that composition, the parsers the wrappers hand in, and the GC pause. Must not: change what is loaded,
print, or know about click.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from reconciler.app.workspace import Workspace

if TYPE_CHECKING:  # loading itself (pydantic, the schema) is imported only when a source loads
    from reconciler.config import LoadedConfig
    from reconciler.config.ahead import ParsedAhead
    from reconciler.config.cache import ParseCache
    from reconciler.config.documents import Parser

__all__ = ["ConfigSource", "config_source", "paused_gc", "start_parse_ahead"]


class ConfigSource(Protocol):
    def load(self, parser: Parser | None = None) -> LoadedConfig:
        """The workspace's configuration, loaded and validated (`ConfigError` listing every problem); `parser`:
        handed in by an outer wrapper (None: the plain one)."""


@dataclass(frozen=True)
class PlainSource:
    """`load_config` for the workspace. `unchecked_secrets`: for a command that never uses a secret's value."""

    ws: Workspace
    unchecked_secrets: bool = False

    def load(self, parser: Parser | None = None) -> LoadedConfig:
        from reconciler.config import load_config
        from reconciler.config.documents import PLAIN

        ws = self.ws
        return load_config(
            ws.config_dir,
            environ=ws.environ,
            today=ws.clock().date(),
            environment=ws.environment,
            parser=parser or PLAIN,
            unchecked_secrets=self.unchecked_secrets,
        )


@dataclass(frozen=True)
class CachedSource:
    """Unchanged files are not parsed again (see `reconciler.config.cache`)."""

    inner: ConfigSource
    cache: ParseCache

    def load(self, parser: Parser | None = None) -> LoadedConfig:
        return self.inner.load(CachedParser(self.cache, _plain(parser)))


@dataclass(frozen=True)
class CachedParser:
    """The cache's entry for a file's bytes, else `inner`'s parse, kept once the whole load succeeded."""

    cache: ParseCache
    inner: Parser

    def parse(self, path: Path, raw: bytes, text: str) -> Any:
        return self.cache.load(raw, lambda: self.inner.parse(path, raw, text))

    def done(self) -> None:
        self.inner.done()
        self.cache.commit()


@dataclass(frozen=True)
class ParsedAheadSource:
    """Included files parsed on a second core (by `started`, a worker the caller started earlier, else by one
    started here, consulting `cache`) while `meanwhile()` runs; the worker is closed when the load returns."""

    inner: ConfigSource
    ws: Workspace
    cache: ParseCache | None = None
    started: ParsedAhead | None = None
    meanwhile: Callable[[], object] | None = None

    def load(self, parser: Parser | None = None) -> LoadedConfig:
        ahead = self.started or start_parse_ahead(self.ws, self.cache)
        if ahead is None:
            return self.inner.load(parser)
        try:
            if self.meanwhile is not None:
                self.meanwhile()
            return self.inner.load(AheadParser(ahead, _plain(parser)))
        finally:
            ahead.close()


@dataclass(frozen=True)
class AheadParser:
    """The worker's parse of a file (checked against the bytes read here), else `inner`'s."""

    ahead: ParsedAhead
    inner: Parser

    def parse(self, path: Path, raw: bytes, text: str) -> Any:
        from reconciler.config.ahead import MISSING

        found = self.ahead.get(path, raw)
        return self.inner.parse(path, raw, text) if found is MISSING else found[0]

    def done(self) -> None:
        self.inner.done()


@dataclass(frozen=True)
class GcPausedSource:
    """Loading with the cyclic garbage collector paused (see `paused_gc`)."""

    inner: ConfigSource

    def load(self, parser: Parser | None = None) -> LoadedConfig:
        with paused_gc():
            return self.inner.load(parser)


def _plain(parser: Parser | None) -> Parser:
    from reconciler.config.documents import PLAIN

    return parser or PLAIN


@contextmanager
def paused_gc() -> Iterator[None]:
    """Loading and planning allocate about a million objects and free none of them in cycles: the cyclic garbage
    collector would only rescan the growing heap, again and again (a third of a 10,000-installation plan), so it
    is paused for the phase. When it resumes, what the phase made counts as old (moved to the oldest generation
    without a pass over it, by freezing and unfreezing): otherwise the first allocation after the phase would scan
    all of it as young objects."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.freeze()
            gc.unfreeze()
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
    `ParsedAheadSource`; `parse_ahead` False: no worker). Each file is looked up in the cache first, then taken
    from the worker, else parsed here; the cache keeps what the other two parsed."""
    cache = parse_cache(ws)
    source: ConfigSource = PlainSource(ws, unchecked_secrets)
    if cache is not None:
        source = CachedSource(source, cache)
    if parse_ahead:
        source = ParsedAheadSource(source, ws, cache, ahead, meanwhile)
    return GcPausedSource(source)
