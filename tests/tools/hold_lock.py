"""Hold a state lock in its own process: `hold_lock.py local DIR` or `hold_lock.py postgres DSN`.

Prints "ready" once the lock is held, then holds it until stdin closes (or the process is killed)."""

import sys
from pathlib import Path

from reconciler.state.local import LocalBackend
from reconciler.state.postgres import PostgresBackend

kind, where = sys.argv[1], sys.argv[2]
backend = LocalBackend(Path(where), "default") if kind == "local" else PostgresBackend(where, "default")
with backend.lock("apply"):
    print("ready", flush=True)
    sys.stdin.read()
