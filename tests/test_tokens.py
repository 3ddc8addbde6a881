"""Token access against the sandbox over real HTTP: `reconciler token`, single-flight refreshes under concurrent
reads, failures classified and recorded like `reconciler refresh`, and the background refresh."""

from __future__ import annotations

import base64
import datetime as dt
import json
import threading
import time
import webbrowser
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from reconciler.app.source import config_source
from reconciler.app.tokens import (
    NotAvailable,
    RefreshFailed,
    TokenReader,
    UnknownInstallation,
    refresh_ahead,
)
from reconciler.app.workspace import Workspace, open_backend
from reconciler.sandbox import SandboxServer
from tests.conftest import run
from tests.cyclr_support import cyclr_config, run_cli
from tests.sandbox_support import APPLY, ENTRA_ID, ENV, LEGACY_ID, ScriptedBrowser, installation

KEY = base64.b64encode(b"tokens-key-0123456789abcdef01234").decode()
TENV = {**ENV, "RECONCILER_STATE_KEY": KEY}
SCOPES = ["vso.work_full", "vso.project"]
THREE = (
    installation("acme", "ado", "legacy", "acme-org", "Platform", SCOPES)
    + installation("globex", "ado", "legacy", "globex", "Operations", SCOPES)
    + installation("initech", "ado", "entra", "acme-org", "Web", SCOPES)
)
ACME, INITECH = "installation.acme.ado", "installation.initech.ado"
# Tokens were recorded as expiring in an hour: 59 minutes on, they expire within the default 2-minute window,
# and tokens refreshed then (the flow reads the same clock) are good for another hour.
LATER = dt.timedelta(minutes=59)
PENDING = "error: installation.hooli.ado: authorization pending; complete it: reconciler authorize installation.hooli.ado"


@pytest.fixture
def applied(sandbox_config):  # type: ignore[no-untyped-def]
    """Three installations applied against the sandbox: (sandbox, directory)."""
    sandbox, directory, write, _browser = sandbox_config
    write(THREE)
    result = run(APPLY, TENV)
    assert result.exit_code == 0, result.stderr
    return sandbox, directory


_OPEN: list[TokenReader] = []


@pytest.fixture(autouse=True)
def _close_readers() -> Iterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().close()


def _reader(directory: Path, shift: dt.timedelta = dt.timedelta(0), **kwargs) -> TokenReader:  # type: ignore[no-untyped-def]
    """A reader whose clock runs `shift` ahead (closed after the test)."""
    ws = Workspace(directory, TENV, clock=lambda: dt.datetime.now(dt.UTC) + shift)
    loaded = config_source(ws).load()
    reader = TokenReader(ws, loaded, open_backend(ws, loaded.root), **kwargs)
    _OPEN.append(reader)
    return reader


def _refreshes(sandbox: SandboxServer) -> dict[str, int]:
    """Refresh grants per client and grant, as the sandbox's admin API counts them."""
    grants = httpx.get(f"{sandbox.url}/_sandbox/grants").json()
    return {f"{g['client_id']}/{g['id']}": g["refreshes"] for g in grants}


def _accepted(sandbox: SandboxServer, organization: str, token: str) -> bool:
    answer = httpx.get(f"{sandbox.url}/{organization}/_apis/connectionData", headers={"Authorization": f"Bearer {token}"})
    return answer.status_code == 200


def _state(directory: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((directory / "state" / "default.json").read_text())["resources"]


def test_cli_prints_the_token_alone_and_the_sandbox_accepts_it(applied) -> None:  # type: ignore[no-untyped-def]
    """`reconciler token ADDRESS`: exactly the access token and a newline on stdout, nothing on stderr, exit 0;
    the token is one the sandbox issued and accepts; a token not due is not refreshed."""
    sandbox, _directory = applied
    before = _refreshes(sandbox)
    result = run(["-C", ".", "token", ACME], TENV)
    assert result.exit_code == 0, result.stderr
    token = result.stdout.removesuffix("\n")
    assert result.stdout == token + "\n" and "\n" not in token and result.stderr == ""
    assert token in sandbox.provider.issued
    assert _accepted(sandbox, "acme-org", token)
    assert _refreshes(sandbox) == before


def test_cli_refreshes_a_token_within_the_window(applied) -> None:  # type: ignore[no-untyped-def]
    """--window wider than the token's life: it is refreshed first, and the new token is printed and accepted."""
    sandbox, _directory = applied
    old = run(["-C", ".", "token", ACME], TENV).stdout.strip()
    result = run(["-C", ".", "token", ACME, "--window", "2h"], TENV)
    assert result.exit_code == 0, result.stderr
    token = result.stdout.strip()
    assert token != old and _accepted(sandbox, "acme-org", token) and not _accepted(sandbox, "acme-org", old)
    assert sum(_refreshes(sandbox).values()) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["installation.nobody.ado"], "error: no installation installation.nobody.ado in state or in the configuration"),
        (["installation.hooli.ado"], PENDING),
        ([ACME, "--window", "soon"], "is not a duration"),
    ],
)
def test_cli_errors_are_one_line_on_stderr(sandbox_config, args: list[str], message: str) -> None:  # type: ignore[no-untyped-def]
    """Unknown, pending, a bad window: exit 1, one line on stderr, nothing on stdout, no token anywhere."""
    sandbox, _directory, write, _browser = sandbox_config
    write(THREE)
    assert run(APPLY, TENV).exit_code == 0
    write(THREE + installation("hooli", "ado", "legacy", "globex", "Operations", SCOPES))
    assert run(["-C", ".", "apply", "--auto-approve", "--auth-mode", "defer"], TENV).exit_code == 3
    result = run(["-C", ".", "token", *args], TENV)
    assert result.exit_code == 1 and result.stdout == ""
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not [t for t in sandbox.provider.issued if t in result.stderr]


def test_an_expiring_token_is_refreshed_once_under_fifty_concurrent_reads(applied) -> None:  # type: ignore[no-untyped-def]
    """50 threads of each of two readers (two processes' worth of in-process locks) read a token due for refresh:
    exactly one refresh at the provider, everyone gets the same new token, the other installations untouched."""
    sandbox, directory = applied
    before = _refreshes(sandbox)
    readers = [_reader(directory, LATER), _reader(directory, LATER)]
    start = threading.Barrier(100)

    def read(index: int) -> str:
        start.wait()
        return readers[index % 2].fresh(ACME).access_token.get_secret_value()

    with ThreadPoolExecutor(max_workers=100) as pool:
        tokens = set(pool.map(read, range(100)))
    after = _refreshes(sandbox)
    assert sum(after.values()) - sum(before.values()) == 1
    assert len(tokens) == 1 and _accepted(sandbox, "acme-org", tokens.pop())


def test_fresh_carries_expiry_and_granted_scopes_and_is_audited(applied) -> None:  # type: ignore[no-untyped-def]
    """The token comes with its expiry and the granted scope ids; every read calls the audit callback (actor,
    address); the repr shows no token."""
    _sandbox, directory = applied
    reads: list[tuple[str, str]] = []
    reader = _reader(directory, on_read=lambda actor, address: reads.append((actor, address)))
    fresh = reader.fresh(ACME, actor="runtime-eu")
    assert fresh.expires_at is not None and fresh.expires_at > dt.datetime.now(dt.UTC)
    assert set(SCOPES) <= set(fresh.scopes)
    assert reads == [("runtime-eu", ACME)]
    assert fresh.access_token.get_secret_value() not in repr(fresh)
    with pytest.raises(UnknownInstallation):
        reader.fresh("installation.nobody.ado")
    assert reads == [("runtime-eu", ACME)]


def test_a_revoked_grant_fails_the_refresh_and_marks_the_installation(applied) -> None:  # type: ignore[no-untyped-def]
    """The refresh token rejected (invalid_grant): RefreshFailed("rejected"), the record marked so that `plan`
    plans a re-authorization, and the next read says it must re-authorize; no token in the messages."""
    sandbox, directory = applied
    sandbox.provider.revoke(client_id=ENTRA_ID)
    reader = _reader(directory, LATER)
    with pytest.raises(RefreshFailed) as failed:
        reader.fresh(INITECH)
    assert failed.value.category == "rejected"
    assert _state(directory)[INITECH]["drift"] == "rejected"
    assert _state(directory)[ACME].get("drift") is None
    plan = run(["-C", ".", "plan", "--detailed-exitcode"], TENV)
    assert plan.exit_code == 2 and f"{INITECH} must be re-authorized" in plan.stdout
    with pytest.raises(NotAvailable, match="must be re-authorized") as again:
        reader.fresh(INITECH)
    text = str(failed.value) + str(again.value)
    assert not [t for t in sandbox.provider.issued if t in text]


def test_a_partner_fault_marks_nothing(applied) -> None:  # type: ignore[no-untyped-def]
    """The partner's client secret refused (invalid_client): RefreshFailed("partner_fault") and no record marked."""
    sandbox, directory = applied
    sandbox.provider.rotate_secret(LEGACY_ID, "the-new-secret-nobody-configured")
    with pytest.raises(RefreshFailed) as failed:
        _reader(directory, LATER).fresh(ACME)
    assert failed.value.category == "partner_fault"
    assert all(record.get("drift") is None for record in _state(directory).values())
    assert run(["-C", ".", "plan", "--detailed-exitcode"], TENV).exit_code == 0


def test_a_busy_state_lock_hands_out_a_token_that_still_works(applied) -> None:  # type: ignore[no-untyped-def]
    """While another command holds the state lock, a token due but not expired is handed out unrefreshed; one
    already expired fails as transient, naming the lock's holder; the background refresh reports each transient."""
    sandbox, directory = applied
    reader = _reader(directory, LATER, lock_timeout=0)
    backend = open_backend(reader.ws, reader.loaded.root)
    with backend.lock("apply"):
        assert reader.fresh(ACME).access_token.get_secret_value() in sandbox.provider.issued
        expired = _reader(directory, dt.timedelta(hours=2), lock_timeout=0)
        with pytest.raises(RefreshFailed, match="locked") as failed:
            expired.fresh(ACME)
        ahead = refresh_ahead(reader, now=reader.ws.clock(), window=dt.timedelta(minutes=2))
    assert failed.value.category == "transient"
    assert [o.outcome for o in ahead] == ["transient"] * 3 and all("locked" in o.reason for o in ahead)
    assert sum(_refreshes(sandbox).values()) == 0


def test_refresh_ahead_refreshes_what_is_due_and_keeps_idle_tokens_alive(applied) -> None:  # type: ignore[no-untyped-def]
    """Nothing due now; 59 minutes on, every token expires within the window and is refreshed once (a second run
    finds nothing); eight days on, expired tokens idle for longer than the keep-alive are refreshed."""
    sandbox, directory = applied
    now = dt.datetime.now(dt.UTC)
    assert refresh_ahead(_reader(directory), now=now, window=dt.timedelta(minutes=2)) == []
    reader = _reader(directory, LATER)
    outcomes = refresh_ahead(reader, now=reader.ws.clock(), window=dt.timedelta(minutes=2))
    assert [(o.address, o.tenant, o.outcome) for o in outcomes] == [
        (ACME, "acme", "refreshed"), ("installation.globex.ado", "globex", "refreshed"), (INITECH, "initech", "refreshed"),
    ]
    assert refresh_ahead(reader, now=reader.ws.clock(), window=dt.timedelta(minutes=2)) == []
    assert sorted(_refreshes(sandbox).values()) == [1, 1, 1]
    idle = _reader(directory, dt.timedelta(days=8))
    kept = refresh_ahead(idle, now=idle.ws.clock(), window=dt.timedelta(minutes=2))
    assert {o.outcome for o in kept} == {"refreshed"} and len(kept) == 3
    assert all("kept alive" in o.reason for o in kept)


def test_refresh_ahead_classifies_failures(applied) -> None:  # type: ignore[no-untyped-def]
    """A revoked grant is rejected and marked; a partner fault is reported per installation and marks nothing."""
    sandbox, directory = applied
    sandbox.provider.revoke(client_id=ENTRA_ID)
    sandbox.provider.rotate_secret(LEGACY_ID, "the-new-secret-nobody-configured")
    reader = _reader(directory, LATER)
    outcomes = {o.address: o for o in refresh_ahead(reader, now=reader.ws.clock(), window=dt.timedelta(minutes=2))}
    assert outcomes[INITECH].outcome == "rejected"
    assert outcomes[ACME].outcome == "partner_fault" and outcomes["installation.globex.ado"].outcome == "partner_fault"
    state = _state(directory)
    assert state[INITECH]["drift"] == "rejected" and state[ACME].get("drift") is None
    text = " ".join(o.reason for o in outcomes.values())
    assert not [t for t in sandbox.provider.issued if t in text] and "the-new-secret" not in text


def test_tokens_held_by_the_platform_are_not_handed_out(
    cyclr_sandbox: SandboxServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An installation signed in through the Cyclr platform: one line saying the platform holds its tokens."""
    (tmp_path / "reconciler.yaml").write_text(cyclr_config(cyclr_sandbox.url, ("acme",)))
    monkeypatch.chdir(tmp_path)
    env = {"CYCLR_CLIENT_ID": "partner-client", "CYCLR_CLIENT_SECRET": "cyclr-partner-secret-7d1e4b9a-UNIQUE"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(webbrowser, "open", ScriptedBrowser())
    applied = run_cli("apply", "--auto-approve", "--auth-mode", "browser", "--auth-timeout", "30")
    assert applied.exit_code == 0, applied.output
    result = run(["-C", ".", "token", "installation.acme.ado-main"], env)
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr == (
        "error: installation.acme.ado-main: tokens held by the Cyclr platform: call through its account connector in "
        "account acme there\n"
    )


def test_reads_of_tokens_not_due_are_cheap(applied) -> None:  # type: ignore[no-untyped-def]
    """Reading a token not due for refresh touches no provider (rough speed printed for the record)."""
    sandbox, directory = applied
    reader = _reader(directory)
    started = time.perf_counter()
    for _ in range(500):
        reader.fresh(ACME)
    elapsed = time.perf_counter() - started
    print(f"{500 / elapsed:.0f} reads/s")
    assert sum(_refreshes(sandbox).values()) == 0
