"""Local state: `<dir>/<environment>.json`, its `.backup`, and a `.lock` file held with `fcntl.flock`.

Owns: atomic replacement (temp file, fsync, rename, directory fsync), the one-version backup, compare-and-swap
on `serial`, and the OS lock (released by the kernel if the holder dies). Never overwrites a state file it
could not read. Must not: know the configuration or the plan.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from reconciler.errors import StaleStateError, StateError, StateLockedError
from reconciler.state.backend import LockInfo
from reconciler.state.model import StateDocument, decode_state, encode_state

__all__ = ["LocalBackend"]


class LocalBackend:
    """One environment's state in a local directory."""

    def __init__(self, directory: Path, environment: str, *, display_dir: str | None = None) -> None:
        self.directory = Path(directory)
        self.environment = environment
        self.path = self.directory / f"{environment}.json"
        self.backup_path = self.directory / f"{environment}.json.backup"
        self.lock_path = self.directory / f"{environment}.lock"
        self._display = f"{display_dir.rstrip('/')}/{environment}.json" if display_dir else str(self.path)
        self._held: LockInfo | None = None

    def describe(self) -> str:
        return self._display

    def read(self) -> StateDocument | None:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(f"{self._display}: cannot read state: {exc.strerror or exc}") from None
        doc = decode_state(raw, self._display)
        if doc.environment != self.environment:
            raise StateError(
                f"{self._display}: holds environment '{doc.environment}', expected '{self.environment}'",
                hint="the file was copied from another environment; it was not changed",
            )
        return doc

    def write(self, doc: StateDocument, *, expected_serial: int | None) -> StateDocument:
        if self._held is None:
            raise StateError("state write attempted without holding the lock (a bug)")
        if doc.environment != self.environment:
            raise StateError(f"{self._display}: refusing to write environment '{doc.environment}' here")
        current = self.read()
        if current is None and expected_serial is not None:
            raise StaleStateError(f"{self._display}: state disappeared (expected serial {expected_serial})")
        if current is not None:
            if expected_serial is None:
                raise StaleStateError(f"{self._display}: state was created meanwhile (serial {current.serial})")
            if current.lineage != doc.lineage:
                raise StaleStateError(
                    f"{self._display}: lineage {current.lineage} differs from {doc.lineage}: a different state"
                )
            if current.serial != expected_serial:
                raise StaleStateError(
                    f"{self._display}: serial moved from {expected_serial} to {current.serial} (another writer)"
                )
        if current is not None and current.resources == doc.resources:
            return current  # nothing changed: the serial moves only when the document does
        new = doc.model_copy(update={"serial": (current.serial if current else doc.serial) + 1})
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            if current is not None:
                _atomic_write(self.backup_path, self.path.read_bytes())
            _atomic_write(self.path, encode_state(new))
        except OSError as exc:
            raise StateError(
                f"{self._display}: cannot write state: {exc.strerror or exc}",
                hint="the previous state is intact",
            ) from None
        return new

    @contextmanager
    def lock(self, operation: str, *, timeout: float = 0.0) -> Iterator[LockInfo]:
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                        raise StateError(f"{self.lock_path}: cannot lock: {exc.strerror}") from None
                    if time.monotonic() >= deadline:
                        raise StateLockedError(
                            f"state {self._display} is locked: {self._holder(fd)}",
                            hint="wait and retry, pass --lock-timeout, or force-unlock if that process is gone",
                        ) from None
                    time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
            info = LockInfo.for_current_process(operation)
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info.as_dict()).encode(), 0)
            os.fsync(fd)
            self._held = info
            try:
                yield info
            finally:
                self._held = None
                os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def import_document(self, doc: StateDocument) -> None:
        """Store `doc` as it is (same serial), for `state push`: only over nothing, or an older serial of the same
        lineage. Call with the lock held."""
        current = self.read()
        if current is not None and (current.lineage != doc.lineage or current.serial > doc.serial):
            raise StaleStateError(
                f"{self._display}: holds lineage {current.lineage} serial {current.serial}; refusing to replace it"
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        if current is not None:
            _atomic_write(self.backup_path, self.path.read_bytes())
        _atomic_write(self.path, encode_state(doc))

    def force_unlock(self, lock_id: str) -> str:
        """Clear lock information left behind. A live holder keeps its OS lock: stop that process instead."""
        if not self.lock_path.exists():
            raise StateError(f"state {self._display} is not locked")
        fd = os.open(self.lock_path, os.O_RDWR)
        try:
            holder = self._holder(fd)
            try:
                data = json.loads(os.pread(fd, 4096, 0) or b"{}")
            except ValueError:
                data = {}
            if data.get("id") != lock_id:
                raise StateError(f"state {self._display}: the lock is {data.get('id') or 'not held'}, not {lock_id}")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise StateLockedError(
                    f"state {self._display} is {holder}, and that process is alive",
                    hint="stop it: the kernel releases a local lock the moment its holder exits",
                ) from None
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
            return holder
        finally:
            os.close(fd)

    def credential_store(self):  # type: ignore[no-untyped-def]
        from reconciler.state.credentials import LocalCredentialStore

        return LocalCredentialStore(self.directory, self.environment)

    def _holder(self, fd: int) -> str:
        try:
            data = json.loads(os.pread(fd, 4096, 0) or b"{}")
            return LockInfo(**data).describe()
        except (ValueError, TypeError, OSError):
            return "held by another process (no holder information)"


def _atomic_write(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that a reader sees the old or the new bytes, never a mix."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
