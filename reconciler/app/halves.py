"""Work over a long list on two cores: a forked worker takes chunks from the list's end while this process takes
them from its start, until they meet (`in_halves`). `status` opens its sealed credential records so.

Owns: the worker (POSIX `fork`), the claims (two shared 8-byte slots, each written by one side only: `head`, this
process has claimed every index below it; `tail`, the worker has claimed every index from it on; a chunk both
claim is done by both and this process's result is used), and the hand-over of the worker's results (`marshal`:
plain data only, encoded by the caller). An item the worker has no result for (it raised, or the worker died) is
done here, where its error is raised or returned as usual, so results never depend on the worker.
Used only where it pays and is safe: at least `MIN_ITEMS` items, two usable CPUs, and no other thread in this
process (a forked child inherits no threads, and must not meet a lock one of them held). Must not: write
anything but its results to its pipe, or return from the child.
"""

from __future__ import annotations

import gc
import marshal
import mmap
import os
import struct
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from reconciler.forking import cpus as _cpus
from reconciler.forking import reap as _reap

__all__ = ["CHUNK", "MIN_ITEMS", "in_halves"]

T = TypeVar("T")
MIN_ITEMS = 1000  # below this, forking costs more than it saves
CHUNK = 250  # items claimed at a time (each side does a chunk's reads, then its parsing, in one stretch each)
_SLOT = struct.Struct("q")
_HEAD, _TAIL = 0, 8


def in_halves(
    items: Sequence[str],
    work: Callable[[Sequence[str]], dict[str, T]],
    encode: Callable[[T], Any],
    decode: Callable[[Any], T],
) -> dict[str, T]:
    """`work(chunk)` over every chunk of `items`, merged: here, or part of it in a forked worker where that pays.
    The worker's results cross as `encode(result)` (marshal-able), are read back with `decode`; a result it
    cannot encode (`encode` raises) is left to this process."""
    if len(items) < MIN_ITEMS or not hasattr(os, "fork") or threading.active_count() > 1 or _cpus() < 2:
        return work(items)
    shared = mmap.mmap(-1, mmap.PAGESIZE)
    _SLOT.pack_into(shared, _HEAD, 0)
    _SLOT.pack_into(shared, _TAIL, len(items))
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the worker: never returns
        os.close(reader)
        _worker(items, work, encode, shared, writer)
    os.close(writer)
    try:
        results: dict[str, T] = {}
        head = 0
        while head < _SLOT.unpack_from(shared, _TAIL)[0]:
            end = min(head + CHUNK, len(items))
            _SLOT.pack_into(shared, _HEAD, end)
            results.update(work(items[head:end]))
            head = end
        theirs = _collect(reader)
    finally:
        os.close(reader)
        shared.close()
        _reap(pid)
    for item, encoded in theirs.items():
        if item not in results:
            results[item] = decode(encoded)
    left = [item for item in items[head:] if item not in results]
    if left:
        results.update(work(left))
    return results


def _worker(
    items: Sequence[str], work: Callable[[Sequence[str]], dict[str, T]], encode: Callable[[T], Any],
    shared: mmap.mmap, writer: int,
) -> None:
    status = 1
    try:
        gc.disable()  # a short life that frees nothing in cycles
        found: dict[str, Any] = {}
        tail = len(items)
        while tail > _SLOT.unpack_from(shared, _HEAD)[0]:
            start = max(tail - CHUNK, 0)
            _SLOT.pack_into(shared, _TAIL, start)
            for item, result in work(items[start:tail]).items():
                try:
                    found[item] = encode(result)
                except Exception:  # noqa: BLE001, S112 - left to the parent, which does it again
                    continue
            tail = start
        blob = memoryview(marshal.dumps(found))
        while blob:
            blob = blob[os.write(writer, blob):]
        status = 0
    finally:
        os._exit(status)


def _collect(reader: int) -> dict[str, Any]:
    chunks = []
    try:
        while chunk := os.read(reader, 1 << 20):
            chunks.append(chunk)
        found = marshal.loads(b"".join(chunks))  # noqa: S302 - written by our own forked child
    except (OSError, EOFError, ValueError, TypeError):
        return {}  # a worker that died: everything it had is done here instead
    return found if isinstance(found, dict) else {}
