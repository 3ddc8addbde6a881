"""Stop a state-lock holder at a chosen moment, to show what another writer sees then (no timing involved).

    pause_lock.py local DIR taken        # stops itself just after taking the lock, before anything else
    pause_lock.py postgres DSN releasing # holds the lock until stdin closes, then stops itself in the middle of
                                         # letting go (after its first release step)
    pause_lock.py local DIR try          # try the lock once, no timeout: prints "got" or the locked message

A holder stops itself with SIGSTOP (the test waits for that with waitpid(WUNTRACED) and goes on with SIGCONT),
then prints "held <pid> <lock id>" once it holds the lock, and holds it until stdin closes. The stopping points
are found by wrapping the lock primitives in this process only: `fcntl.flock` of the lock file (local), and the
advisory-lock statements (PostgreSQL) — whatever the backend does around them.
"""

import fcntl
import os
import signal
import sys
from pathlib import Path

from reconciler.errors import StateLockedError
from reconciler.state.local import LocalBackend
from reconciler.state.postgres import PostgresBackend

kind, where, point = sys.argv[1], sys.argv[2], sys.argv[3]
backend = LocalBackend(Path(where), "default") if kind == "local" else PostgresBackend(where, "default")
phase = {"releasing": False, "paused": False}


def pause() -> None:
    if not phase["paused"]:
        phase["paused"] = True
        os.kill(os.getpid(), signal.SIGSTOP)


def _is_lock_file(fd: int) -> bool:
    return os.readlink(f"/proc/self/fd/{fd}").endswith("/default.lock")


_flock, _ftruncate = fcntl.flock, os.ftruncate


def flock(fd: int, operation: int) -> None:
    _flock(fd, operation)
    if point == "taken" and operation & fcntl.LOCK_EX and _is_lock_file(fd):
        pause()


def ftruncate(fd: int, length: int) -> None:
    _ftruncate(fd, length)
    if point == "releasing" and phase["releasing"] and _is_lock_file(fd):
        pause()


class _Row:
    def __init__(self, row: tuple) -> None:  # type: ignore[type-arg]
        self.row = row

    def fetchone(self) -> tuple:  # type: ignore[type-arg]
        return self.row


def _wrap_psycopg() -> None:
    import psycopg

    execute = psycopg.Connection.execute

    def wrapped(self, query, params=None, **kwargs):  # type: ignore[no-untyped-def]
        cursor = execute(self, query, params, **kwargs)
        text = str(query)
        if point == "taken" and "pg_try_advisory_lock" in text:
            row = cursor.fetchone()
            if row[0]:
                pause()
            return _Row(row)
        if point == "releasing" and phase["releasing"] and ("pg_advisory_unlock" in text or "DELETE FROM" in text):
            pause()
        return cursor

    psycopg.Connection.execute = wrapped  # type: ignore[method-assign]


if point == "try":
    try:
        with backend.lock("plan"):
            print("got", flush=True)
    except StateLockedError as exc:
        print(exc.message, flush=True)
    sys.exit(0)

fcntl.flock, os.ftruncate = flock, ftruncate  # type: ignore[assignment]
_wrap_psycopg()
with backend.lock("apply") as info:
    print(f"held {os.getpid()} {info.id}", flush=True)
    sys.stdin.read()
    phase["releasing"] = True
