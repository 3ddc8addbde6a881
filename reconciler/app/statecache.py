"""The state document kept between reads while it does not change, for a reader that reads state on every request
(the token reader of a long-running service), where parsing a large document each time is too slow.

Owns: deciding whether the document read last is still current — the identity (device, inode, size, modification
and change times) of the local state's snapshot and journal is as it was when it was read, and that was less than
`MAX_AGE` ago — and reading it again otherwise. Other backends are read every time (from PostgreSQL, for one
installation's request, only the rows it needs). Must not: write, lock, or return anything a plain read of the
backend would not have returned then.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

from reconciler.state.backend import StateBackend
from reconciler.state.local import LocalBackend
from reconciler.state.model import StateDocument
from reconciler.state.postgres import PostgresBackend

__all__ = ["MAX_AGE", "CachedState"]

MAX_AGE = 2.0  # seconds: bounds how long an identity a later write happened to repeat could hide that write

_Identity = tuple[tuple[int, int, int, int, int] | None, ...]


class CachedState:
    """`read()` as `backend.read()`, kept while the state file stays the same. Safe to call from many threads."""

    def __init__(self, backend: StateBackend, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.backend, self.clock = backend, clock
        self._lock = threading.Lock()
        self._kept: tuple[_Identity, float, StateDocument | None] | None = None

    @property
    def local(self) -> bool:
        """Whether reads are of local files (that a read never waits on a network)."""
        return isinstance(self.backend, LocalBackend)

    def read_for(self, address: str) -> StateDocument | None:
        """State as far as one installation's request needs it: `address` and the partners. From PostgreSQL only
        those rows are read (a request must not parse every installation of a large state); otherwise `read()`."""
        if isinstance(self.backend, PostgresBackend):
            return self.backend.read_resources([address], prefixes=["partner."])
        return self.read()

    def read(self) -> StateDocument | None:
        if not isinstance(self.backend, LocalBackend):
            return self.backend.read()
        with self._lock:  # one reader parses a changed document; the others wait for it
            # Taken before the read: a write after this point shows as a change at the next call.
            identity = (_identity(self.backend.path), _identity(self.backend.journal_path))
            kept = self._kept
            if kept is not None and kept[0] == identity and self.clock() - kept[1] < MAX_AGE:
                return kept[2]
            doc = self.backend.read()
            self._kept = (identity, self.clock(), doc)
            return doc


def _identity(path: os.PathLike[str] | str) -> tuple[int, int, int, int, int] | None:
    """What changes whenever a state file is written (a snapshot is replaced by a new file, a journal grows);
    None: no such file."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
