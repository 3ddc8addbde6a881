"""Support for the crash, concurrency and provider-fault suites (tests/reliability/test_crash.py,
test_concurrency.py, test_faults.py).

`figures` is the suite's collector (see tests/reliability/conftest.py); `@counted(area)` counts a test as a case,
and as a failure found when it fails (goal: none).
"""

from __future__ import annotations

import functools
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.reliability.conftest import FIGURES

# The session's collector (tests/reliability/conftest.py): the same object the `figures` fixture hands out.
figures = FIGURES
for _area in ("crash", "concurrency", "faults"):  # what each of these areas must never find
    figures.goal(
        _area,
        failures_found=0,
        secrets_found=0,
        lost_updates=0,
        overlapping_holders=0,
        stale_writes_accepted=0,
        state_bytes_changed=0,
        state_files_changed=0,
    )


def counted(area: str):  # type: ignore[no-untyped-def]
    """Count the decorated test as one case of `area`, and as a failure found when it fails."""

    def wrap(test):  # type: ignore[no-untyped-def]
        @functools.wraps(test)
        def run(*args, **kwargs):  # type: ignore[no-untyped-def]
            try:
                test(*args, **kwargs)
            except BaseException:
                figures.goal(area, failures_found=0)
                figures.add(area, cases=1, failures_found=1)
                raise
            figures.goal(area, failures_found=0)
            figures.add(area, cases=1, failures_found=0)

        return run

    return wrap


def recorded_tokens(state_dir, environ):  # type: ignore[no-untyped-def]
    """Every installation state records as authorized, with the tokens its sealed credentials open to under the
    state key (key file beside the state, or RECONCILER_STATE_KEY in `environ`) — or the error opening them."""
    from reconciler.app.keys import open_key
    from reconciler.errors import ReconcilerError
    from reconciler.state.local import LocalBackend
    from reconciler.state.model import InstallationRecord
    from reconciler.tokens.vault import Vault

    backend = LocalBackend(state_dir, "default")
    doc = backend.read()
    if doc is None:
        return {}
    authorized = {
        address: record
        for address, record in doc.resources.items()
        if isinstance(record, InstallationRecord) and record.status == "authorized"
    }
    if not authorized:
        return {}
    key = open_key(backend, state_dir, environ, "default", lambda source: None, create=False)
    vault = Vault(backend.credential_store(), key, lineage=doc.lineage, environment="default")
    found = {}
    for address, record in authorized.items():
        try:
            sealed = vault.record(address)
            if sealed is None:
                raise ReconcilerError("no sealed credentials")
            found[address] = vault.current_tokens(address, record.client_id, sealed)
        except ReconcilerError as exc:
            found[address] = exc
    return found


def works_at(provider, tokens) -> bool:  # type: ignore[no-untyped-def]
    """Whether the sandbox still honours these tokens: the refresh token of a live grant (or, without one, the
    access token)."""
    from reconciler.tokens.model import TokenSet

    if not isinstance(tokens, TokenSet):
        return False
    with provider.lock:
        if tokens.refresh_token is not None:
            grant = provider.by_refresh.get(tokens.refresh_token.get_secret_value())
        else:
            grant = provider.by_access.get(tokens.access_token.get_secret_value())
        return grant is not None and not grant.revoked


# -- crash trials: a `reconciler apply` process with a scripted user, killed at a chosen moment ------------------

COMPLETED = re.compile(r"^((?:installation|partner)\.\S+): (?:authorized \(granted|created$|updated|deleted)")
ROOT = Path(__file__).resolve().parents[2]


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for a reconciler subprocess: this one without any RECONCILER_/ADO_/ENTRA_ settings (the parse
    cache directory kept), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ADO_", "RECONCILER_", "ENTRA_"))}
    env["RECONCILER_CACHE_DIR"] = os.environ["RECONCILER_CACHE_DIR"]
    env.update(extra)
    return env


class ApplyRun:
    """`reconciler apply --auth-mode browser` in its own process group. The browser (`BROWSER=true`) opens nothing:
    a scripted user reads each authorization link the run prints and answers the sandbox consent page, which
    redirects to the run's loopback listener — the path a person with a browser takes, without a process per
    authorization. Progress lines tell which steps the run reported complete, and when."""

    def __init__(self, config_dir: Path, env: dict[str, str], *extra: str) -> None:
        command = [
            sys.executable,
            "-m",
            "reconciler",
            "-C",
            str(config_dir),
            "apply",
            "--auto-approve",
            "--auth-mode",
            "browser",
            "--auth-timeout",
            "30",
            *extra,
        ]
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**env, "BROWSER": "true"},
            cwd=ROOT,
            start_new_session=True,
        )
        self.completed: list[str] = []
        self.stderr: list[str] = []
        self.stdout = ""
        self.changed = threading.Condition()
        self.done = False
        self.threads = [
            threading.Thread(target=self._user, daemon=True),
            threading.Thread(target=self._drain, daemon=True),
        ]
        for thread in self.threads:
            thread.start()

    def _user(self) -> None:
        import httpx

        from reconciler.sandbox.agent import answer_consent

        with httpx.Client(timeout=10, follow_redirects=False) as client:
            self._read(client, answer_consent)
        with self.changed:
            self.done = True
            self.changed.notify_all()

    def _read(self, client, answer_consent) -> None:  # type: ignore[no-untyped-def]
        assert self.process.stderr is not None
        link_next = False
        for line in self.process.stderr:
            line = line.rstrip("\n")
            self.stderr.append(line)
            if line.startswith("Authorize "):
                link_next = True
            elif link_next and line.startswith("  http"):
                link_next = False
                try:
                    answer_consent(line.strip(), client=client)
                except Exception:  # noqa: BLE001, S110 - the run was killed while the user answered
                    pass
            match = COMPLETED.match(line)
            if match:
                with self.changed:
                    self.completed.append(match.group(1))
                    self.changed.notify_all()

    def _drain(self) -> None:
        assert self.process.stdout is not None
        self.stdout = self.process.stdout.read()

    def installations_done(self) -> int:
        return sum(1 for a in self.completed if a.startswith("installation."))

    def wait_for(self, installations: int, timeout: float) -> bool:
        """Wait until the run reported `installations` authorizations complete (False: it ended, or timed out)."""
        with self.changed:
            return self.changed.wait_for(
                lambda: self.done or self.installations_done() >= installations, timeout
            ) and (self.installations_done() >= installations)

    def kill(self) -> bool:
        """kill -9 the run (and anything it started); False when it had already finished."""
        if self.process.poll() is not None:
            return False
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            return False
        return True

    def finish(self, timeout: float) -> int:
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        for thread in self.threads:
            thread.join(10)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()
        return code


def many_installations(count: int, per_tenant: int = 10) -> str:
    """`count` installations of the legacy partner, `per_tenant` to a tenant, as reconciler.yaml's tenants block."""
    out = []
    for tenant in range((count + per_tenant - 1) // per_tenant):
        out.append(f"  t{tenant:03d}:\n    installations:\n")
        for index in range(tenant * per_tenant, min(count, (tenant + 1) * per_tenant)):
            out.append(
                f"      i{index:03d}:\n        partner: legacy\n"
                "        parameters: {organization: acme-org, project: Platform}\n"
                "        scopes: [vso.work_full, vso.project]\n"
            )
    return "".join(out)


def addresses_of(count: int, per_tenant: int = 10) -> set[str]:
    return {f"installation.t{i // per_tenant:03d}.i{i:03d}" for i in range(count)}
