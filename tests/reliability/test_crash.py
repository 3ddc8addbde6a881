"""Crash safety: kill -9 an `apply` of many installations against the sandbox at seeded random points, and a full
disk during state writes.

After each kill: state loads; no installation is recorded as authorized without tokens that open under the state
key and still work at the provider; every authorization the run reported complete is in state; `plan` shows exactly
the remaining work; a second apply finishes it. The fast variant (3 trials of 20) runs in `make test`; the full one
(20 trials of 200) is marked slow and runs in `make reliability`.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.sandbox import SandboxServer
from reconciler.state import LocalBackend
from tests.conftest import run
from tests.reliability.support_b import (
    ApplyRun,
    addresses_of,
    figures,
    many_installations,
    recorded_tokens,
    subprocess_env,
    works_at,
)
from tests.sandbox_support import ENV, config_text, free_port, register

AREA = "crash"
SEED = 20240517


@pytest.fixture(scope="module")
def provider() -> Iterator[tuple[SandboxServer, int]]:
    """One sandbox for every trial of the module, and the callback port its apps are registered with."""
    with SandboxServer() as server:
        port = free_port()
        register(server, port)
        yield server, port


def _workspace(root: Path, provider: tuple[SandboxServer, int], count: int) -> Path:
    server, port = provider
    root.mkdir(parents=True)
    (root / "reconciler.yaml").write_text(config_text(server.url, port, many_installations(count)))
    return root


def _invariants(config: Path, server: SandboxServer, declared: set[str], reported: set[str]) -> list[str]:
    """What is wrong with the state a killed run left (empty: nothing)."""
    problems: list[str] = []
    try:
        doc = LocalBackend(config / "state", "default").read()
    except Exception as exc:  # noqa: BLE001 - reported as the finding
        return [f"state does not load: {exc}"]
    listed = run(["-C", str(config), "state", "list"])
    if listed.exit_code != 0:
        problems.append(f"state list failed: {listed.stderr.strip()}")
    try:
        tokens = recorded_tokens(config / "state", {})
    except Exception as exc:  # noqa: BLE001
        return [*problems, f"sealed credentials do not open: {exc}"]
    problems += [f"{a} is authorized without working tokens ({t})" for a, t in tokens.items() if not works_at(server.provider, t)]
    recorded = set(doc.resources) if doc else set()
    authorized = set(tokens)
    problems += [f"{a} was reported complete but is not in state" for a in sorted(reported - authorized - recorded)]
    problems += [f"{a} was reported authorized but is not" for a in sorted((reported & declared) - authorized)]
    plan = run(["-C", str(config), "plan", "--format", "json", "--detailed-exitcode"], ENV)
    if plan.exit_code not in (0, 2):
        return [*problems, f"plan failed: {plan.stderr.strip()}"]
    changes = {c["address"]: c["action"] for c in json.loads(plan.stdout)["changes"] if c["action"] != "noop"}
    remaining = (declared - authorized) | ({"partner.legacy"} - recorded)
    if set(changes) != remaining or set(changes.values()) - {"create"}:
        problems.append(f"plan shows {len(changes)} changes, expected the {len(remaining)} not done")
    if plan.exit_code != (2 if remaining else 0):
        problems.append(f"plan --detailed-exitcode exited {plan.exit_code}")
    return problems


def _trial(root: Path, provider: tuple[SandboxServer, int], count: int, rng: random.Random) -> dict[str, int]:
    """One apply of `count` installations killed after a seeded random number of authorizations plus a seeded random
    fraction of a step (so that kills land anywhere in a step: consent, exchange, check, sealing, the state write);
    then the invariants, and a second apply that must finish the work."""
    server, _ = provider
    config = _workspace(root, provider, count)
    declared = addresses_of(count)
    env = subprocess_env(**ENV)
    target = rng.randrange(count)
    first = ApplyRun(config, env)
    assert first.wait_for(target, timeout=600) or target == 0, first.stderr[-5:]
    step = (time.monotonic() - first.started) / target if target else 1.0
    time.sleep(rng.uniform(0, 1.5 * step))
    killed = first.kill()
    first.finish(60)
    reported = set(first.completed)
    problems = _invariants(config, server, declared, reported)
    second = ApplyRun(config, env)
    code = second.finish(900)
    if code != 0:
        problems.append(f"the second apply exited {code}: {second.stderr[-3:]}")
    final = recorded_tokens(config / "state", {})
    if set(final) != declared or not all(works_at(server.provider, t) for t in final.values()):
        problems.append(f"after the second apply {len(final)} of {count} are authorized with working tokens")
    if run(["-C", str(config), "plan", "--detailed-exitcode"], ENV).exit_code != 0:
        problems.append("plan after the second apply is not empty")
    assert not problems, f"kill after {len(reported)} reported steps: " + "; ".join(problems[:5])
    return {"kills": int(killed), "reported_complete": len([a for a in reported if a in declared])}


def _trials(tmp_path: Path, provider: tuple[SandboxServer, int], trials: int, count: int) -> None:
    rng = random.Random(SEED)
    for number in range(trials):
        failures = 1
        try:
            counts = _trial(tmp_path / f"trial-{number:02d}", provider, count, rng)
            failures = 0
        finally:
            figures.add(AREA, trials=1, installations=count, failures_found=failures, **(counts if not failures else {}))
        assert counts["kills"] == 1 or number > 0  # a run that finished before its kill proves less: not the first


def test_kill_9_during_apply_fast(tmp_path: Path, provider) -> None:  # type: ignore[no-untyped-def]
    """3 seeded kill -9 trials of an apply of 20 installations: every invariant holds after each kill."""
    _trials(tmp_path, provider, trials=3, count=20)


@pytest.mark.slow
def test_kill_9_during_apply_of_200(tmp_path: Path, provider) -> None:  # type: ignore[no-untyped-def]
    """20 seeded kill -9 trials of an apply of 200 installations: every invariant holds after each kill."""
    _trials(tmp_path, provider, trials=20, count=200)
