"""Provider faults: the sandbox's fault switches (HTTP 500, 429 with Retry-After, slow answers past the timeout, hung
connections, malformed JSON, HTTP 203 with an HTML sign-in page, a token answer without `refresh_token`) against
apply, authorize and refresh.

For each: transient faults are retried a bounded number of times; what still fails is a one-line error naming the
installation, exit 1, and nothing lost — the failed installation's record and sealed credentials are as before,
what completed before is kept, the other installations proceed (refresh) or a re-run finishes them (apply).
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest

from reconciler.sandbox import SandboxServer
from reconciler.sandbox.model import Fault
from tests.conftest import run
from tests.reliability.support_b import counted, figures, recorded_tokens, works_at
from tests.sandbox_support import APPLY, ENV, LEGACY_ID, installation

AREA = "faults"
KEY = base64.b64encode(b"faults-suite-key-0123456789abcde").decode()
RENV = {**ENV, "RECONCILER_STATE_KEY": KEY}
TIMEOUT = ["--http-timeout", "1"]  # a request taking longer than 1 s has timed out
ATTEMPTS = 4  # RetryPolicy.attempts
ACME = installation("acme", "ado", "legacy", "acme-org", "Platform", ["vso.work_full", "vso.project"])
GLOBEX = installation("globex", "ado", "legacy", "globex", "Operations", ["vso.work_full", "vso.project"])
INITECH = installation("initech", "ado", "entra", "acme-org", "Web", ["vso.work_full", "vso.project"])

FAULTS: dict[str, object] = {
    "http-500": 500,
    "http-429": {"kind": "status", "status": 429, "retry_after": "1"},
    "timeout": {"kind": "slow", "seconds": 2},  # answered after the 1 s timeout
    "hang": "hang",
    "malformed-json": "malformed-json",
    "signin-page": "signin-page",
    "no-refresh-token": "no-refresh-token",
}
TRANSIENT = ["http-500", "http-429", "hang", "signin-page"]


def _inject(
    sandbox: SandboxServer, endpoint: str, name: str, times: int = 1, organization: str | None = None
) -> None:
    spec = FAULTS[name]
    if organization is not None:
        spec = {**(spec if isinstance(spec, dict) else {"kind": spec}), "organization": organization}  # type: ignore[dict-item]
    sandbox.provider.add_faults(endpoint, [Fault.parse(spec)] * times)


def _left(sandbox: SandboxServer, endpoint: str) -> int:
    return len(sandbox.provider.faults.get(endpoint, []))


def _footprint(directory: Path, address: str) -> tuple[object, bytes | None]:
    """What state holds for one address: its record, and its sealed credentials file's bytes."""
    document = json.loads((directory / "state" / "default.json").read_text())
    sealed = directory / "state" / "default.credentials" / f"{address}.json"
    return document["resources"].get(address), sealed.read_bytes() if sealed.exists() else None


def _no_secrets(sandbox: SandboxServer, *outputs: str) -> None:
    text = "\n".join(outputs)
    found = [t for t in sandbox.provider.issued if t in text]
    figures.add(AREA, secrets_found=len(found))
    assert found == []


def _error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.fixture
def applied(sandbox_config):  # type: ignore[no-untyped-def]
    """acme applied; globex declared but not yet applied."""
    sandbox, directory, write, browser = sandbox_config
    write(ACME)
    assert run(APPLY, RENV).exit_code == 0
    write(ACME + GLOBEX)
    return sandbox, directory, browser


# What one fault at the token endpoint does to the code exchange: recovered by a retry, or a clear error.
EXCHANGE = {
    "http-500": None,
    "http-429": None,
    "hang": None,
    "signin-page": None,
    "timeout": "the authorization code was already redeemed",  # carried out, answer lost: the code is spent
    "malformed-json": "the provider answered http 200 with no usable json",
    "no-refresh-token": None,
}


@pytest.mark.parametrize("name", list(EXCHANGE))
@counted(AREA)
def test_one_fault_at_the_code_exchange(applied, name: str) -> None:  # type: ignore[no-untyped-def]
    """One fault during the code exchange: transient ones are retried and the authorization completes; a spent
    code or a malformed answer is one error naming the installation, nothing recorded, and a re-run completes it."""
    sandbox, directory, _browser = applied
    before = _footprint(directory, "installation.globex.ado"), _footprint(directory, "installation.acme.ado")
    _inject(sandbox, "token", name)
    started = time.monotonic()
    result = run([*TIMEOUT, *APPLY], RENV)
    elapsed = time.monotonic() - started
    expected = EXCHANGE[name]
    tokens = recorded_tokens(directory / "state", RENV)
    figures.add(AREA, faults_injected=1)
    assert _left(sandbox, "token") == 0
    if expected is None:
        assert result.exit_code == 0, result.stderr
        assert works_at(sandbox.provider, tokens["installation.globex.ado"])
        if name == "http-429":
            assert elapsed >= 1.0  # Retry-After honoured
        if name == "no-refresh-token":
            assert "warning: installation.globex.ado: the provider issued no refresh token" in result.stderr
            assert tokens["installation.globex.ado"].refresh_token is None  # type: ignore[union-attr]
        figures.add(AREA, recovered=1)
    else:
        line = _error_line(result.stderr)
        assert result.exit_code == 1
        assert line.startswith("error: installation.globex.ado: ") and expected in line.lower()
        assert line.count("installation.globex.ado") == 1
        if name == "timeout":
            assert "hint: an authorization code works once: run the command again" in result.stderr
        assert (
            _footprint(directory, "installation.globex.ado"),
            _footprint(directory, "installation.acme.ado"),
        ) == before
        again = run(APPLY, RENV)
        assert again.exit_code == 0, again.stderr
        figures.add(AREA, clear_errors=1)
    assert works_at(sandbox.provider, recorded_tokens(directory / "state", RENV)["installation.acme.ado"])
    _no_secrets(sandbox, result.stdout, result.stderr)


@counted(AREA)
def test_a_token_answer_without_refresh_token_is_flagged_by_refresh(applied) -> None:  # type: ignore[no-untyped-def]
    """An installation authorized without a refresh token is recorded with a warning; the next refresh finds it
    cannot be refreshed, and the plan asks to re-authorize it (never a silent expiry)."""
    sandbox, _directory, _browser = applied
    _inject(sandbox, "token", "no-refresh-token")
    assert run(APPLY, RENV).exit_code == 0
    refreshed = run(["-C", ".", "refresh", "--window", "120"], RENV)
    assert "installation.globex.ado: refresh token rejected" in refreshed.stderr
    plan = run(["-C", ".", "plan", "--detailed-exitcode"], RENV)
    assert plan.exit_code == 2 and "installation.globex.ado must be re-authorized" in plan.stdout
    figures.add(AREA, faults_injected=1, clear_errors=1)


# What one fault at the API does to the verification after the exchange.
VERIFY = {
    "http-500": None,
    "http-429": None,
    "timeout": None,  # a check is a GET: asking again is safe
    "hang": None,
    "signin-page": None,
    "malformed-json": "organization check: the provider answered with unusable json",
}


@pytest.mark.parametrize("name", list(VERIFY))
@counted(AREA)
def test_one_fault_at_the_verification(applied, name: str) -> None:  # type: ignore[no-untyped-def]
    """One fault while checking the new token against the organization: retried, or one clear error."""
    sandbox, directory, _browser = applied
    before = _footprint(directory, "installation.globex.ado")
    _inject(sandbox, "api", name)
    result = run([*TIMEOUT, *APPLY], RENV)
    figures.add(AREA, faults_injected=1)
    assert _left(sandbox, "api") == 0
    if VERIFY[name] is None:
        assert result.exit_code == 0, result.stderr
        assert works_at(
            sandbox.provider, recorded_tokens(directory / "state", RENV)["installation.globex.ado"]
        )
        figures.add(AREA, recovered=1)
    else:
        line = _error_line(result.stderr)
        assert result.exit_code == 1 and line.startswith("error: installation.globex.ado: ")
        assert VERIFY[name] in line.lower()  # type: ignore[operator]
        assert _footprint(directory, "installation.globex.ado") == before
        figures.add(AREA, clear_errors=1)
    _no_secrets(sandbox, result.stdout, result.stderr)


@pytest.mark.parametrize(
    ("endpoint", "name"),
    [("token", "http-500"), ("api", "signin-page")]
    + [
        pytest.param(e, n, marks=pytest.mark.slow)
        for e in ("token", "api")
        for n in TRANSIENT
        if (e, n) not in (("token", "http-500"), ("api", "signin-page"))
    ],
)
@counted(AREA)
def test_a_fault_that_lasts_is_retried_a_bounded_number_of_times(applied, endpoint: str, name: str) -> None:  # type: ignore[no-untyped-def]
    """A provider that keeps failing: exactly ATTEMPTS requests, then one error naming the installation and saying
    so; nothing recorded for it, acme untouched; once the provider recovers a re-run completes it."""
    sandbox, directory, _browser = applied
    before = _footprint(directory, "installation.globex.ado"), _footprint(directory, "installation.acme.ado")
    _inject(sandbox, endpoint, name, times=10)
    result = run([*TIMEOUT, *APPLY], RENV)
    used = 10 - _left(sandbox, endpoint)
    figures.add(AREA, faults_injected=used)
    line = _error_line(result.stderr)
    assert result.exit_code == 1
    assert used == ATTEMPTS
    assert line.startswith("error: installation.globex.ado: ") and f"({ATTEMPTS} attempts)" in line
    assert (
        _footprint(directory, "installation.globex.ado"),
        _footprint(directory, "installation.acme.ado"),
    ) == before
    sandbox.provider.clear_faults(endpoint)
    assert run(APPLY, RENV).exit_code == 0
    figures.add(AREA, clear_errors=1)


# -- refresh -------------------------------------------------------------------------------------------------------


@pytest.fixture
def three(sandbox_config):  # type: ignore[no-untyped-def]
    """Three installations (two Azure DevOps OAuth, one Entra ID) applied."""
    sandbox, directory, write, _browser = sandbox_config
    write(ACME + GLOBEX + INITECH)
    assert run(APPLY, RENV).exit_code == 0
    return sandbox, directory


REFRESH = ["-C", ".", "refresh", "--window", "120", "--parallelism", "1"]


@pytest.mark.parametrize("name", [*TRANSIENT, "malformed-json", "timeout"])
@counted(AREA)
def test_one_fault_while_refreshing(three, name: str) -> None:  # type: ignore[no-untyped-def]
    """One fault at the token endpoint during refresh (acme goes first): transient ones are retried and all three
    refresh; a malformed answer leaves acme as it was (exit 1; its refresh token still works); an answer lost after
    the provider rotated the refresh token is found out (refresh token rejected), never hidden."""
    sandbox, directory = three
    before = _footprint(directory, "installation.acme.ado")
    _inject(sandbox, "token", name)
    result = run([*TIMEOUT, *REFRESH], RENV)
    tokens = recorded_tokens(directory / "state", RENV)
    figures.add(AREA, faults_injected=1)
    others = ("installation.globex.ado", "installation.initech.ado")
    assert all(works_at(sandbox.provider, tokens[a]) for a in others)
    if name in TRANSIENT:
        assert result.exit_code == 0 and "Refresh complete: 3 refreshed." in result.stdout, result.stderr
        assert works_at(sandbox.provider, tokens["installation.acme.ado"])
        figures.add(AREA, recovered=1)
    elif name == "malformed-json":
        assert result.exit_code == 1 and "2 refreshed, 1 could not be checked" in result.stdout
        assert (
            "installation.acme.ado: could not refresh: the provider answered HTTP 200 with no usable JSON"
            in result.stderr
        )
        assert _footprint(directory, "installation.acme.ado") == before
        assert works_at(sandbox.provider, tokens["installation.acme.ado"])
        assert "3 refreshed" in run(REFRESH, RENV).stdout
        figures.add(AREA, clear_errors=1)
    else:
        assert result.exit_code == 0 and "installation.acme.ado: refresh token rejected" in result.stderr
        plan = run(["-C", ".", "plan", "--detailed-exitcode"], RENV)
        assert plan.exit_code == 2 and plan.stdout.count("must be re-authorized") == 1
        figures.add(AREA, clear_errors=1)
    _no_secrets(sandbox, result.stdout, result.stderr)


@counted(AREA)
def test_a_refresh_answer_without_refresh_token_keeps_the_current_one(three) -> None:  # type: ignore[no-untyped-def]
    """Regression: an Azure DevOps OAuth refresh answered without `refresh_token` dropped the stored refresh token,
    so the installation could never be refreshed again; the current one (still valid) is now kept."""
    sandbox, directory = three
    _inject(sandbox, "token", "no-refresh-token", times=3)
    first = run(REFRESH, RENV)
    assert first.exit_code == 0 and "3 refreshed" in first.stdout, first.stderr
    tokens = recorded_tokens(directory / "state", RENV)
    assert all(t.refresh_token is not None and works_at(sandbox.provider, t) for t in tokens.values())  # type: ignore[union-attr]
    second = run(REFRESH, RENV)
    assert second.exit_code == 0 and "Refresh complete: 3 refreshed." in second.stdout, second.stderr
    figures.add(AREA, faults_injected=3, recovered=1)


@counted(AREA)
def test_a_lasting_fault_for_one_organization_leaves_the_others_refreshed(three) -> None:  # type: ignore[no-untyped-def]
    """Every check of globex fails (HTTP 503): globex is named, could not be checked, exit 1, its state unchanged;
    acme and initech are refreshed meanwhile."""
    sandbox, directory = three
    before = _footprint(directory, "installation.globex.ado")
    sandbox.provider.add_faults("api", [Fault("status", status=503, organization="globex")] * 10)
    result = run(["-C", ".", "refresh", "--window", "120"], RENV)
    figures.add(AREA, faults_injected=10 - _left(sandbox, "api"))
    assert result.exit_code == 1 and "2 refreshed, 1 could not be checked" in result.stdout
    assert (
        "installation.globex.ado: could not refresh: organization check: the provider is unavailable (HTTP 503)"
        in result.stderr
    )
    assert "error: 1 installation could not be refreshed or checked" in result.stderr
    assert 10 - _left(sandbox, "api") == ATTEMPTS
    record, sealed = _footprint(directory, "installation.globex.ado")
    assert (
        record == before[0] and sealed != before[1]
    )  # refreshed (rotation stored at once), then not verified
    tokens = recorded_tokens(directory / "state", RENV)
    assert all(works_at(sandbox.provider, t) for t in tokens.values())
    figures.add(AREA, clear_errors=1)


# -- authorize (deferred authorizations completed later) ----------------------------------------------------------


@counted(AREA)
def test_authorize_retries_and_keeps_the_pending_authorization_when_it_fails(sandbox_config) -> None:  # type: ignore[no-untyped-def]
    """`authorize` retries a transient fault; when the fault lasts it fails naming the installation and keeps the
    pending authorization (same link), which a later `authorize` completes."""
    sandbox, directory, write, browser = sandbox_config
    write(ACME + GLOBEX)
    assert run(["-C", ".", "apply", "--auto-approve", "--auth-mode", "defer"], RENV).exit_code == 3
    authorize = ["-C", ".", "authorize", "--auth-mode", "browser", "--auth-timeout", "20"]
    _inject(sandbox, "token", "http-500", times=10)
    failed = run([*TIMEOUT, *authorize, "installation.acme.ado"], RENV)
    line = _error_line(failed.stderr)
    assert (
        failed.exit_code == 1 and line.startswith("error: installation.acme.ado: ") and "(4 attempts)" in line
    )
    record = json.loads((directory / "state" / "default.json").read_text())["resources"][
        "installation.acme.ado"
    ]
    assert (
        record["status"] == "pending_authorization"
        and record["pending"]["authorize_url"] == browser.opened[0]
    )
    sandbox.provider.clear_faults("token")
    _inject(sandbox, "token", "http-429")
    done = run([*TIMEOUT, *authorize], RENV)
    assert done.exit_code == 0, done.stderr
    assert browser.opened[1] == browser.opened[0]  # the same link as before
    tokens = recorded_tokens(directory / "state", RENV)
    assert sorted(tokens) == ["installation.acme.ado", "installation.globex.ado"]
    assert all(works_at(sandbox.provider, t) for t in tokens.values())
    figures.add(AREA, faults_injected=ATTEMPTS + 1, recovered=1, clear_errors=1)


@counted(AREA)
def test_update_errors_name_the_installation_once(sandbox_config) -> None:  # type: ignore[no-untyped-def]
    """Regression: errors raised inside a step named the installation twice ("installation.x: installation.x: ...")."""
    sandbox, _directory, write, _browser = sandbox_config
    write(ACME)
    assert run(APPLY, RENV).exit_code == 0
    sandbox.provider.revoke(client_id=LEGACY_ID)
    write(ACME.replace("Platform", "Web"))
    result = run(APPLY, RENV)
    line = _error_line(result.stderr)
    assert result.exit_code == 1 and line.startswith(
        "error: installation.acme.ado: the refresh token was rejected"
    )
    assert line.count("installation.acme.ado") == 1
    figures.add(AREA, clear_errors=1)


@counted(AREA)
def test_fault_switches_over_the_admin_api(sandbox: SandboxServer) -> None:
    """The documented admin API queues faults (statuses, kinds, objects, repeated), targets an organization, and
    clears them; an unknown kind or endpoint is refused."""
    import httpx

    def post(body: dict) -> httpx.Response:  # type: ignore[type-arg]
        return httpx.post(f"{sandbox.url}/_sandbox/faults", json=body, timeout=5)

    queued = post({"endpoint": "token", "faults": [500, "hang", {"kind": "slow", "seconds": 1}], "repeat": 2})
    assert queued.status_code == 200 and queued.json() == {"queued": 6}
    assert post({"endpoint": "token", "statuses": [429]}).json() == {"queued": 7}
    kinds = [f.kind for f in sandbox.provider.faults["token"]]
    assert kinds == ["status", "hang", "slow"] * 2 + ["status"]
    assert post({"endpoint": "token", "faults": ["signin-page"], "clear": True}).json() == {"queued": 1}
    post({"endpoint": "api", "faults": [{"kind": "status", "status": 503, "organization": "globex"}]})
    assert sandbox.provider.next_fault("api", "acme-org") is None
    assert sandbox.provider.next_fault("api", "globex") == Fault("status", status=503, organization="globex")
    assert post({"endpoint": "token", "faults": ["explode"]}).status_code == 400
    assert post({"endpoint": "consent", "faults": [500]}).status_code == 400
