"""Shared state in PostgreSQL: a header row per environment (lineage, serial) and one row per resource,
compare-and-swap on `serial`, session advisory locks.

Owns: the tables (created on first use), resource rows (a step rewrites only its own rows, keeping each one's
previous value in a backup table), sealed credential rows
(compare-and-swap on `generation`), and the lock: a *session* advisory lock on a dedicated connection, so a crashed
or killed process never leaves a stuck lock (the server releases it with the session). Needs a direct connection,
not a transaction pooler. Must not: know the configuration or the plan; put a DSN (it may hold a password) in a
message.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from reconciler.errors import StaleStateError, StateError, StateLockedError
from reconciler.state.backend import LockInfo
from reconciler.state.credentials import Blob, SealedRecord
from reconciler.state.model import StateDocument, decode_state

__all__ = ["PostgresBackend", "PostgresCredentialStore"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS reconciler_state (
    environment text PRIMARY KEY,
    lineage text NOT NULL,
    serial bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS reconciler_resources (
    environment text NOT NULL,
    address text NOT NULL,
    record jsonb NOT NULL,
    PRIMARY KEY (environment, address)
);
CREATE TABLE IF NOT EXISTS reconciler_resources_backup (
    environment text NOT NULL,
    address text NOT NULL,
    serial bigint NOT NULL,
    record jsonb NOT NULL,
    PRIMARY KEY (environment, address)
);
CREATE TABLE IF NOT EXISTS reconciler_credentials (
    environment text NOT NULL,
    address text NOT NULL,
    generation bigint NOT NULL,
    tokens jsonb,
    pending jsonb,
    staged jsonb,
    PRIMARY KEY (environment, address)
);
CREATE TABLE IF NOT EXISTS reconciler_locks (
    environment text PRIMARY KEY,
    info jsonb NOT NULL,
    backend_pid integer NOT NULL
);
"""


HOLDER_GRACE = 1.0  # seconds a loser waits for the holder to name itself (or let go) before failing


def _psycopg():  # type: ignore[no-untyped-def]
    try:
        import psycopg
    except ImportError:  # pragma: no cover - a dependency of the package
        raise StateError("the postgres backend needs psycopg (pip install 'psycopg[binary]')") from None
    return psycopg


def _connect(dsn: str, where: str):  # type: ignore[no-untyped-def]
    psycopg = _psycopg()
    try:
        return psycopg.connect(dsn, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        reason = reason.replace(dsn, "<dsn>")
        raise StateError(f"{where}: cannot connect to PostgreSQL ({_scrub(reason)})") from None


def _scrub(text: str) -> str:
    """Connection errors can echo parts of the DSN; keep only the server's reason."""
    import re

    return re.sub(r"password=\S+|://[^@\s]+@", "<redacted>", text)


def _lock_key(environment: str) -> int:
    digest = hashlib.sha256(f"reconciler-state-lock:{environment}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class PostgresBackend:
    """One environment's state in PostgreSQL."""

    def __init__(self, dsn: str, environment: str) -> None:
        self._dsn = dsn
        self.environment = environment
        self._where = f"postgres state '{environment}'"
        self._conn: Any = None  # the lock's session while the lock is held
        self._held: LockInfo | None = None
        self._schema_ready = False

    def describe(self) -> str:
        return self._where

    def read_digests(self) -> None:
        return None  # other writers change rows unseen: nothing local tells that state is unchanged

    @contextmanager
    def _session(self) -> Iterator[Any]:
        if self._conn is not None:
            yield self._conn
            return
        conn = _connect(self._dsn, self._where)
        try:
            yield conn
        finally:
            conn.close()

    def _ensure_schema(self, conn: Any) -> None:
        if not self._schema_ready:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key("reconciler-schema"),))
                conn.execute(SCHEMA)
            self._schema_ready = True

    def _run(self, work: Any) -> Any:
        psycopg = _psycopg()
        with self._session() as conn:
            try:
                self._ensure_schema(conn)
                return work(conn)
            except psycopg.Error as exc:
                raise StateError(f"{self._where}: database error ({type(exc).__name__})") from None

    # -- document ----------------------------------------------------------------------------------------------

    def _header(self, conn: Any, *, for_update: bool = False) -> tuple[str, int] | None:
        row = conn.execute(
            "SELECT lineage, serial FROM reconciler_state WHERE environment = %s" + (" FOR UPDATE" if for_update else ""),
            (self.environment,),
        ).fetchone()
        return (row[0], row[1]) if row else None

    def _rows(self, conn: Any, addresses: list[str] | None = None) -> dict[str, Any]:
        if addresses is None:
            rows = conn.execute(
                "SELECT address, record FROM reconciler_resources WHERE environment = %s", (self.environment,)
            ).fetchall()
        else:
            rows = conn.execute(
                "SELECT address, record FROM reconciler_resources WHERE environment = %s AND address = ANY(%s)",
                (self.environment, addresses),
            ).fetchall()
        return {address: record for address, record in rows}

    def read(self) -> StateDocument | None:
        def work(conn: Any) -> StateDocument | None:
            header = self._header(conn)
            if header is None:
                return None
            raw = {
                "format_version": 1,
                "lineage": header[0],
                "serial": header[1],
                "environment": self.environment,
                "resources": self._rows(conn),
            }
            return decode_state(json.dumps(raw).encode(), self._where)

        return self._run(work)  # type: ignore[no-any-return]

    def write(
        self, doc: StateDocument, *, expected_serial: int | None, changed: set[str] | None = None
    ) -> StateDocument:
        """One row per resource: a step rewrites only the rows it names (`changed`), so applying 10,000 changes
        stays linear; the previous value of each rewritten row is kept in `reconciler_resources_backup`."""
        if self._held is None:
            raise StateError("state write attempted without holding the lock (a bug)")
        if doc.environment != self.environment:
            raise StateError(f"{self._where}: refusing to write environment '{doc.environment}' here")

        def work(conn: Any) -> StateDocument:
            with conn.transaction():
                header = self._header(conn, for_update=True)
                if header is None:
                    if expected_serial is not None:
                        raise StaleStateError(f"{self._where}: state disappeared (expected serial {expected_serial})")
                    new = doc.model_copy(update={"serial": doc.serial + 1})
                    conn.execute(
                        "INSERT INTO reconciler_state (environment, lineage, serial) VALUES (%s, %s, %s)",
                        (self.environment, new.lineage, new.serial),
                    )
                    self._put_rows(conn, {a: r for a, r in doc.resources.items()}, [])
                    return new
                lineage, serial = header
                if expected_serial is None:
                    raise StaleStateError(f"{self._where}: state was created meanwhile (serial {serial})")
                if lineage != doc.lineage:
                    raise StaleStateError(f"{self._where}: lineage {lineage} differs from {doc.lineage}")
                if serial != expected_serial:
                    raise StaleStateError(
                        f"{self._where}: serial moved from {expected_serial} to {serial} (another writer)"
                    )
                names = sorted(changed) if changed is not None else None
                stored = self._rows(conn, names)
                wanted = {
                    a: r.model_dump(mode="json", exclude_none=True)
                    for a, r in doc.resources.items()
                    if names is None or a in changed  # type: ignore[operator]
                }
                scope = names if names is not None else sorted(stored.keys() | wanted.keys())
                upserts = {a: wanted[a] for a in scope if a in wanted and stored.get(a) != wanted[a]}
                deletes = [a for a in scope if a not in wanted and a in stored]
                if not upserts and not deletes:
                    return doc.model_copy(update={"serial": serial})
                conn.execute(
                    "INSERT INTO reconciler_resources_backup (environment, address, serial, record) "
                    "SELECT environment, address, %s, record FROM reconciler_resources "
                    "WHERE environment = %s AND address = ANY(%s) "
                    "ON CONFLICT (environment, address) DO UPDATE SET serial = EXCLUDED.serial, record = EXCLUDED.record",
                    (serial, self.environment, sorted([*upserts, *deletes])),
                )
                self._put_rows(conn, upserts, deletes, dumped=True)
                conn.execute(
                    "UPDATE reconciler_state SET serial = %s, updated_at = now() WHERE environment = %s",
                    (serial + 1, self.environment),
                )
                return doc.model_copy(update={"serial": serial + 1})

        return self._run(work)  # type: ignore[no-any-return]

    def _put_rows(self, conn: Any, upserts: dict[str, Any], deletes: list[str], *, dumped: bool = False) -> None:
        if deletes:
            conn.execute(
                "DELETE FROM reconciler_resources WHERE environment = %s AND address = ANY(%s)",
                (self.environment, deletes),
            )
        if upserts:
            with conn.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO reconciler_resources (environment, address, record) VALUES (%s, %s, %s) "
                    "ON CONFLICT (environment, address) DO UPDATE SET record = EXCLUDED.record",
                    [
                        (self.environment, a, json.dumps(r if dumped else r.model_dump(mode="json", exclude_none=True)))
                        for a, r in upserts.items()
                    ],
                )

    def import_document(self, doc: StateDocument) -> None:
        """Store `doc` as it is (same serial), for `state push`: only over nothing, or an older serial of the same
        lineage. Call with the lock held."""

        def work(conn: Any) -> None:
            with conn.transaction():
                header = self._header(conn, for_update=True)
                if header is not None and (header[0] != doc.lineage or header[1] > doc.serial):
                    raise StaleStateError(
                        f"{self._where}: holds lineage {header[0]} serial {header[1]}; refusing to replace it"
                    )
                conn.execute(
                    "INSERT INTO reconciler_state (environment, lineage, serial) VALUES (%s, %s, %s) "
                    "ON CONFLICT (environment) DO UPDATE SET lineage = EXCLUDED.lineage, serial = EXCLUDED.serial, "
                    "updated_at = now()",
                    (self.environment, doc.lineage, doc.serial),
                )
                conn.execute("DELETE FROM reconciler_resources WHERE environment = %s", (self.environment,))
                self._put_rows(conn, dict(doc.resources), [])

        self._run(work)

    # -- lock --------------------------------------------------------------------------------------------------

    @contextmanager
    def lock(self, operation: str, *, timeout: float = 0.0) -> Iterator[LockInfo]:
        psycopg = _psycopg()
        conn = _connect(self._dsn, self._where)
        try:
            self._ensure_schema(conn)
            key = _lock_key(self.environment)
            deadline = time.monotonic() + timeout
            while not conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]:
                now = time.monotonic()
                if now >= deadline:
                    # The holder names itself just after taking the lock: a loser that finds no name (or only the
                    # name a dead session left behind) looks again for a moment rather than fail anonymously.
                    if self._holder_info(conn) is None and now < deadline + HOLDER_GRACE:
                        time.sleep(0.02)
                        continue
                    raise StateLockedError(
                        f"{self._where} is locked: {self._holder(conn)}",
                        hint="wait and retry, pass --lock-timeout, or force-unlock if that process is stuck",
                    )
                time.sleep(min(0.1, max(0.0, deadline - now)))
            info = LockInfo.for_current_process(operation)
            backend_pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
            conn.execute(
                "INSERT INTO reconciler_locks (environment, info, backend_pid) VALUES (%s, %s, %s) "
                "ON CONFLICT (environment) DO UPDATE SET info = EXCLUDED.info, backend_pid = EXCLUDED.backend_pid",
                (self.environment, json.dumps(info.as_dict()), backend_pid),
            )
            self._conn, self._held = conn, info
            try:
                yield info
            finally:
                self._conn, self._held = None, None
                try:
                    conn.execute("DELETE FROM reconciler_locks WHERE environment = %s", (self.environment,))
                    conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
                except psycopg.Error:
                    pass  # closing the session releases the lock anyway
        except psycopg.Error as exc:
            raise StateError(f"{self._where}: database error while locking ({type(exc).__name__})") from None
        finally:
            conn.close()

    def _holder_info(self, conn: Any) -> LockInfo | None:
        """Who holds the lock: the lock row of the session that holds the advisory lock now (a row left by a
        session that died is not the holder)."""
        unsigned = _lock_key(self.environment) & 0xFFFFFFFFFFFFFFFF
        row = conn.execute(
            "SELECT info FROM reconciler_locks WHERE environment = %s AND backend_pid IN ("
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = %s AND objid = %s "
            "AND objsubid = 1)",
            (self.environment, unsigned >> 32, unsigned & 0xFFFFFFFF),
        ).fetchone()
        if row is None:
            return None
        return LockInfo(**(row[0] if isinstance(row[0], dict) else json.loads(row[0])))

    def _holder(self, conn: Any) -> str:
        info = self._holder_info(conn)
        return info.describe() if info else "held by another session (no holder information)"

    def force_unlock(self, lock_id: str, *, confirm_live: Callable[[str], bool] | None = None) -> str:
        """End the session holding the lock `lock_id` (its process is stuck); returns who held it. A holder whose
        session is still alive (its backend is in pg_stat_activity) may be mid-write: it is ended only when
        `confirm_live(holder)` says yes; without `confirm_live` (or on no) a `StateLockedError`, nothing changed."""

        def work(conn: Any) -> str:
            row = conn.execute(
                "SELECT info, backend_pid FROM reconciler_locks WHERE environment = %s", (self.environment,)
            ).fetchone()
            if row is None:
                raise StateError(f"{self._where} is not locked")
            data = row[0] if isinstance(row[0], dict) else json.loads(row[0])
            info = LockInfo(**data)
            if info.id != lock_id:
                raise StateError(f"{self._where}: the lock is {info.id}, not {lock_id}")
            alive = conn.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (row[1],)).fetchone() is not None
            if alive and (confirm_live is None or not confirm_live(info.describe())):
                raise StateLockedError(
                    f"{self._where} is {info.describe()}, and its session is alive",
                    hint="stop that process, or pass --force to end its session (it may be mid-write)",
                )
            conn.execute("SELECT pg_terminate_backend(%s)", (row[1],))
            conn.execute("DELETE FROM reconciler_locks WHERE environment = %s", (self.environment,))
            return info.describe()

        return self._run(work)  # type: ignore[no-any-return]

    def credential_store(self) -> PostgresCredentialStore:
        return PostgresCredentialStore(self)


class PostgresCredentialStore:
    """Sealed credential rows, one per (environment, address), compare-and-swap on generation."""

    def __init__(self, backend: PostgresBackend) -> None:
        self.backend = backend
        self.environment = backend.environment

    def get(self, address: str) -> SealedRecord | None:
        def work(conn: Any) -> SealedRecord | None:
            row = conn.execute(
                "SELECT generation, tokens, pending, staged FROM reconciler_credentials "
                "WHERE environment = %s AND address = %s",
                (self.environment, address),
            ).fetchone()
            return SealedRecord(generation=row[0], tokens=row[1], pending=row[2], staged=row[3]) if row else None

        return self.backend._run(work)  # type: ignore[no-any-return]

    def put(
        self,
        address: str,
        tokens: Blob | None,
        pending: Blob | None,
        *,
        expected_generation: int | None,
        staged: Blob | None = None,
    ) -> int:
        def work(conn: Any) -> int:
            payload = tuple(json.dumps(blob) if blob else None for blob in (tokens, pending, staged))
            if expected_generation is None:
                cursor = conn.execute(
                    "INSERT INTO reconciler_credentials (environment, address, generation, tokens, pending, staged) "
                    "VALUES (%s, %s, 1, %s, %s, %s) ON CONFLICT DO NOTHING",
                    (self.environment, address, *payload),
                )
                generation = 1
            else:
                generation = expected_generation + 1
                cursor = conn.execute(
                    "UPDATE reconciler_credentials SET generation = %s, tokens = %s, pending = %s, staged = %s "
                    "WHERE environment = %s AND address = %s AND generation = %s",
                    (generation, *payload, self.environment, address, expected_generation),
                )
            if cursor.rowcount != 1:
                raise StaleStateError(f"credentials of {address} changed meanwhile")
            return generation

        return self.backend._run(work)  # type: ignore[no-any-return]

    def put_record(self, address: str, record: SealedRecord) -> None:
        """Store a record as it is (for `state push`)."""

        def work(conn: Any) -> None:
            conn.execute(
                "INSERT INTO reconciler_credentials (environment, address, generation, tokens, pending, staged) "
                "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (environment, address) DO UPDATE SET "
                "generation = EXCLUDED.generation, tokens = EXCLUDED.tokens, pending = EXCLUDED.pending, "
                "staged = EXCLUDED.staged",
                (
                    self.environment,
                    address,
                    record.generation,
                    *(json.dumps(b) if b else None for b in (record.tokens, record.pending, record.staged)),
                ),
            )

        self.backend._run(work)

    def delete(self, address: str) -> None:
        self.backend._run(
            lambda conn: conn.execute(
                "DELETE FROM reconciler_credentials WHERE environment = %s AND address = %s", (self.environment, address)
            )
        )

    def addresses(self) -> list[str]:
        rows = self.backend._run(
            lambda conn: conn.execute(
                "SELECT address FROM reconciler_credentials WHERE environment = %s ORDER BY address", (self.environment,)
            ).fetchall()
        )
        return [row[0] for row in rows]
