"""Shared state in PostgreSQL: a header row per environment (lineage, serial) and one row per resource,
compare-and-swap on `serial`, session advisory locks.

Owns: the tables (created on first use), resource rows (a step rewrites only its own rows, keeping each one's
previous value in a backup table), and the lock (sealed credential rows are in `postgres_credentials`, the service's rows in `postgres_service`): a *session* advisory lock on a dedicated connection, so a crashed
or killed process never leaves a stuck lock (the server releases it with the session). Needs a direct connection,
not a transaction pooler. Must not: know the configuration or the plan; put a DSN (it may hold a password), or
any text of the driver's that may quote it, in a message (`dsn` words every DSN problem itself).
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from typing import Any

from reconciler.errors import StaleStateError, StateError, StateLockedError
from reconciler.state.backend import LockInfo, wait_for_lock
from reconciler.state.dsn import DsnError, connect_problem, parse_dsn
from reconciler.state.model import StateDocument, check_import, decode_state
from reconciler.state.postgres_credentials import PostgresCredentialStore
from reconciler.state.postgres_service import SERVICE_SCHEMA, PostgresServiceStore

__all__ = ["PostgresBackend"]

# The rows are the document's records, each rewritten only by a step that changes it: rows of format 1 and 2 live
# side by side, and every row is read as format 1 (the record upgrade is idempotent, see `upgrade_record`).
ROWS_FORMAT = 1

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
CREATE TABLE IF NOT EXISTS reconciler_lock_claims (
    environment text NOT NULL,
    backend_pid integer NOT NULL,
    info jsonb NOT NULL,
    PRIMARY KEY (environment, backend_pid)
);
""" + SERVICE_SCHEMA


def _psycopg():  # type: ignore[no-untyped-def]
    try:
        import psycopg
    except ImportError:  # pragma: no cover - a dependency of the package
        raise StateError("the postgres backend needs psycopg (pip install 'psycopg[binary]')") from None
    return psycopg


def _connect(dsn: str, settings: dict[str, Any], where: str):  # type: ignore[no-untyped-def]
    """A connection; on failure our own message (see `dsn.connect_problem`): the driver's may quote the DSN."""
    psycopg = _psycopg()
    try:
        return psycopg.connect(dsn, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        raise StateError(f"{where}: cannot connect to PostgreSQL: {connect_problem(exc, settings)}") from None


def _lock_key(environment: str) -> int:
    digest = hashlib.sha256(f"reconciler-state-lock:{environment}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class PostgresBackend:
    """One environment's state in PostgreSQL."""

    def __init__(self, dsn: str, environment: str, *, source: str = "the PostgreSQL DSN") -> None:
        """`source` names where the DSN came from, for the message when it does not parse (never its value)."""
        try:
            self._settings = parse_dsn(dsn)
        except DsnError as exc:
            raise StateError(f"{source}: cannot parse the DSN ({exc.problem})", hint=exc.hint) from None
        self._dsn = dsn
        self.environment = environment
        self._where = f"postgres state '{environment}'"
        self._conn: Any = None  # the lock's session while the lock is held
        self._held: LockInfo | None = None
        self._schema_ready = False
        self._service: PostgresServiceStore | None = None

    def describe(self) -> str:
        return self._where

    @contextmanager
    def _session(self) -> Iterator[Any]:
        if self._conn is not None:
            yield self._conn
            return
        conn = _connect(self._dsn, self._settings, self._where)
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
        with self._session() as conn:
            return self._on_connection(conn, work)

    def _on_connection(self, conn: Any, work: Any) -> Any:
        """`work(conn)` with the schema in place; a database error becomes a `StateError` naming only its class."""
        try:
            self._ensure_schema(conn)
            return work(conn)
        except _psycopg().Error as exc:
            raise StateError(f"{self._where}: database error ({type(exc).__name__})") from None

    # -- document ----------------------------------------------------------------------------------------------

    def _header(self, conn: Any, *, for_update: bool = False) -> tuple[str, int] | None:
        row = conn.execute(
            "SELECT lineage, serial FROM reconciler_state WHERE environment = %s" + (" FOR UPDATE" if for_update else ""),  # noqa: S608 - constant SQL
            (self.environment,),
        ).fetchone()
        return (row[0], row[1]) if row else None

    def _rows(self, conn: Any, addresses: list[str] | None = None) -> dict[str, Any]:
        query = "SELECT address, record FROM reconciler_resources WHERE environment = %s"
        if addresses is None:
            return dict(conn.execute(query, (self.environment,)).fetchall())
        return dict(conn.execute(query + " AND address = ANY(%s)", (self.environment, addresses)).fetchall())

    def read(self) -> StateDocument | None:
        return self._read_document(None)

    def read_resources(self, addresses: Collection[str], *, prefixes: Collection[str] = ()) -> StateDocument | None:
        """The document with only the resources named, and those whose address starts with one of `prefixes` (the
        others left out): for a reader that needs a few resources of many, such as the service answering one
        tenant. Never to be written back."""
        return self._read_document((sorted(addresses), sorted(prefixes)))

    def _read_document(self, only: tuple[list[str], list[str]] | None) -> StateDocument | None:
        def work(conn: Any) -> StateDocument | None:
            header = self._header(conn)
            return None if header is None else self._decoded(conn, header, only)

        return self._run(work)  # type: ignore[no-any-return]

    def _decoded(self, conn: Any, header: tuple[str, int], only: tuple[list[str], list[str]] | None) -> StateDocument:
        """The document of `header` with its resources (`only`: the addresses and address prefixes wanted)."""
        query = "SELECT address, record::text FROM reconciler_resources WHERE environment = %s"
        if only is not None:
            query += " AND (address = ANY(%s) OR address ^@ ANY(%s::text[]))"
        rows = conn.execute(query, (self.environment, *(only or ()))).fetchall()  # the records as text: parsed once, below
        resources = ",".join(f"{json.dumps(address)}:{record}" for address, record in rows)
        head = {"format_version": ROWS_FORMAT, "lineage": header[0], "serial": header[1], "environment": self.environment}
        return decode_state(f"{json.dumps(head)[:-1]},\"resources\":{{{resources}}}}}".encode(), self._where)

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
                    self._put_rows(conn, dict(doc.resources), [])
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
        lineage (the same serial only with the same contents, then nothing is written). Call with the lock held."""

        def work(conn: Any) -> None:
            with conn.transaction():
                header = self._header(conn, for_update=True)
                if header is not None:
                    current = self._decoded(conn, header, None)
                    check_import(self._where, current, doc)
                    if current.serial == doc.serial:
                        return
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
        """A session advisory lock. Each writer records who it is (a claim row keyed by its session's backend pid)
        *before* it tries the lock, and lets go before deleting the claim: whoever finds the lock held finds the
        holder's session in `pg_locks` and its claim beside it, at every moment."""
        psycopg = _psycopg()
        conn = _connect(self._dsn, self._settings, self._where)
        try:
            self._ensure_schema(conn)
            info = LockInfo.for_current_process(operation)
            conn.execute(
                "INSERT INTO reconciler_lock_claims (environment, backend_pid, info) VALUES (%s, pg_backend_pid(), %s) "
                "ON CONFLICT (environment, backend_pid) DO UPDATE SET info = EXCLUDED.info",
                (self.environment, json.dumps(info.as_dict())),
            )
            try:
                self._take(conn, timeout)
                self._conn, self._held = conn, info
                try:
                    yield info
                finally:
                    self._conn, self._held = None, None
                    self._let_go(conn, "SELECT pg_advisory_unlock(%s)", (_lock_key(self.environment),))
            finally:  # our claim, and those of sessions that died (a claim never outlives its holding anyway)
                self._let_go(
                    conn,
                    "DELETE FROM reconciler_lock_claims WHERE environment = %s AND (backend_pid = pg_backend_pid() "
                    "OR backend_pid NOT IN (SELECT pid FROM pg_stat_activity))",
                    (self.environment,),
                )
        except psycopg.Error as exc:
            raise StateError(f"{self._where}: database error while locking ({type(exc).__name__})") from None
        finally:
            conn.close()

    @staticmethod
    def _let_go(conn: Any, statement: str, params: tuple[Any, ...]) -> None:
        try:
            conn.execute(statement, params)
        except _psycopg().Error:
            pass  # closing the session releases the lock anyway

    def _take(self, conn: Any, timeout: float) -> None:
        """Take the advisory lock, waiting up to `timeout`; then fail naming the holder."""
        key = _lock_key(self.environment)
        deadline = time.monotonic() + timeout
        unseen = 0
        while not conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]:
            holder = self._holder(conn)
            if holder is None and unseen < 100:
                unseen += 1
                continue  # let go between our try and our look: try again at once
            wait_for_lock(deadline, self._where, holder or "held by a session that pg_locks does not show", gone="is stuck")

    def _holding(self, conn: Any) -> tuple[int, LockInfo | None] | None:
        """The backend pid of the session holding the lock now and its claim (None: it made none), or None when
        nobody holds it. A claim left by a session that died is never the holder's: only a granted lock counts."""
        unsigned = _lock_key(self.environment) & 0xFFFFFFFFFFFFFFFF
        row = conn.execute(
            "SELECT l.pid, c.info FROM pg_locks l LEFT JOIN reconciler_lock_claims c "
            "ON c.environment = %s AND c.backend_pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s AND l.objid = %s AND l.objsubid = 1",
            (self.environment, unsigned >> 32, unsigned & 0xFFFFFFFF),
        ).fetchone()
        if row is None:
            return None
        data = row[1] if row[1] is None or isinstance(row[1], dict) else json.loads(row[1])
        return row[0], (LockInfo(**data) if data else None)

    def _holder(self, conn: Any) -> str | None:
        """Who holds the lock, for the message (None: nobody does now)."""
        holding = self._holding(conn)
        if holding is None:
            return None
        pid, info = holding
        if info is None:
            return f"held by PostgreSQL session {pid}, which recorded no holder information (an older reconciler?)"
        return info.describe()

    def force_unlock(self, lock_id: str, *, confirm_live: Callable[[str], bool] | None = None) -> str:
        """End the session holding the lock `lock_id` (its process is stuck); returns who held it. A holder whose
        session is still alive (its backend is in pg_stat_activity) may be mid-write: it is ended only when
        `confirm_live(holder)` says yes; without `confirm_live` (or on no) a `StateLockedError`, nothing changed."""

        def work(conn: Any) -> str:
            holding = self._holding(conn)
            if holding is None:
                raise StateError(f"{self._where} is not locked")
            pid, info = holding
            if info is None or info.id != lock_id:
                raise StateError(f"{self._where}: the lock is {info.id if info else 'unnamed'}, not {lock_id}")
            alive = conn.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone() is not None
            if alive and (confirm_live is None or not confirm_live(info.describe())):
                raise StateLockedError(
                    f"{self._where} is {info.describe()}, and its session is alive",
                    hint="stop that process, or pass --force to end its session (it may be mid-write)",
                )
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
            conn.execute(
                "DELETE FROM reconciler_lock_claims WHERE environment = %s AND backend_pid = %s", (self.environment, pid)
            )
            return info.describe()

        return self._run(work)  # type: ignore[no-any-return]

    def credential_store(self) -> PostgresCredentialStore:
        return PostgresCredentialStore(self._run, self.environment)

    def service_store(self) -> PostgresServiceStore:
        """Attempts and the audit log, on connections of their own (one pool per backend, shared by threads)."""
        if self._service is None:
            connect = functools.partial(_connect, self._dsn, self._settings, self._where)
            self._service = PostgresServiceStore(connect, self._on_connection, self.environment)
        return self._service
