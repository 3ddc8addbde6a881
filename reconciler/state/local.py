"""Local state: a snapshot `<dir>/<environment>.json`, an append-only `.journal`, a `.backup`, and a `.lock` file
held with `fcntl.flock` that names its holder (taken and named as one step under a short `.lock-gate` lock).

Owns: persisting every step cheaply — a write that names what changed appends one checksummed journal record
(fsync) instead of rewriting everything, so an apply of 10,000 changes stays linear; the journal is folded into
the snapshot (atomic replacement: temp file, fsync, rename, directory fsync; the previous snapshot kept as the
backup) once it outgrows the snapshot, and on reading a torn tail is dropped. Also compare-and-swap on `serial`,
and the OS lock (released by the kernel if the holder dies). Never overwrites a state file it could not read.
Must not: know the configuration or the plan; open a state file through a link (see `reconciler.statefiles`).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from reconciler.errors import StaleStateError, StateError, StateLockedError
from reconciler.state.backend import LockInfo, wait_for_lock
from reconciler.state.local_service import LocalServiceStore
from reconciler.state.model import (
    FORMAT_VERSION,
    Record,
    StateDocument,
    check_import,
    check_resource,
    decode_stored,
    encode_state,
    upgrade_record,
)
from reconciler.statefiles import atomic_write, open_regular, read_regular
from reconciler.tokens.store import LocalCredentialStore

__all__ = ["LocalBackend"]

GATE_PATIENCE = 30.0  # seconds to wait for a process inside the gate (a few system calls) before saying so
JOURNAL_MIN_BYTES = 1 << 20  # fold the journal into the snapshot once it is larger than this and the snapshot
_RECORD: TypeAdapter[Any] = TypeAdapter(Record)


def _journal_record(line: bytes, lineage: str, serial: int) -> dict[str, Any] | None:
    """The payload of one intact journal line for `serial`, or None (torn, tampered, foreign or out of order)."""
    try:
        entry = json.loads(line)
        payload = entry["p"]
        body = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        if hashlib.sha256(body.encode()).hexdigest() != entry["c"]:
            return None
        if payload["lineage"] != lineage or payload["serial"] != serial:
            return None
        if not isinstance(payload["set"], dict) or not isinstance(payload["delete"], list):
            return None
        if not all(isinstance(address, str) for address in payload["delete"]):
            return None
        for address, data in payload["set"].items():
            if _RECORD.validate_python(data).address != address:
                return None
        return payload  # type: ignore[no-any-return]
    except (ValueError, KeyError, TypeError, ValidationError, RecursionError):  # a damaged line is a torn one
        return None


class LocalBackend:
    """One environment's state in a local directory."""

    def __init__(self, directory: Path, environment: str, *, display_dir: str | None = None) -> None:
        self.directory = Path(directory)
        self.environment = environment
        self.path = self.directory / f"{environment}.json"
        self.backup_path = self.directory / f"{environment}.json.backup"
        self.lock_path = self.directory / f"{environment}.lock"
        self.gate_path = self.directory / f"{environment}.lock-gate"
        self.journal_path = self.directory / f"{environment}.journal"
        self._current: StateDocument | None = None  # what this holder last read or wrote, valid while it holds the lock
        self._journal_bytes = 0
        self._journal_tail = 0  # bytes after the journal's last newline: a torn record (a full disk, a power loss)
        self._snapshot_bytes = 0
        self._stored_version = FORMAT_VERSION  # the snapshot's format on disk: an older one is rewritten, not appended to
        self._service: LocalServiceStore | None = None  # made on first use, then kept
        self._display = f"{display_dir.rstrip('/')}/{environment}.json" if display_dir else str(self.path)
        self._held: LockInfo | None = None
        self._digests: list[tuple[str, str | None]] | None = None

    def describe(self) -> str:
        return self._display

    def read_digests(self) -> list[tuple[str, str | None]] | None:
        """The SHA-256 of each file the last `read` used (and of the checks log, once read), as read (None: absent);
        None before any read. For the plan memo (`reconciler.memo.StateFiles`), not part of the backend protocol."""
        checks = self._service.checks_digest if self._service is not None else None
        return self._digests if self._digests is None or checks is None else [*self._digests, checks]

    def read(self) -> StateDocument | None:
        if self._held is not None and self._current is not None:
            return self._current  # nobody else writes while we hold the lock
        try:
            raw = read_regular(self.path)
        except OSError as exc:
            raise StateError(f"{self._display}: cannot read state: {exc.strerror or exc}") from None
        if raw is None:
            self._digests = [(os.path.abspath(self.path), None)]
            return None
        self._digests = [(os.path.abspath(self.path), hashlib.sha256(raw).hexdigest())]
        doc, self._stored_version = decode_stored(raw, self._display)
        if doc.environment != self.environment:
            raise StateError(
                f"{self._display}: holds environment '{doc.environment}', expected '{self.environment}'",
                hint="the file was copied from another environment; it was not changed",
            )
        doc = self._replay(doc)
        self._snapshot_bytes = len(raw)
        if self._held is not None:
            self._current = doc
        return doc

    def _replay(self, doc: StateDocument) -> StateDocument:
        """The snapshot with every intact journal record after it applied; a torn or foreign tail is ignored."""
        try:
            raw = read_regular(self.journal_path)
        except OSError as exc:
            raise StateError(f"{self.journal_path}: cannot read the state journal: {exc.strerror}") from None
        if raw is None:
            self._journal_bytes = self._journal_tail = 0
            if self._digests is not None:
                self._digests.append((os.path.abspath(self.journal_path), None))
            return doc
        if self._digests is not None:
            self._digests.append((os.path.abspath(self.journal_path), hashlib.sha256(raw).hexdigest()))
        self._journal_tail = len(raw) - (raw.rfind(b"\n") + 1)
        resources: dict[str, Any] | None = None
        serial = doc.serial
        good = 0
        for line in raw.split(b"\n"):
            record = _journal_record(line, doc.lineage, serial + 1)
            if record is None:
                if serial > doc.serial or not line.strip():
                    break  # the end, or a torn tail
                continue  # records already folded into the snapshot
            if resources is None:
                resources = dict(doc.resources)
            for address in record["delete"]:
                resources.pop(address, None)
            for address, data in record["set"].items():
                resources[address] = _RECORD.validate_python(upgrade_record(data))
                check_resource(address, resources[address], str(self.journal_path), "the journal is left as it is")
            serial += 1
            good += len(line) + 1
        self._journal_bytes = good
        if resources is None:
            return doc
        return doc.model_copy(update={"resources": resources, "serial": serial})

    def write(
        self, doc: StateDocument, *, expected_serial: int | None, changed: set[str] | None = None
    ) -> StateDocument:
        """Persist `doc` as the next serial. With `changed` (the addresses that differ from the current document)
        the step is one journal record; without it the snapshot is rewritten."""
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
        if current is not None and changed is not None and self._stored_version == FORMAT_VERSION:
            changed = {a for a in changed if current.resources.get(a) != doc.resources.get(a)}
            if not changed:
                return current
            return self._append(current, doc, changed)
        if current is not None and current.resources == doc.resources:
            return current  # nothing changed: the serial moves only when the document does
        new = doc.model_copy(update={"serial": (current.serial if current else doc.serial) + 1})
        return self._snapshot(new, replace_existing=current is not None)

    def _fold_journal(self) -> None:
        """At the end of a command, leave one plain snapshot (a crash before this leaves the journal, replayed)."""
        if self._journal_bytes and self._current is not None:
            try:
                self._snapshot(self._current, replace_existing=True)
            except StateError:
                pass  # the journal stays and is replayed by the next reader

    def _append(self, current: StateDocument, doc: StateDocument, changed: set[str]) -> StateDocument:
        new = doc.model_copy(update={"serial": current.serial + 1})
        payload = {
            "lineage": new.lineage,
            "serial": new.serial,
            "set": {a: doc.resources[a].model_dump(mode="json", exclude_none=True) for a in sorted(changed) if a in doc.resources},
            "delete": sorted(a for a in changed if a not in doc.resources),
        }
        body = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        line = json.dumps({"c": hashlib.sha256(body.encode()).hexdigest(), "p": payload}, sort_keys=True) + "\n"
        try:
            with os.fdopen(open_regular(self.journal_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT), "ab") as handle:
                if self._journal_tail:
                    # A record appended after a torn one would share its line, and replay stops there: drop the tail.
                    os.ftruncate(handle.fileno(), os.fstat(handle.fileno()).st_size - self._journal_tail)
                    self._journal_tail = 0
                handle.write(line.encode())
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            self._current = None  # a torn line may be on disk: read it back before the next write
            raise StateError(
                f"{self._display}: cannot write state: {exc.strerror or exc}", hint="the previous state is intact"
            ) from None
        self._journal_bytes += len(line)
        if self._held is not None:
            self._current = new
        if self._journal_bytes > max(JOURNAL_MIN_BYTES, self._snapshot_bytes):
            self._snapshot(new, replace_existing=True)  # fold the journal in: amortised, the cost stays linear
        return new

    def _snapshot(self, new: StateDocument, *, replace_existing: bool) -> StateDocument:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            previous = read_regular(self.path) if replace_existing else None
            if previous is not None:
                atomic_write(self.backup_path, previous)
            encoded = encode_state(new)
            atomic_write(self.path, encoded)
            # Records up to new.serial are in the snapshot now; replay skips them even if this truncation is lost.
            if os.path.lexists(self.journal_path):
                atomic_write(self.journal_path, b"")
        except OSError as exc:
            self._current = None
            raise StateError(
                f"{self._display}: cannot write state: {exc.strerror or exc}",
                hint="the previous state is intact",
            ) from None
        self._snapshot_bytes, self._journal_bytes = len(encoded), 0
        self._stored_version = FORMAT_VERSION
        if self._held is not None:
            self._current = new
        return new

    @contextmanager
    def lock(self, operation: str, *, timeout: float = 0.0) -> Iterator[LockInfo]:
        """The OS lock on `<env>.lock`, which also holds who has it. Taking it and writing the holder's name, and
        clearing the name and letting go, each happen under the short-lived gate lock (`<env>.lock-gate`), which a
        loser holds while it looks: so whoever finds the lock held also finds its holder's name."""
        self.directory.mkdir(parents=True, exist_ok=True)
        info = LockInfo.for_current_process(operation)
        fd = open_regular(self.lock_path, os.O_RDWR | os.O_CREAT)
        try:
            gate = open_regular(self.gate_path, os.O_RDWR | os.O_CREAT)
            try:
                self._take(fd, gate, info, timeout)
                self._held = info
                self._current = None
                try:
                    yield info
                finally:
                    self._fold_journal()
                    self._held = None
                    self._current = None
                    with self._gated(gate):
                        os.ftruncate(fd, 0)
                        fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(gate)
        finally:
            os.close(fd)

    def _take(self, fd: int, gate: int, info: LockInfo, timeout: float) -> None:
        """Take the lock and record `info` in one step under the gate, or fail naming the holder after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            with self._gated(gate):
                if _try_flock(fd, self.lock_path):
                    _record_holder(fd, info, self._display)
                    return
                holder = self._holder(fd)
            wait_for_lock(deadline, f"state {self._display}", holder)

    @contextmanager
    def _gated(self, gate: int) -> Iterator[None]:
        """Hold the gate: held only for a few system calls at a time by each writer (taking the lock and naming
        itself, clearing its name and letting go, or looking at who holds it). A process stopped inside it for
        longer than `GATE_PATIENCE` is reported as such rather than waited for without end."""
        deadline = time.monotonic() + GATE_PATIENCE
        while not _try_flock(gate, self.gate_path):
            if time.monotonic() >= deadline:
                raise StateLockedError(
                    f"state {self._display} is locked: a process has been taking or releasing the lock for "
                    f"{GATE_PATIENCE:.0f} s (stopped?) and has not recorded who it is",
                    hint="nothing was changed; run again, and if this repeats look for a stopped reconciler process",
                )
            time.sleep(0.005)
        try:
            yield
        finally:
            fcntl.flock(gate, fcntl.LOCK_UN)

    def import_document(self, doc: StateDocument) -> None:
        """Store `doc` as it is (same serial), for `state push`: only over nothing, or an older serial of the same
        lineage (the same serial only with the same contents, then nothing is written). Call with the lock held."""
        current = self.read()
        if current is not None:
            check_import(self._display, current, doc)
            if current.serial == doc.serial:
                return
        self._snapshot(doc, replace_existing=current is not None)

    def force_unlock(self, lock_id: str, *, confirm_live: Callable[[str], bool] | None = None) -> str:
        """Clear lock information left behind. A live holder keeps its OS lock and is always refused (`confirm_live`
        is never asked): stop that process instead."""
        try:
            fd = open_regular(self.lock_path, os.O_RDWR)
        except FileNotFoundError:
            raise StateError(f"state {self._display} is not locked") from None
        try:
            gate = open_regular(self.gate_path, os.O_RDWR | os.O_CREAT)
            try:
                with self._gated(gate):
                    return self._clear_left_behind(fd, lock_id)
            finally:
                os.close(gate)
        finally:
            os.close(fd)

    def _clear_left_behind(self, fd: int, lock_id: str) -> str:
        holder = self._holder(fd)
        info = self._holder_info(fd)
        if info is None or info.id != lock_id:
            raise StateError(f"state {self._display}: the lock is {info.id if info else 'not held'}, not {lock_id}")
        if not _try_flock(fd, self.lock_path):
            raise StateLockedError(
                f"state {self._display} is {holder}, and that process is alive",
                hint="stop it: the kernel releases a local lock the moment its holder exits",
            )
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return holder

    def credential_store(self) -> LocalCredentialStore:
        return LocalCredentialStore(self.directory, self.environment)

    def service_store(self) -> LocalServiceStore:
        """One store per backend: it remembers how large the checks log was when it last read it."""
        if self._service is None:
            self._service = LocalServiceStore(self.directory, self.environment)
        return self._service

    def _holder_info(self, fd: int) -> LockInfo | None:
        try:
            return LockInfo(**json.loads(os.pread(fd, 4096, 0) or b"{}"))
        except (ValueError, TypeError, OSError, RecursionError):
            return None

    def _holder(self, fd: int) -> str:
        info = self._holder_info(fd)
        return info.describe() if info else "held by a process that recorded no holder information (an older version?)"


def _try_flock(fd: int, path: Path) -> bool:
    """Take the exclusive OS lock on `fd` if it is free; False when another open file holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise StateError(f"{path}: cannot lock: {exc.strerror}") from None
        return False
    return True


def _record_holder(fd: int, info: LockInfo, display: str) -> None:
    """Write who holds the lock into the lock file; on failure (a full disk) let go and say nothing was changed."""
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info.as_dict()).encode(), 0)
        os.fsync(fd)
    except OSError as exc:
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        raise StateError(
            f"state {display}: cannot record the lock holder: {exc.strerror or exc}",
            hint="nothing was changed; free some disk space and run again",
        ) from None
