"""What a forked helper worker needs of the process around it: how many CPUs it may use, and reaping the child.

Owns: those two answers, for the parse-ahead worker (`config/ahead.py`) and status's second core (`app/halves.py`).
Must not: import anything of reconciler's (both layers use it).
"""

from __future__ import annotations

import os

__all__ = ["cpus", "reap"]


def reap(pid: int) -> None:
    """Wait for the child `pid` (one already reaped is fine)."""
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def cpus() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
