"""Checks kept beside the state: `status --refresh` records when each installation was checked and why a check
failed when it was not the tenant's doing (an `error`), without moving the document's serial."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx
import pytest

from reconciler.state.local_service import LocalServiceStore
from reconciler.state.service_store import CheckResult
from tests.conftest import run
from tests.sandbox_support import APPLY, ENV, LEGACY_ID, LEGACY_SECRET, installation

KEY = base64.b64encode(b"checks-key-0123456789abcdef01234").decode()
RENV = {**ENV, "RECONCILER_STATE_KEY": KEY}
ADDRESS = "installation.acme.ado"


@pytest.fixture
def applied(sandbox_config):  # type: ignore[no-untyped-def]
    sandbox, directory, write, _ = sandbox_config
    write(installation("acme", "ado", "legacy", "acme-org", "Platform", ["vso.work_full"]))
    assert run(APPLY, RENV).exit_code == 0
    return sandbox, directory


def _status(*args: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    result = run(["-C", ".", "status", "--format", "json", *args], RENV)
    return result.exit_code, json.loads(result.stdout)


def test_a_rejected_partner_secret_is_an_error_not_a_reauthorization(applied) -> None:
    """The partner's client secret no longer works: `status --refresh` says error (the partner's fault), exits 2,
    and names no re-authorization; the document's serial does not move; once the secret works again, healthy."""
    sandbox, directory = applied
    serial = json.loads((directory / "state" / "default.json").read_text())["serial"]
    code, doc = _status()
    assert code == 0 and doc["summary"]["healthy"] == 1
    sandbox.provider.rotate_secret(LEGACY_ID, "another-secret")
    sandbox.provider.expire()  # the check must refresh: the token endpoint refuses the partner's secret
    code, doc = _status("--refresh")
    entry = doc["installations"][0]
    assert code == 2 and entry["status"] == "error", entry
    assert entry["reason"].startswith("last check failed:") and "client" in entry["next_step"]
    code, again = _status()  # from state alone: the check is kept
    assert code == 2 and again["installations"][0]["status"] == "error"
    listed = json.loads(run(["-C", ".", "state", "list", "--json"], RENV).stdout)
    assert [e["status"] for e in listed if e["address"] == ADDRESS] == ["error"]
    assert json.loads((directory / "state" / "default.json").read_text())["serial"] == serial
    sandbox.provider.rotate_secret(LEGACY_ID, LEGACY_SECRET)
    code, doc = _status("--refresh")
    assert code == 0 and doc["installations"][0]["status"] == "healthy", doc["installations"][0]


def test_the_local_checks_log_keeps_the_latest_check_and_compacts(tmp_path: Path) -> None:
    """Each address's latest check wins; an earlier one recorded later does not replace it; a log of many more
    lines than addresses is rewritten with the latest ones only."""
    import datetime as dt

    from reconciler.state import local_service

    store = LocalServiceStore(tmp_path, "default")
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    store.record_checks([CheckResult("installation.a.x", t0, "ok"), CheckResult("installation.b.x", t0, "partner", "m")])
    store.record_checks([CheckResult("installation.a.x", t0 - dt.timedelta(hours=1), "provider", "late")])
    checks = store.checks()
    assert checks["installation.a.x"].outcome == "ok" and checks["installation.b.x"].failed
    many = [CheckResult("installation.a.x", t0 + dt.timedelta(seconds=i), "ok", "x" * 200) for i in range(2000)]
    store.record_checks(many)
    lines = store.checks_path.read_bytes().count(b"\n")
    assert lines == 2 and local_service.COMPACT_RATIO > 1
    assert store.checks()["installation.a.x"].at == t0 + dt.timedelta(seconds=1999)


def test_a_check_appended_while_the_log_is_compacted_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another writer (its own store, as another process would be) appends a check just as a compaction has read the
    log and is about to replace it: the check is in the log afterwards (it waited for the compaction)."""
    import datetime as dt
    import threading

    from reconciler.state import local_service

    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    late = CheckResult("installation.other.x", t0 + dt.timedelta(days=1), "revoked", "found meanwhile")
    other = LocalServiceStore(tmp_path, "default")
    replace = local_service.atomic_write
    appenders: list[threading.Thread] = []

    def slow_replace(path, body):  # type: ignore[no-untyped-def]
        if not appenders:  # the first compaction: another writer appends now
            appenders.append(threading.Thread(target=other.record_checks, args=([late],)))
            appenders[0].start()
            appenders[0].join(0.5)  # with the lock held it cannot finish yet; without, it has appended by now
        replace(path, body)

    monkeypatch.setattr(local_service, "atomic_write", slow_replace)
    store = LocalServiceStore(tmp_path, "default")
    store.record_checks([CheckResult("installation.a.x", t0 + dt.timedelta(seconds=i), "ok", "x" * 200) for i in range(2000)])
    assert appenders, "the log was not compacted"
    appenders[0].join()
    checks = LocalServiceStore(tmp_path, "default").checks()
    assert checks["installation.other.x"] == late
    assert checks["installation.a.x"].at == t0 + dt.timedelta(seconds=1999)


def test_a_terminal_table_shows_reasons_as_written_never_as_markup(tmp_path: Path) -> None:
    """A check's message is the provider's words: on a terminal they are shown literally (no markup, no terminal
    hyperlink), and a check dated far ahead of now is not believed."""
    import datetime as dt

    from reconciler.render.status import render_status_text, status_document
    from reconciler.state.model import InstallationRecord
    from reconciler.status import StatusReport, StatusRow, installation_status

    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    record = InstallationRecord(
        tenant="acme", name="ado", connector="microsoft-azure-devops", partner="legacy", auth="azure-devops-oauth",
        parameters={}, scopes=("vso.work_full",), client_id="c", client_secret_ref="${env:S}",
        redirect_uri="http://127.0.0.1/cb", token_url="https://t.example/token", verified_at=now,
    )
    message = "see [/docs] and [link=https://evil.example]click[/link]"
    status = installation_status(record, None, now=now, check=CheckResult(ADDRESS, now, "provider", message))
    assert status.word == "error"
    report = StatusReport(now, "default", dt.timedelta(days=14), [StatusRow(ADDRESS, record, status, None)], total=1)
    shown = render_status_text(status_document(report), terminal=True, color=True, width=400)
    assert "[/docs]" in shown and "[link=https://evil.example]click[/link]" in shown and "\x1b]8;" not in shown
    ahead = CheckResult(ADDRESS, now + dt.timedelta(days=3650), "provider", "damaged")
    assert installation_status(record, None, now=now, check=ahead).word == "healthy"


def test_an_expired_entra_client_secret_is_an_error_and_a_preflight_problem(sandbox_config) -> None:
    """The Entra app's client secret passes its expiry date (AADSTS7000222): `status --refresh` says error, the
    partner's fault, naming the code; preflight stops an apply before anyone is asked; none of it is the tenant's."""
    from tests.sandbox_support import ENTRA_ID, ENTRA_SECRET

    sandbox, directory, write, browser = sandbox_config
    write(installation("acme", "ado", "entra", "acme-org", "Platform", ["vso.work_full"]))
    path = directory / "reconciler.yaml"
    path.write_text(path.read_text().replace("tenant_id: organizations\n", "tenant_id: organizations\n"
                                             "    app_tenant_id: 6a5b0d1e-0000-4000-8000-000000000001\n"))
    assert run(APPLY, RENV).exit_code == 0
    httpx.post(f"{sandbox.url}/_sandbox/apps/{ENTRA_ID}/expire-secret", json={}).raise_for_status()
    sandbox.provider.expire()  # the check must refresh
    code, doc = _status("--refresh")
    entry = doc["installations"][0]
    assert code == 2 and entry["status"] == "error" and "AADSTS7000222" in entry["reason"], entry
    preflight = run(["-C", ".", "preflight"], RENV)
    assert preflight.exit_code == 1 and "rejected the partner's client credentials" in preflight.stdout
    path.write_text(path.read_text().replace("scopes: [vso.work_full]", "scopes: [vso.work_full, vso.code]"))
    opened = len(browser.opened)
    applied = run(APPLY, RENV)
    assert applied.exit_code == 1 and "preflight" in applied.stderr and len(browser.opened) == opened
    assert ENTRA_SECRET not in json.dumps(doc) + preflight.stdout + applied.stderr + applied.stdout
    httpx.post(f"{sandbox.url}/_sandbox/apps/{ENTRA_ID}/expire-secret", json={"expired": False}).raise_for_status()
    code, doc = _status("--refresh")
    assert code == 0 and doc["installations"][0]["status"] == "healthy"
