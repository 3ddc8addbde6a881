"""`reconciler serve` as operators run it: a child process on 127.0.0.1 with the secrets in its environment, its
JSON log lines on stderr kept in a file, stopped with SIGTERM; and raw HTTP requests for what httpx will not send.

Used by tests/reliability/test_service*.py with the `service_world` fixture's configuration and sandbox.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.service_support import ENV, ServiceWorld, links_in, tenants_yaml

START_PATIENCE = 60.0  # seconds a starting service may take to answer /healthz on a busy machine


def child_env() -> dict[str, str]:
    """The test process's environment without any reconciler or provider variable, plus the service's secrets."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("ADO_", "RECONCILER_", "ENTRA_"))}
    return {**keep, **ENV, "RECONCILER_CACHE_DIR": os.environ.get("RECONCILER_CACHE_DIR", "")}


def deferred(world: ServiceWorld, count: int, *, extra_service: str = "") -> dict[str, str]:
    """`count` tenants deferred by `apply --auth-mode defer`: address -> link."""
    world.write(tenants_yaml(count), extra_service=extra_service)
    result = world.cli("apply", "--auto-approve", "--auth-mode", "defer")
    assert result.exit_code == 3, result.stdout + result.stderr
    links = links_in(result.stdout, world.public_url)
    assert len(links) == count, result.stdout
    return links


@dataclass
class ServiceProcess:
    """One `reconciler serve` child; `logs` accumulates its stderr over every start (a whole run's logs)."""

    world: ServiceWorld
    logs: Path
    process: subprocess.Popen[bytes] | None = None
    exits: list[tuple[int, float]] = field(default_factory=list)  # (status, seconds from SIGTERM to exit)

    @property
    def url(self) -> str:
        return self.world.public_url

    def start(self) -> ServiceProcess:
        args = [sys.executable, "-m", "reconciler", "-C", str(self.world.directory), "serve",
                "--listen", f"127.0.0.1:{self.world.port}", "--lock-timeout", "30"]
        with self.logs.open("ab") as stderr:
            self.process = subprocess.Popen(args, env=child_env(), stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.monotonic() + START_PATIENCE
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"serve exited {self.process.returncode}: {self.logs.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=5).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError("serve did not answer /healthz")

    def terminate(self, patience: float = 30.0) -> tuple[int, float]:
        """SIGTERM, then wait (up to `patience`): the exit status and how long the exit took."""
        assert self.process is not None
        sent = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            status = self.process.wait(patience)
        except subprocess.TimeoutExpired:
            self.process.kill()
            status = self.process.wait()
        self.exits.append((status, time.monotonic() - sent))
        self.process = None
        return self.exits[-1]

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def lines(self) -> list[str]:
        """Every line of the child's stderr (over every start)."""
        text = self.logs.read_text(encoding="utf-8", errors="replace")
        return [line for line in text.splitlines() if line]

    def records(self) -> list[dict[str, object]]:
        """The log lines as JSON objects (each must be one)."""
        out = []
        for line in self.lines():
            try:
                out.append(json.loads(line))
            except ValueError:
                raise AssertionError(f"a log line is not JSON: {line[:300]!r}") from None
        return out


def raw_request(port: int, data: bytes, *, timeout: float = 30.0) -> bytes:
    """Send `data` on a fresh connection and read until the server closes it or answers one full response head."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
        except OSError:  # the server may answer and close before the whole request is sent
            pass
        received = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            received += chunk
            if _complete(received):
                break
        return received


def _complete(received: bytes) -> bool:
    head, sep, body = received.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip() or 0)
    return True


def status_of(response: bytes) -> int:
    """The status code of a raw response; 0 when the server closed the connection without answering."""
    if not response.startswith(b"HTTP/1."):
        return 0
    return int(response.split(b" ", 2)[1])
