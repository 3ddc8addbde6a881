"""One concurrent state writer, run as its own process by tests/reliability/test_concurrency.py.

    writer_b.py local DIR NAME ROUNDS LOCK_TIMEOUT HOLD [stale]
    writer_b.py postgres DSN NAME ROUNDS LOCK_TIMEOUT HOLD [stale]

Each round takes the state lock (waiting up to LOCK_TIMEOUT seconds), reads the document, adds its own record
`partner.NAME-<round>`, holds the lock HOLD seconds more, and writes based on what it read. With `stale` it reads
*before* taking the lock, says so ("read") and waits for a line on stdin before it goes on (a write based on a
stale read, which the backend must refuse when the serial moved meanwhile).
One JSON line per round on stdout: what it read and wrote, and when it held the lock (CLOCK_MONOTONIC, which is
one clock for every process on the machine), or the error that stopped it.
"""

import json
import sys
import time
from pathlib import Path

from reconciler.errors import StaleStateError, StateLockedError
from reconciler.state.local import LocalBackend
from reconciler.state.model import PartnerRecord
from reconciler.state.postgres import PostgresBackend

kind, where, name = sys.argv[1], sys.argv[2], sys.argv[3]
rounds, lock_timeout, hold = int(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6])
stale = sys.argv[7:] == ["stale"]
backend = LocalBackend(Path(where), "default") if kind == "local" else PostgresBackend(where, "default")


def record(round_: int) -> PartnerRecord:
    return PartnerRecord(
        name=f"{name}-{round_}",
        connector="microsoft-azure-devops",
        auth="azure-devops-oauth",
        client_id=f"client-{name}-{round_}",
        redirect_uri="https://x.example/connector/callback",
        authorize_url="https://a.example/authorize",
        token_url="https://a.example/token",
        api_url="https://dev.azure.com",
    )


def emit(**event: object) -> None:
    print(json.dumps({"writer": name, **event}), flush=True)


for round_ in range(rounds):
    started = time.monotonic()
    try:
        early = backend.read() if stale else None
        if stale:  # say what was read, and go on when told (the test has others write meanwhile)
            emit(event="read", round=round_, serial=early.serial if early else None)
            sys.stdin.readline()
        with backend.lock(f"writer {name}", timeout=lock_timeout) as info:
            acquired = time.monotonic()
            doc = early if stale else backend.read()
            assert doc is not None, "the test creates the state first"
            new = doc.with_record(f"partner.{name}-{round_}", record(round_))
            time.sleep(hold)
            written = backend.write(new, expected_serial=doc.serial, changed={f"partner.{name}-{round_}"})
            emit(
                event="write",
                round=round_,
                read=doc.serial,
                wrote=written.serial,
                acquired=acquired,
                released=time.monotonic(),
                lock_id=info.id,
            )
    except StateLockedError as exc:
        emit(event="locked", round=round_, message=str(exc), waited=time.monotonic() - started)
    except StaleStateError as exc:
        emit(event="stale", round=round_, message=str(exc), read=early.serial if early else None)
