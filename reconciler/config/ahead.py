"""Parsing ahead on a second core: a forked worker parses the tail of a file list while this process works.

Owns: one worker process per load (POSIX `fork`), the split of the list between the two (each claims files from
its own end of the list, so whichever is faster takes more), and the hand-over of the worker's results, by path
and checked against the bytes read here (SHA-256). Only plain parsed data crosses (`marshal`); a file the worker
could not parse is parsed again here, where its error is reported as usual, so results never depend on the worker.

The claims live in two shared 8-byte slots, each written by one side only: `head` (this process has claimed
every index below it) and `tail` (the worker has claimed every index from it on). The worker claims `tail - 1`
while that is not below `head`; this process claims an index below `tail`. When both race for the last file,
both parse it and this process's result is the one used: correct either way, and at most one file parsed twice.
Every limit of the loader holds here too: each file is read with `read_config_bytes` (a file over the size limit
is never read, let alone parsed: it is left to this process, which reports it) and parsed with `load_yaml_text`
(its YAML limits). Must not: validate, resolve references, or report anything: the loader does all of that on
what it gets.
Used only where it pays and is safe: at least `MIN_FILES` files, two usable CPUs, and no other thread in this
process (a forked child inherits no threads, and must not meet a lock one of them held).
"""

from __future__ import annotations

import gc
import hashlib
import marshal
import mmap
import os
import struct
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.config.includes import (
    CONFIG_FILE,
    FileTooLarge,
    TooManyMatches,
    glob_matches,
    include_patterns,
    read_config_bytes,
)
from reconciler.yamlio import YamlSyntaxError, load_yaml_text

if TYPE_CHECKING:
    from reconciler.config.cache import ParseCache

from reconciler.forking import cpus as _cpus
from reconciler.forking import reap as _reap

__all__ = ["MIN_FILES", "MISSING", "ParsedAhead", "parse_ahead", "parse_includes_ahead"]

MIN_FILES = 64  # below this, forking costs more than it saves
MISSING = object()  # what `ParsedAhead.get` answers for a file this process parses itself
_SLOT = struct.Struct("q")
_HEAD, _TAIL = 0, 8  # offsets of the two slots in the shared page


def _digest(raw: bytes) -> bytes:
    return hashlib.sha256(raw).digest()


class ParsedAhead:
    """Files parsed by the worker, handed over by content; the list's head is left to this process."""

    def __init__(self, pid: int, reader: int, paths: Sequence[Path], shared: mmap.mmap) -> None:
        self._pid = pid
        self._reader = reader
        self._index = {path: i for i, path in enumerate(paths)}
        self._shared = shared
        self._results: dict[str, tuple[bytes, Any]] | None = None

    def get(self, path: Path, raw: bytes) -> Any:
        """The parsed data of `raw` (the bytes of `path`), or `MISSING` when this process should parse it."""
        index = self._index.get(path)
        if index is None:
            return MISSING
        if self._results is None:
            if index < _SLOT.unpack_from(self._shared, _TAIL)[0]:  # not the worker's: claim it and all before it
                head = _SLOT.unpack_from(self._shared, _HEAD)[0]
                _SLOT.pack_into(self._shared, _HEAD, max(head, index + 1))
                return MISSING
            self._collect()
        assert self._results is not None
        found = self._results.get(str(path))
        if found is None or found[0] != _digest(raw):  # not parsed there, or the file changed in between
            return MISSING
        return found[1]

    def close(self) -> None:
        """Reap the worker (it is stopped first when its results were never needed)."""
        if self._pid:
            if self._results is None:
                _stop(self._pid)
                self._results = {}
            _reap(self._pid)
            os.close(self._reader)
            self._shared.close()
            self._pid = 0

    def _collect(self) -> None:
        chunks = []
        try:
            while chunk := os.read(self._reader, 1 << 20):
                chunks.append(chunk)
            results = marshal.loads(b"".join(chunks))  # noqa: S302 - written by our own forked child
            self._results = results if isinstance(results, dict) else {}
        except (OSError, EOFError, ValueError, TypeError):
            self._results = {}  # a worker that died: everything is parsed here instead
        self.close()


def parse_includes_ahead(
    config_dir: Path, cache: ParseCache | None = None, environ: Mapping[str, str] | None = None
) -> ParsedAhead | None:
    """A worker on another core parsing the files the root file includes, for `load_config(ahead=...)` (None
    where that does not pay, or with RECONCILER_PARSE_AHEAD=0 in `environ`). The caller closes it. Nothing is
    reported here: the loader reports every problem. Light on purpose (YAML only, no schema): the CLI starts it
    before importing the rest, so the worker parses while this process imports."""
    if (environ or {}).get("RECONCILER_PARSE_AHEAD", "1") == "0":
        return None
    root_path = Path(config_dir) / CONFIG_FILE
    try:
        raw = read_config_bytes(root_path)
        text = raw.decode("utf-8-sig")
        data = cache.load(raw, lambda: load_yaml_text(text)) if cache else load_yaml_text(text)
        if not isinstance(data, dict):
            return None
        paths = [path for _, pattern in include_patterns(data) for path in glob_matches(root_path.parent, pattern)]
    except (OSError, FileTooLarge, UnicodeDecodeError, YamlSyntaxError, TooManyMatches):
        return None

    def parse(raw: bytes) -> tuple[Any, bool]:  # the data, and whether it was parsed (not found in the cache)
        text = raw.decode("utf-8-sig")
        if cache is None:
            return load_yaml_text(text), True
        parsed: list[bool] = []

        def load() -> Any:  # called by the cache on a miss
            parsed.append(True)
            return load_yaml_text(text)

        data = cache.load(raw, load)
        return data, bool(parsed)

    return parse_ahead(paths, parse)


def parse_ahead(paths: Sequence[Path], parse: Callable[[bytes], Any]) -> ParsedAhead | None:
    """Start a worker parsing `paths` from the end with `parse(raw)`; None where that would not pay or is unsafe."""
    if len(paths) < MIN_FILES or not hasattr(os, "fork") or threading.active_count() > 1 or _cpus() < 2:
        return None
    shared = mmap.mmap(-1, mmap.PAGESIZE)
    _SLOT.pack_into(shared, _HEAD, 0)
    _SLOT.pack_into(shared, _TAIL, len(paths))
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the worker: never returns
        os.close(reader)
        _work(paths, parse, shared, writer)
    os.close(writer)
    return ParsedAhead(pid, reader, paths, shared)


def _work(paths: Sequence[Path], parse: Callable[[bytes], Any], shared: mmap.mmap, writer: int) -> None:
    status = 1
    try:
        gc.disable()  # a short life that frees nothing in cycles
        results: dict[str, tuple[bytes, Any]] = {}
        tail = len(paths)
        while tail - 1 >= _SLOT.unpack_from(shared, _HEAD)[0]:
            tail -= 1
            _SLOT.pack_into(shared, _TAIL, tail)
            try:  # the limits the loader applies (size here, the YAML ones in the parse): a file over one is
                raw = read_config_bytes(paths[tail])  # left to this process, which reports it without parsing
                results[str(paths[tail])] = (_digest(raw), parse(raw))
            except Exception:  # noqa: BLE001, S112 - the error is reported when this process reads the file again
                continue
        blob = memoryview(_plain(results))
        while blob:
            blob = blob[os.write(writer, blob) :]
        status = 0
    finally:
        os._exit(status)


def _plain(results: dict[str, tuple[bytes, Any]]) -> bytes:
    """The results as marshal bytes, without any entry marshal cannot hold (e.g. a date: parsed here again)."""
    try:
        return marshal.dumps(results)
    except ValueError:
        kept = {}
        for path, entry in results.items():
            try:
                marshal.dumps(entry)
            except ValueError:
                continue
            kept[path] = entry
        return marshal.dumps(kept)


def _stop(pid: int) -> None:
    import signal

    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
