"""What is kept beside a PostgreSQL state: sign-in attempts in `reconciler_attempts`, the audit log in
`reconciler_audit` and each installation's latest check in `reconciler_checks` (tables `postgres` creates with the
others, from `SERVICE_SCHEMA`), per environment.

Owns: those rows, and the small pool of connections the service's many concurrent callers share (at most
`max_connections` open at once; a caller beyond that waits for one). An attempt is taken by one
`DELETE ... RETURNING`: of any number of racing callers, in any number of processes, exactly one gets the row.
Expired attempts are pruned whenever one is recorded. Never uses the state lock's session: a statement there
would join the lock holder's transaction. Must not: open or seal a blob, or put a DSN or the driver's text in a
message (the backend's `on_connection` words database errors).
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from reconciler.state.service_store import (
    CHECK_OUTCOMES,
    Attempt,
    AuditEntry,
    CheckResult,
    check_attempt_key,
    is_attempt_key,
    latest_checks,
    utc,
)

__all__ = ["SERVICE_SCHEMA", "PostgresServiceStore"]

SERVICE_SCHEMA = """
CREATE TABLE IF NOT EXISTS reconciler_attempts (
    environment text NOT NULL,
    key text NOT NULL,
    address text NOT NULL,
    pending_id text NOT NULL,
    blob jsonb NOT NULL,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (environment, key)
);
CREATE INDEX IF NOT EXISTS reconciler_attempts_expiry ON reconciler_attempts (environment, expires_at);
CREATE TABLE IF NOT EXISTS reconciler_audit (
    id bigserial PRIMARY KEY,
    environment text NOT NULL,
    at timestamptz NOT NULL,
    kind text NOT NULL,
    actor text NOT NULL,
    address text NOT NULL,
    detail text NOT NULL
);
CREATE INDEX IF NOT EXISTS reconciler_audit_at ON reconciler_audit (environment, at);
CREATE TABLE IF NOT EXISTS reconciler_checks (
    environment text NOT NULL,
    address text NOT NULL,
    at timestamptz NOT NULL,
    outcome text NOT NULL,
    message text NOT NULL,
    PRIMARY KEY (environment, address)
);
"""

Work = Callable[[Any], Any]


class PostgresServiceStore:
    """Attempts and the audit log of one environment, in PostgreSQL; safe to share between threads."""

    def __init__(
        self,
        connect: Callable[[], Any],
        on_connection: Callable[[Any, Work], Any],
        environment: str,
        *,
        max_connections: int = 8,
    ) -> None:
        """`connect()`: a new autocommit connection (or a `StateError`); `on_connection(conn, work)`: `work(conn)`
        with the schema in place and database errors worded by the backend."""
        self._connect, self._on, self.environment = connect, on_connection, environment
        self._slots = threading.BoundedSemaphore(max_connections)
        self._idle: list[Any] = []
        self._guard = threading.Lock()
        weakref.finalize(self, _close_all, self._idle)  # a store dropped (or left at exit) closes its connections

    def _run(self, work: Work) -> Any:
        """`work(conn)` on a pooled connection; a connection that saw an error is closed, not reused."""
        with self._slots:
            with self._guard:
                conn = self._idle.pop() if self._idle else None
            if conn is None or conn.closed or conn.broken:
                conn = self._connect()
            try:
                result = self._on(conn, work)
            except BaseException:
                conn.close()
                raise
            with self._guard:
                self._idle.append(conn)
            return result

    def close(self) -> None:
        """Close the idle connections (those in use close when their caller is done with them)."""
        with self._guard:
            _close_all(self._idle)

    # -- attempts ----------------------------------------------------------------------------------------------

    def put_attempt(self, attempt: Attempt) -> None:
        row = (
            self.environment, check_attempt_key(attempt.key), attempt.address, attempt.pending_id,
            json.dumps(dict(attempt.blob)), utc(attempt.created_at), utc(attempt.expires_at),
        )

        def work(conn: Any) -> None:
            conn.execute(
                "INSERT INTO reconciler_attempts (environment, key, address, pending_id, blob, created_at, expires_at) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (environment, key) DO UPDATE SET "
                "address = EXCLUDED.address, pending_id = EXCLUDED.pending_id, blob = EXCLUDED.blob, "
                "created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at",
                row,
            )
            self._prune(conn, row[5])

        self._run(work)

    def take_attempt(self, key: str, now: dt.datetime) -> Attempt | None:
        if not is_attempt_key(key):
            return None
        row = self._run(
            lambda conn: conn.execute(
                "DELETE FROM reconciler_attempts WHERE environment = %s AND key = %s "
                "RETURNING address, pending_id, blob, created_at, expires_at",
                (self.environment, key),
            ).fetchone()
        )
        if row is None:
            return None
        blob = row[2] if isinstance(row[2], dict) else json.loads(row[2])
        attempt = Attempt(key, row[0], row[1], blob, utc(row[3]), utc(row[4]))
        return None if attempt.expired(utc(now)) else attempt

    def prune_attempts(self, now: dt.datetime) -> int:
        """Remove the attempts that expired before `now`; how many."""
        return self._run(lambda conn: self._prune(conn, utc(now)))  # type: ignore[no-any-return]

    def _prune(self, conn: Any, now: dt.datetime) -> int:
        cursor = conn.execute(
            "DELETE FROM reconciler_attempts WHERE environment = %s AND expires_at < %s", (self.environment, now)
        )
        return int(cursor.rowcount)

    # -- audit log ---------------------------------------------------------------------------------------------

    def append_audit(self, entry: AuditEntry) -> None:
        row = (self.environment, utc(entry.at), entry.kind, entry.actor, entry.address, entry.detail)
        self._run(
            lambda conn: conn.execute(
                "INSERT INTO reconciler_audit (environment, at, kind, actor, address, detail) "
                "VALUES (%s, %s, %s, %s, %s, %s)",
                row,
            )
        )

    def audit(self, since: dt.datetime | None = None) -> list[AuditEntry]:
        query = "SELECT at, kind, actor, address, detail FROM reconciler_audit WHERE environment = %s"
        params: tuple[Any, ...] = (self.environment,)
        if since is not None:
            query, params = query + " AND at >= %s", (*params, utc(since))
        rows = self._run(lambda conn: conn.execute(query + " ORDER BY at, id", params).fetchall())
        return [AuditEntry(utc(at), kind, actor, address, detail) for at, kind, actor, address, detail in rows]


    # -- checks ------------------------------------------------------------------------------------------------

    def record_checks(self, results: Sequence[CheckResult]) -> None:
        rows = [
            (self.environment, r.address, utc(r.at), r.outcome, r.message)
            for r in latest_checks(results).values()
        ]
        if not rows:
            return

        def work(conn: Any) -> None:
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO reconciler_checks (environment, address, at, outcome, message) "
                    "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (environment, address) DO UPDATE SET "
                    "at = excluded.at, outcome = excluded.outcome, message = excluded.message "
                    "WHERE reconciler_checks.at <= excluded.at",
                    rows,
                )

        self._run(work)

    def checks(self) -> dict[str, CheckResult]:
        rows = self._run(
            lambda conn: conn.execute(
                "SELECT address, at, outcome, message FROM reconciler_checks WHERE environment = %s",
                (self.environment,),
            ).fetchall()
        )
        return {
            address: CheckResult(address, utc(at), outcome, message)
            for address, at, outcome, message in rows
            if outcome in CHECK_OUTCOMES
        }


def _close_all(connections: list[Any]) -> None:
    while connections:
        connections.pop().close()
