"""Budgets for the fidelity test (HYPOTHESIS_PROFILE: `quick` in `make test`, `fidelity` in `make fidelity`), and
the summary line it prints: `fidelity: N histories, M steps, K divergences`."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field

from hypothesis import HealthCheck, settings

_COMMON = {
    "deadline": None,  # a step runs OAuth round trips over HTTP: its time says nothing about correctness
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    "stateful_step_count": 25,
}
# `quick`: a fixed set of histories (derandomized: the same on every run, no example database written).
settings.register_profile("quick", max_examples=30, derandomize=True, database=None, **_COMMON)
# `fidelity`: 1,000 new histories per run; failures are kept in .hypothesis/ and replayed first next time.
_FIDELITY = {**_COMMON, "stateful_step_count": 40}  # longer histories meet more interleavings
settings.register_profile(
    "fidelity", max_examples=int(os.environ.get("FIDELITY_HISTORIES", "1000")), **_FIDELITY
)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "quick")
settings.load_profile(PROFILE)


@dataclass
class Stats:
    histories: int = 0
    steps: int = 0
    divergences: int = 0
    failures: Counter[str] = field(
        default_factory=Counter
    )  # expected apply failures, by kind (FIDELITY_VERBOSE=1)
    applied: Counter[str] = field(default_factory=Counter)  # planned actions carried out, by action and mode


STATS = Stats()


def pytest_terminal_summary(terminalreporter) -> None:  # type: ignore[no-untyped-def]
    if not STATS.histories:
        return
    terminalreporter.write_line(
        f"fidelity: {STATS.histories} histories, {STATS.steps} steps, {STATS.divergences} divergences"
        f" (profile {PROFILE})"
    )
    if os.environ.get("FIDELITY_VERBOSE") == "1":
        for kind, count in [*STATS.applied.most_common(), *STATS.failures.most_common()]:
            terminalreporter.write_line(f"  {count:5d} x {kind}")
