"""Support for the crash, concurrency and provider-fault suites (tests/reliability/test_crash.py,
test_concurrency.py, test_faults.py).

`figures.add(area, **counts)` adds to one area's counts; at the end of the test session each area prints one line,
`reliability: <area>: k1 v1, k2 v2`, so that `make reliability` shows what was tried and what was found.
"""

from __future__ import annotations

import atexit
import sys
import threading


class Figures:
    """Counts per area, summed over the tests that ran, printed once when the session ends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._areas: dict[str, dict[str, int]] = {}
        self._registered = False

    def add(self, area: str, **counts: int) -> None:
        with self._lock:
            totals = self._areas.setdefault(area, {})
            for key, value in counts.items():
                totals[key] = totals.get(key, 0) + int(value)
            if not self._registered:
                atexit.register(self.report)
                self._registered = True

    def get(self, area: str) -> dict[str, int]:
        with self._lock:
            return dict(self._areas.get(area, {}))

    def lines(self) -> list[str]:
        with self._lock:
            return [
                f"reliability: {area}: " + ", ".join(f"{key.replace('_', ' ')} {value}" for key, value in counts.items())
                for area, counts in sorted(self._areas.items())
            ]

    def report(self) -> None:
        out = sys.__stdout__
        if out is None:
            return
        for line in self.lines():
            out.write(line + "\n")
        out.flush()


figures = Figures()
