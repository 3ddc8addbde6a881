"""Budgets for the fidelity tests (HYPOTHESIS_PROFILE: `quick` in `make test`, `fidelity` in `make fidelity`), shared
by the local platform's histories and the Cyclr platform's (a third), and the summary line they print:
`fidelity: N histories, M steps, K divergences`."""

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
CYCLR_SHARE = 1 / 3  # of the profile's histories, run on the Cyclr platform (tests/fidelity/test_cyclr_fidelity.py)


def _share() -> tuple[int, int]:
    """(local, cyclr) histories: the profile's budget, split."""
    total = settings().max_examples
    cyclr = max(1, round(total * CYCLR_SHARE))
    return max(1, total - cyclr), cyclr


def local_settings() -> settings:
    return settings(settings(), max_examples=_share()[0])


def cyclr_settings() -> settings:
    return settings(settings(), max_examples=_share()[1])


@dataclass
class Stats:
    histories: int = 0
    steps: int = 0
    divergences: int = 0
    failures: Counter[str] = field(
        default_factory=Counter
    )  # expected apply failures, by kind (FIDELITY_VERBOSE=1)
    applied: Counter[str] = field(default_factory=Counter)  # planned actions carried out, by action and mode
    by_platform: Counter[str] = field(default_factory=Counter)  # histories run to their end, by platform
    campaigns: Counter[str] = field(default_factory=Counter)  # migration waves and their outcomes (migration.py)


STATS = Stats()


def pytest_terminal_summary(terminalreporter) -> None:  # type: ignore[no-untyped-def]
    if not STATS.histories:
        return
    terminalreporter.write_line(
        f"fidelity: {STATS.histories} histories, {STATS.steps} steps, {STATS.divergences} divergences"
        f" (profile {PROFILE}; local {STATS.by_platform['local']}, cyclr {STATS.by_platform['cyclr']})"
    )
    if os.environ.get("FIDELITY_VERBOSE") == "1":
        for kind, count in [*STATS.applied.most_common(), *STATS.failures.most_common(), *STATS.campaigns.most_common()]:
            terminalreporter.write_line(f"  {count:5d} x {kind}")
