"""Sealed credentials in PostgreSQL: one row per (environment, address) in `reconciler_credentials` (the table
`postgres` creates with the others), compare-and-swap on `generation`.

Owns: those rows, read and written through the backend's connection and error mapping (`run`). Must not: open or seal a
blob, or put a DSN or the driver's text in a message (the backend's `_run` words database errors).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from reconciler.errors import StaleStateError
from reconciler.tokens.model import SealedRecord
from reconciler.tokens.store import WholeRecordWrites

__all__ = ["PostgresCredentialStore"]


class PostgresCredentialStore(WholeRecordWrites):
    """Sealed credential rows, one per (environment, address), compare-and-swap on generation."""

    def __init__(self, run: Callable[[Callable[[Any], Any]], Any], environment: str) -> None:
        """`run(work)`: `work(connection)` on the backend's connection, its database errors worded by the backend."""
        self._run, self.environment = run, environment

    def get(self, address: str) -> SealedRecord | None:
        def work(conn: Any) -> SealedRecord | None:
            row = conn.execute(
                "SELECT generation, tokens, pending, staged FROM reconciler_credentials "
                "WHERE environment = %s AND address = %s",
                (self.environment, address),
            ).fetchone()
            return SealedRecord(generation=row[0], tokens=row[1], pending=row[2], staged=row[3]) if row else None

        return self._run(work)  # type: ignore[no-any-return]

    def put_record(self, address: str, record: SealedRecord, *, expected_generation: int | None) -> None:
        """Store a record as it is (for `state push`), if the stored generation is still `expected_generation`
        (None: no record yet)."""

        def work(conn: Any) -> None:
            blobs = tuple(json.dumps(b) if b else None for b in (record.tokens, record.pending, record.staged))
            if expected_generation is None:
                cursor = conn.execute(
                    "INSERT INTO reconciler_credentials (environment, address, generation, tokens, pending, staged) "
                    "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    (self.environment, address, record.generation, *blobs),
                )
            else:
                cursor = conn.execute(
                    "UPDATE reconciler_credentials SET generation = %s, tokens = %s, pending = %s, staged = %s "
                    "WHERE environment = %s AND address = %s AND generation = %s",
                    (record.generation, *blobs, self.environment, address, expected_generation),
                )
            if cursor.rowcount != 1:
                raise StaleStateError(f"credentials of {address} changed meanwhile")

        self._run(work)

    def delete(self, address: str) -> None:
        self._run(
            lambda conn: conn.execute(
                "DELETE FROM reconciler_credentials WHERE environment = %s AND address = %s", (self.environment, address)
            )
        )

    def addresses(self) -> list[str]:
        rows = self._run(
            lambda conn: conn.execute(
                "SELECT address FROM reconciler_credentials WHERE environment = %s ORDER BY address", (self.environment,)
            ).fetchall()
        )
        return [row[0] for row in rows]
