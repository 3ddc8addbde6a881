"""The authorization service's rows of `make bench` (issue 15): the token API's rate and latency, and the rate at
which links are completed under load, on the local and the PostgreSQL backends.

  .venv/bin/python bench/run.py --only service-tokens,service-completions   # these rows alone

Each row runs `reconciler serve` as a process of its own (as it runs in production), on a configuration with a
`service:` section at the sandbox (which runs in the benchmark's process, like every row's). Installations are
deferred with `apply --auth-mode defer`; scripted tenants (the sandbox's consent agent, one HTTP client per
thread) open the links and land on the service's callback. The token API is then read by a small asyncio
HTTP/1.1 client over keep-alive connections (so that the client's own cost stays small beside the server's), for
installations whose tokens are not due for refresh. The configuration and the tenants are the service tests' own
(tests/service_support.py).
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Self

import httpx
from run_support import BenchError, Row, checked, error_row, log, run_once

if TYPE_CHECKING:
    from run import Bench

TOKEN_INSTALLATIONS = 100
TOKEN_CONNECTIONS = 32
TOKEN_SECONDS = 10.0
TARGET_RPS, TARGET_P99 = 1000.0, 0.050
TENANT_THREADS = 24  # concurrent tenants signing in (the issue: 16 to 32)


# -- the service and its world -------------------------------------------------------------------------------------


class Served:
    """A configuration directory for `count` tenants at the bench's sandbox, its installations deferred, and
    `reconciler serve` on it."""

    def __init__(self, bench: Bench, name: str, count: int, backend: str = "") -> None:
        from tests.sandbox_support import ENTRA_ID, ENTRA_SECRET, LEGACY_ID, LEGACY_SECRET, free_port
        from tests.service_support import ENV, links_in, service_config, tenants_yaml

        self.bench, self.port = bench, free_port()
        self.public_url = f"http://127.0.0.1:{self.port}"
        self.directory = bench.work / name
        self.directory.mkdir(parents=True, exist_ok=True)
        self.env = {**bench.env, **ENV, **({"RECONCILER_PG_DSN": backend} if backend else {})}
        provider = bench.sandbox.provider
        callback = [f"{self.public_url}/connector/callback"]
        for client_id, secret, flavour in ((LEGACY_ID, LEGACY_SECRET, "azure-devops-oauth"), (ENTRA_ID, ENTRA_SECRET, "entra-id")):
            apps = provider.apps
            uris = [*(apps[client_id].redirect_uris if client_id in apps else []), *callback]
            provider.register_app({"client_id": client_id, "client_secret": secret, "flavour": flavour, "redirect_uris": uris})
        provider.register_org("acme-org", ["Platform", "Web"])
        pg = "backend:\n  type: postgres\n  dsn: ${env:RECONCILER_PG_DSN}\n" if backend else ""
        text = service_config(bench.url, self.public_url, tenants_yaml(count, prefix=name)) + pg
        (self.directory / "reconciler.yaml").write_text(text)
        deferred = run_once([*bench.reconciler, "-C", str(self.directory), "apply", "--auto-approve", "--auth-mode", "defer"],
                            env=self.env, timeout=600)
        if deferred.rc != 3:
            checked(deferred, f"apply --auth-mode defer of {count} installations")
            raise BenchError(f"apply --auth-mode defer: exit code {deferred.rc}, expected 3")
        self.links = links_in(deferred.stdout, self.public_url)
        if len(self.links) != count:
            raise BenchError(f"apply --auth-mode defer printed {len(self.links)} links, expected {count}")
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        command = [*self.bench.reconciler, "-C", str(self.directory), "serve", "--listen", f"127.0.0.1:{self.port}"]
        self.log = open(self.directory / "serve.log", "wb")
        self.process = subprocess.Popen(command, env=self.env, stdout=subprocess.DEVNULL, stderr=self.log)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if httpx.get(f"{self.public_url}/healthz", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.__exit__()
        raise BenchError(f"reconciler serve did not become healthy (see {self.directory / 'serve.log'})")

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()

    def cpu(self) -> float:
        """CPU seconds the service process has used so far."""
        assert self.process is not None
        with open(f"/proc/{self.process.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def sign_in_all(self, threads: int) -> float:
        """Every link signed in by `threads` tenants at a time; the seconds it took. Every sign-in must succeed."""
        from reconciler.sandbox.agent import answer_consent

        local = threading.local()
        clients: list[httpx.Client] = []

        def one(link: str) -> int:
            if not hasattr(local, "client"):
                local.client = httpx.Client(timeout=120)
                clients.append(local.client)
            opened = local.client.get(link)
            if opened.status_code != 302:
                return opened.status_code
            return local.client.get(answer_consent(opened.headers["Location"], follow=False, client=local.client)).status_code

        started = time.perf_counter()
        try:
            with ThreadPoolExecutor(threads) as pool:
                statuses = list(pool.map(one, self.links.values()))
        finally:
            for client in clients:
                client.close()
        seconds = time.perf_counter() - started
        failed = [s for s in statuses if s != 200]
        if failed:
            raise BenchError(f"{len(failed)} of {len(statuses)} sign-ins failed (statuses {sorted(set(failed))})")
        return seconds


# -- completions under load ----------------------------------------------------------------------------------------


def service_completions(bench: Bench) -> None:
    count = max(10, round(300 * bench.args.scale))
    for label, backend in (("local", None), ("postgres", "postgres")):
        name = f"service: {count:,} links completed, {TENANT_THREADS} tenants at a time ({label} state)"
        try:
            rate, note = _completion_rate(bench, label, count, backend)
        except (BenchError, OSError, RuntimeError) as exc:
            bench.rows.append(error_row(name, "—", exc))
            continue
        bench.rows.append(Row(name, f"{rate:,.0f} completions/s", notes=[note]))


def _completion_rate(bench: Bench, label: str, count: int, backend: str | None) -> tuple[float, str]:
    server = None
    dsn = ""
    if backend:
        from tests.postgres_server import PostgresServer
        from tests.sandbox_support import free_port

        server = PostgresServer(free_port()).start()
        dsn = server.dsn
    try:
        served = Served(bench, f"c{label}", count, dsn)
        with served:
            cpu = served.cpu()
            seconds = served.sign_in_all(TENANT_THREADS)
            cpu = served.cpu() - cpu
    finally:
        if server is not None:
            server.stop()
    rate = count / seconds
    log(f"  {label}: {count} completions in {seconds:.2f} s: {rate:.1f}/s; service CPU {cpu / count * 1000:.1f} ms each")
    return rate, (f"{label}: {count:,} links of `apply --auth-mode defer`, each opened (302 to the sandbox), consented "
                  f"and called back (200) by {TENANT_THREADS} scripted tenants at a time, {seconds:.1f} s in all; the "
                  f"service used {cpu / count * 1000:.1f} ms of CPU per completion (the sandbox and the tenants run in "
                  "the benchmark's process, on the same 2 cores)")


# -- the token API -------------------------------------------------------------------------------------------------


def service_tokens(bench: Bench) -> None:
    name = (f"service: token API, {TOKEN_INSTALLATIONS} installations, {TOKEN_CONNECTIONS} keep-alive connections "
            "(local state)")
    target = f">= {TARGET_RPS:,.0f} requests/s, p99 <= {TARGET_P99 * 1000:.0f} ms"
    try:
        served = Served(bench, "tokens", TOKEN_INSTALLATIONS)
        with served:
            served.sign_in_all(TENANT_THREADS)
            cpu = served.cpu()
            latencies, seconds, errors = asyncio.run(_load(served, TOKEN_SECONDS))
            cpu = served.cpu() - cpu
    except (BenchError, OSError, RuntimeError) as exc:
        bench.rows.append(error_row(name, target, exc))
        return
    if errors:
        bench.rows.append(error_row(name, target, BenchError(f"{errors} token reads did not answer 200")))
        return
    rps = len(latencies) / seconds
    cuts = statistics.quantiles(latencies, n=100)
    p50, p99 = cuts[49], cuts[98]
    log(f"  token API: {len(latencies):,} reads in {seconds:.1f} s: {rps:,.0f}/s, p50 {p50 * 1000:.1f} ms, "
        f"p99 {p99 * 1000:.1f} ms; service CPU {cpu / len(latencies) * 1e6:.0f} us per read")
    bench.rows.append(Row(
        name, f"{rps:,.0f} requests/s, p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms", "—",
        f"{rps / TARGET_RPS:.2f}x the rate, p99 {p99 / TARGET_P99:.2f}x the bound", target,
        "PASS" if rps >= TARGET_RPS and p99 <= TARGET_P99 else "FAIL",
        [(f"`reconciler serve` in its own process; {len(latencies):,} reads of `GET /v1/installations/{{address}}/token` "
          f"over {seconds:.0f} s after a 1 s warm-up, round-robin over {TOKEN_INSTALLATIONS} installations signed in "
          "through their links just before (tokens not due for refresh), every answer 200 with an access token; "
          "each read audited"),
         (f"client: asyncio, HTTP/1.1, {TOKEN_CONNECTIONS} connections each sending its next request when the last "
          f"answered (closed loop); service CPU {cpu / len(latencies) * 1e6:.0f} us per read")],
    ))


async def _load(served: Served, duration: float) -> tuple[list[float], float, int]:
    """Reads for `duration` seconds (after a second of warm-up): every latency, the seconds measured, the errors."""
    from tests.service_support import API_KEY_ALL

    paths = [f"/v1/installations/{address}/token" for address in sorted(served.links)]
    latencies: list[float] = []
    errors = [0]
    start = time.perf_counter() + 1.0
    end = start + duration

    async def connection(offset: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        index = offset
        try:
            while (now := time.perf_counter()) < end:
                path = paths[index % len(paths)]
                index += 1
                writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {API_KEY_ALL}\r\n\r\n".encode())
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
                body = await reader.readexactly(length)
                done = time.perf_counter()
                if now >= start:
                    latencies.append(done - now)
                    if not head.startswith(b"HTTP/1.1 200") or b'"access_token"' not in body:
                        errors[0] += 1
        finally:
            writer.close()

    await asyncio.gather(*(connection(i * 3) for i in range(TOKEN_CONNECTIONS)))
    return latencies, time.perf_counter() - start if latencies else duration, errors[0]


if str(Path(__file__).resolve().parent.parent) not in sys.path:  # tests.* (the service tests' configuration)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
