"""`reconciler audit`: the service's audit log read from the configured state backend, as text or JSON."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from reconciler.state.local import LocalBackend
from reconciler.state.postgres import PostgresBackend
from reconciler.state.service_store import AuditEntry, ServiceStore
from tests.conftest import run

NOW = dt.datetime(2026, 12, 4, 12, 0, 0, tzinfo=dt.UTC)
ENV: dict[str, str] = {}
CONFIG = "version: 1\n"  # the audit reads only where the state is
ENTRIES = [
    AuditEntry(NOW - dt.timedelta(days=2), "authorization.completed", "cli:ops@build-1", "installation.eu-a.ado",
               "vso.work_full"),
    AuditEntry(NOW - dt.timedelta(hours=2), "token.read", "runtime-eu", "installation.eu-a.ado"),
    AuditEntry(NOW - dt.timedelta(minutes=5, microseconds=250), "authorization.failed", "tenant", "installation.eu-b.ado",
               "access_denied: the user declined"),
]


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A configuration directory with local state, the command clock fixed at NOW."""
    (tmp_path / "reconciler.yaml").write_text(CONFIG)
    monkeypatch.setattr("reconciler.cli.group.now", lambda: NOW)
    return tmp_path


def _log(store: ServiceStore) -> None:
    for entry in ENTRIES:
        store.append_audit(entry)


def test_no_log_yet_lists_nothing(workspace: Path) -> None:
    """Before the service has written anything, the audit is empty, in either format, and exits 0."""
    text = run(["-C", str(workspace), "audit"], ENV)
    assert (text.exit_code, text.stdout) == (0, "")
    listed = run(["-C", str(workspace), "audit", "--format", "json"], ENV)
    assert listed.exit_code == 0 and json.loads(listed.stdout) == {"entries": []}
    assert not (workspace / "state").exists()  # reading created nothing


def test_text_lists_one_aligned_line_per_entry(workspace: Path) -> None:
    """Text: when (to the second, UTC), kind, actor, address and detail in aligned columns, oldest first."""
    _log(LocalBackend(workspace / "state", "default").service_store())
    result = run(["-C", str(workspace), "audit"], ENV)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == (
        "2026-12-02T12:00:00Z  authorization.completed  cli:ops@build-1  installation.eu-a.ado  vso.work_full\n"
        "2026-12-04T10:00:00Z  token.read               runtime-eu       installation.eu-a.ado\n"
        "2026-12-04T11:54:59Z  authorization.failed     tenant           installation.eu-b.ado  "
        "access_denied: the user declined\n"
    )


def test_json_lists_every_entry(workspace: Path) -> None:
    """JSON: `{"entries": [{at, kind, actor, address, detail}]}`, times in UTC written with `Z`."""
    _log(LocalBackend(workspace / "state", "default").service_store())
    result = run(["-C", str(workspace), "audit", "--format", "json"], ENV)
    assert result.exit_code == 0, result.stderr
    entries = json.loads(result.stdout)["entries"]
    assert [e["kind"] for e in entries] == ["authorization.completed", "token.read", "authorization.failed"]
    assert entries[1] == {"at": "2026-12-04T10:00:00Z", "kind": "token.read", "actor": "runtime-eu",
                          "address": "installation.eu-a.ado", "detail": ""}
    assert entries[2]["at"] == "2026-12-04T11:54:59.999750Z"


@pytest.mark.parametrize(("since", "kinds"), [
    ("24h", ["token.read", "authorization.failed"]),
    ("2h", ["token.read", "authorization.failed"]),  # an entry exactly at the boundary is kept
    ("10m", ["authorization.failed"]),
    ("45s", []),
    ("7d", ["authorization.completed", "token.read", "authorization.failed"]),
])
def test_since_keeps_the_last_stretch_of_time(workspace: Path, since: str, kinds: list[str]) -> None:
    """--since DURATION lists only the entries at or after now minus that duration."""
    _log(LocalBackend(workspace / "state", "default").service_store())
    result = run(["-C", str(workspace), "audit", "--since", since, "--format", "json"], ENV)
    assert result.exit_code == 0, result.stderr
    assert [e["kind"] for e in json.loads(result.stdout)["entries"]] == kinds


@pytest.mark.parametrize("since", ["yesterday", "0h", "24", "-1d", "1w"])
def test_a_bad_since_is_a_one_line_usage_error(workspace: Path, since: str) -> None:
    """A --since that is no positive duration exits 1 with one line naming the option and the expected form."""
    result = run(["-C", str(workspace), "audit", "--since", since], ENV)
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: --since: '{since}' is not a ")


def test_each_environment_has_its_own_log(workspace: Path) -> None:
    """`--env prod` reads the prod log, which holds none of the default environment's entries."""
    (workspace / "environments").mkdir()
    (workspace / "environments" / "prod.yaml").write_text("tenants: {}\n")
    _log(LocalBackend(workspace / "state", "default").service_store())
    LocalBackend(workspace / "state", "prod").service_store().append_audit(ENTRIES[1])
    result = run(["-C", str(workspace), "audit", "--env", "prod", "--format", "json"], ENV)
    assert result.exit_code == 0, result.stderr
    assert [e["kind"] for e in json.loads(result.stdout)["entries"]] == ["token.read"]


def test_the_log_is_read_from_a_postgres_backend(workspace: Path, pg_database: str) -> None:
    """With PostgreSQL state, the audit comes from the database the configuration names."""
    (workspace / "reconciler.yaml").write_text(CONFIG + "backend:\n  type: postgres\n  dsn: ${env:RECONCILER_PG_DSN}\n")
    _log(PostgresBackend(pg_database, "default").service_store())
    env = {**ENV, "RECONCILER_PG_DSN": pg_database}
    result = run(["-C", str(workspace), "audit", "--since", "24h"], env)
    assert result.exit_code == 0, result.stderr
    assert [line.split()[1] for line in result.stdout.splitlines()] == ["token.read", "authorization.failed"]
    assert pg_database not in result.output
