"""The reliability suite's figures: one line per area at the end of the run, each with its goals.

Every area (bad input, secrets, OAuth attacks, fuzzing, crashes, concurrency, provider faults, the service, ...)
reports what it tried and what it found through the session-wide `figures` fixture:

    def test_something(figures):
        figures.goal("crash", lost_steps=0)              # optional: the value each count must end at
        ...
        figures.add("crash", kill_points=1, lost_steps=0)  # counts are summed over the session

At the end of the session pytest prints, after its own summary, one line per area in the order areas first
reported, counts in the order they were first given (underscores read as spaces):

    reliability: crash: 40 kill points, 0 lost steps — at goal

A count that ends at another value than its goal turns the line into "GOAL MISSED (...)" and fails the run,
even when every test passed. `figures.set(area, **values)` replaces values instead of adding to them (for a figure
that is not a sum, such as how many distinct secrets were searched for).

Review cases: a test marked `@pytest.mark.finding(N)` reproduces finding N of a security review (it failed before
the fix). Each one counts in the "review" area — the findings covered, the cases run, and the cases still open
(failing), whose goal is 0:

    reliability: review: 12 findings, 31 cases, 0 open — at goal

Markers: `slow` marks the full budgets (10,000 fuzz examples, ...), run by `make reliability` and deselected by
default; `quick` marks the reduced stand-ins that `make test` runs instead, deselected by `make reliability`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest


@dataclass
class Figures:
    """Counts per area, summed over the session, and the value each count must end at."""

    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    goals: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, area: str, **counts: int) -> None:
        """Add `counts` to the area's running totals."""
        totals = self.counts.setdefault(area, {})
        for name, value in counts.items():
            totals[name] = totals.get(name, 0) + value

    def get(self, area: str) -> dict[str, int]:
        """The area's counts so far."""
        return dict(self.counts.get(area, {}))

    def set(self, area: str, **values: int) -> None:
        """Replace the area's values (figures that are not sums)."""
        self.counts.setdefault(area, {}).update(values)

    def goal(self, area: str, **targets: int) -> None:
        """The values these counts must end at (checked at the end of the session)."""
        self.goals.setdefault(area, {}).update(targets)

    def missed(self, area: str) -> list[str]:
        totals = self.counts.get(area, {})
        return [
            f"{_words(name)} {totals.get(name, 0)}, goal {target}"
            for name, target in self.goals.get(area, {}).items()
            if totals.get(name, 0) != target
        ]

    def lines(self) -> list[str]:
        out = []
        for area, totals in self.counts.items():
            text = ", ".join(f"{value} {_words(name)}" for name, value in totals.items())
            missed = self.missed(area)
            verdict = f"GOAL MISSED ({'; '.join(missed)})" if missed else "at goal" if area in self.goals else ""
            out.append(f"reliability: {area}: {text}" + (f" — {verdict}" if verdict else ""))
        return out


def _words(name: str) -> str:
    return name.replace("_", " ")


_FIGURES = pytest.StashKey[Figures]()
FIGURES = Figures()  # also importable by support modules that count outside a fixture


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_FIGURES] = FIGURES
    config.addinivalue_line("markers", "finding(n): reproduces finding n of a security review (the review area)")


_PASSED = pytest.StashKey[bool]()
_FINDINGS: set[int] = set()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    report = yield
    if report.when == "call":
        item.stash[_PASSED] = report.passed
    return report


@pytest.fixture(autouse=True)
def _review_case(request: pytest.FixtureRequest) -> Iterator[None]:
    """Counts a `finding`-marked test in the "review" area: a case, and an open one unless it passed."""
    marker = request.node.get_closest_marker("finding")
    yield
    if marker is None:
        return
    _FINDINGS.add(int(marker.args[0]))
    FIGURES.goal("review", open=0)
    FIGURES.set("review", findings=len(_FINDINGS))
    FIGURES.add("review", cases=1, open=int(not request.node.stash.get(_PASSED, False)))


@pytest.fixture(scope="session")
def figures(request: pytest.FixtureRequest) -> Figures:
    """The session's figures collector (see the module docstring)."""
    return request.config.stash[_FIGURES]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    found = session.config.stash.get(_FIGURES, None)
    if found is not None and exitstatus == 0 and any(found.missed(area) for area in found.counts):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:  # type: ignore[no-untyped-def]
    found = config.stash.get(_FIGURES, None)
    if found is None or not found.counts:
        return
    terminalreporter.section("reliability figures")
    for line in found.lines():
        terminalreporter.write_line(line)
