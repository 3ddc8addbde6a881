"""Support for the service on PostgreSQL state under load: two instances of the service on one configuration (one
public URL), tenants signing in through either, and a CLI apply of an unrelated change running meanwhile.

"Behind one URL" without a proxy: every link carries the public URL (instance A's port), and so does the callback
the provider redirects to (the apps are registered for it). A scripted tenant stands in for the proxy: it sends
the link's request to instance A or B by rewriting the link's origin, and the provider's redirect back to A or B
by rewriting the callback's origin — each chosen apart, so a link opened on one instance is often completed on
the other. Attempts live in the shared store: either instance can finish what the other started.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from reconciler.sandbox.agent import answer_consent
from reconciler.state.postgres import PostgresBackend
from tests.service_support import ServiceWorld

PG_BACKEND = "backend:\n  type: postgres\n  dsn: ${env:RECONCILER_PG_DSN}\n"


def rebased(url: str, origin: str) -> str:
    """`url` with its scheme, host and port replaced by `origin`'s."""
    parts = urlsplit(url)
    return origin + url[len(f"{parts.scheme}://{parts.netloc}"):]


def sign_in_via(world: ServiceWorld, link: str, opener: str, receiver: str, client: httpx.Client) -> httpx.Response:
    """A tenant opens `link` on the instance at `opener`; the provider's redirect back (to the public URL) is
    delivered to the instance at `receiver`. The service's response to the callback."""
    opened = client.get(rebased(link, opener))
    assert opened.status_code == 302, (opened.status_code, opened.text[:300])
    callback = answer_consent(opened.headers["Location"], follow=False, client=client)
    assert callback.startswith(f"{world.public_url}/connector/callback?"), callback.split("?")[0]
    return client.get(rebased(callback, receiver))


def cli_process(world: ServiceWorld, *args: str) -> subprocess.Popen[str]:
    """The CLI in a process of its own (as a CI job runs it), on the world's configuration and environment."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECONCILER_", "ADO_", "ENTRA_"))}
    env = {**env, **world.env, "RECONCILER_CACHE_DIR": os.environ.get("RECONCILER_CACHE_DIR", "")}
    command = [sys.executable, "-m", "reconciler", "-C", str(world.directory), *args]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def lock_holders(dsn: str) -> int:
    """Sessions holding any advisory lock on the state's database now."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted").fetchone()
    return int(row[0]) if row else 0


def state_backend(dsn: str) -> PostgresBackend:
    return PostgresBackend(dsn, "default")


@dataclass
class Outcome:
    """What the tenants saw: status codes by address (a list: an address signed in twice shows twice)."""

    statuses: dict[str, list[int]]
    seconds: float
    by_instance: dict[tuple[str, str], int]


def sign_in_all(
    world: ServiceWorld, links: dict[str, str], origins: list[str], *, threads: int = 32, done: list[int] | None = None
) -> Outcome:
    """Every link signed in once, from `threads` tenants at a time; link i is opened on instance i mod k and its
    callback delivered to instance (i // k) mod k, so every pairing of opener and receiver occurs. `done[0]` counts
    the answers so far."""
    done = [0] if done is None else done
    local = threading.local()
    clients: list[httpx.Client] = []
    guard = threading.Lock()
    statuses: dict[str, list[int]] = {}
    pairs: dict[tuple[str, str], int] = {}

    def client() -> httpx.Client:
        if not hasattr(local, "client"):
            # Idle connections let go before the service's keep-alive timeout (5 s) closes them under a request.
            local.client = httpx.Client(timeout=180, limits=httpx.Limits(keepalive_expiry=1.0))
            with guard:
                clients.append(local.client)
        return local.client  # type: ignore[no-any-return]

    def one(item: tuple[int, tuple[str, str]]) -> None:
        index, (address, link) = item
        k = len(origins)
        opener, receiver = origins[index % k], origins[(index // k) % k]
        response = sign_in_via(world, link, opener, receiver, client())
        with guard:
            statuses.setdefault(address, []).append(response.status_code)
            pairs[(opener, receiver)] = pairs.get((opener, receiver), 0) + 1
            done[0] += 1

    started = time.perf_counter()
    try:
        with ThreadPoolExecutor(threads) as pool:
            for _ in pool.map(one, enumerate(sorted(links.items()))):
                pass
    finally:
        for each in clients:
            each.close()
    return Outcome(statuses, time.perf_counter() - started, pairs)


@contextmanager
def two_instances(world: ServiceWorld) -> Iterator[list[str]]:
    """Instance A on the public URL's port and instance B on another, both on the world's configuration: their
    origins."""
    from tests.sandbox_support import free_port

    first = world.start()
    second = world.start(free_port())
    try:
        yield [first.url, second.url]
    finally:
        world.stop()


@dataclass
class LoadFigures:
    completions: int
    lost: int
    twice: int
    locks_held: int
    seconds: float
    apply_seconds: float


def concurrent_completions(world: ServiceWorld, dsn: str, count: int, *, threads: int = 32) -> LoadFigures:
    """`count` deferred installations signed in through two instances while a CLI apply of an unrelated change
    (a new tenant, deferred) runs; every outcome checked against state, the sandbox's grants and the audit log."""
    from tests.service_support import links_in, tenants_yaml

    world.env["RECONCILER_PG_DSN"] = dsn
    world.write(tenants_yaml(count) + PG_BACKEND)
    deferred = world.cli("apply", "--auto-approve", "--auth-mode", "defer")
    assert deferred.exit_code == 3, deferred.stdout[-2000:] + deferred.stderr
    links = links_in(deferred.stdout, world.public_url)
    assert len(links) == count
    world.write(tenants_yaml(count) + tenants_yaml(1, prefix="us") + PG_BACKEND)
    with two_instances(world) as origins:
        outcome, applied = _sign_in_during_apply(world, links, origins, threads)
        late = links_in(applied[0], world.public_url)
        assert list(late) == ["installation.us-0.ado"], applied[0][-2000:]
        with httpx.Client(timeout=60) as client:
            assert sign_in_via(world, late["installation.us-0.ado"], origins[1], origins[0], client).status_code == 200
        held = lock_holders(dsn)  # both instances still running, idle
    return _checked(world, dsn, {**links, **late}, outcome, held, applied[1])


def _sign_in_during_apply(
    world: ServiceWorld, links: dict[str, str], origins: list[str], threads: int
) -> tuple[Outcome, tuple[str, float]]:
    """The sign-ins, with the CLI apply started once a quarter of them completed; (its stdout, its seconds)."""
    results: list[Outcome] = []
    done = [0]
    signing = threading.Thread(target=lambda: results.append(sign_in_all(world, links, origins, threads=threads, done=done)))
    signing.start()
    while done[0] < len(links) // 4 and signing.is_alive():
        time.sleep(0.05)
    started = time.perf_counter()
    apply = cli_process(world, "apply", "--auto-approve", "--auth-mode", "defer", "--lock-timeout", "120")
    during = signing.is_alive()  # three quarters of the sign-ins are still to come
    stdout, stderr = apply.communicate(timeout=300)
    seconds = time.perf_counter() - started
    signing.join()
    assert apply.returncode == 3, stdout[-2000:] + stderr[-2000:]
    assert during, "the sign-ins ended before the apply started: nothing ran at the same time"
    return results[0], (stdout, seconds)


def _checked(
    world: ServiceWorld, dsn: str, links: dict[str, str], outcome: Outcome, held: int, apply_seconds: float
) -> LoadFigures:
    """Each installation authorized exactly once: its tenant saw one 200, state records it authorized, the sandbox
    holds one grant per installation and the audit log one completion per address."""
    backend = state_backend(dsn)
    doc = backend.read()
    assert doc is not None
    authorized = {a for a in links if getattr(doc.resources.get(a), "status", None) == "authorized"}
    completed = [e.address for e in backend.service_store().audit() if e.kind == "authorization.completed"]
    grants = world.sandbox.provider.live_grants()
    assert len(outcome.by_instance) == 4, outcome.by_instance  # opened on A or B, each called back on A or B
    assert all(outcome.statuses.get(a) == [200] for a in links if not a.startswith("installation.us-")), outcome.statuses
    assert authorized == set(links) and all(doc.resources[a].pending is None for a in links)  # type: ignore[union-attr]
    assert sorted(completed) == sorted(links), "audit: completions missing or recorded twice"
    assert len(grants) == len(links)
    plan = world.cli("plan", "--detailed-exitcode")
    assert plan.exit_code == 0 and "No changes." in plan.stdout, plan.stdout[-2000:]
    assert held == 0 and lock_holders(dsn) == 0
    lost = len(set(links) - authorized)
    twice = len(completed) - len(set(completed)) + max(0, len(grants) - len(links))
    return LoadFigures(len(completed), lost, twice, held, outcome.seconds, apply_seconds)
