"""The plan memo: a repeated `plan` answers from the cache exactly when nothing it depends on changed.

Ground truth is always the same command with `--no-cache`: after every change below, the memo's answer must equal
it byte for byte, and before any change a hit must not plan at all.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import marshal
import os
import shutil
from pathlib import Path

import pytest

from reconciler.app import planning
from reconciler.cli import group as cli_group
from tests.conftest import read_env_file, run

CASES = Path(__file__).parent / "cases"
NOW = dt.datetime(2026, 11, 2, 9, 30, tzinfo=dt.UTC)


@pytest.fixture
def case(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """A copy of a golden case as the working directory, its own cache directory, and a fixed clock."""

    def copy(name: str) -> tuple[Path, dict[str, str]]:
        directory = tmp_path / name
        shutil.copytree(CASES / name, directory)
        monkeypatch.chdir(directory)
        monkeypatch.setattr(cli_group, "now", lambda: NOW)
        env = {**read_env_file(directory / "env"), "RECONCILER_CACHE_DIR": str(tmp_path / "cache")}
        return directory, env

    return copy


def plan(env: dict[str, str], *args: str, cache: bool = True) -> tuple[int, str, str]:
    result = run([*([] if cache else ["--no-cache"]), "plan", *args], env=env)
    return result.exit_code, result.stdout, result.stderr


def fresh(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    return plan(env, *args, cache=False)


def planned_count(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the plans actually computed from here on."""
    calls = [0]
    real = planning.plan_config

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(planning, "plan_config", counted)
    return calls


@pytest.mark.parametrize("fmt", ["text", "json", "markdown"])
def test_a_repeated_plan_answers_from_the_memo_with_the_same_output(case, monkeypatch, fmt: str) -> None:
    _, env = case("mixed")
    first = plan(env, "--format", fmt, "--detailed-exitcode")
    calls = planned_count(monkeypatch)
    second = plan(env, "--format", fmt, "--detailed-exitcode")
    assert calls[0] == 0, "the second plan was computed again"
    assert second == first == fresh(env, "--format", fmt, "--detailed-exitcode")
    assert first[0] == 2  # the exit code of a plan with changes is kept too


def test_no_cache_neither_reads_nor_writes_the_memo(case, tmp_path: Path) -> None:
    _, env = case("mixed")
    fresh(env)
    assert not (tmp_path / "cache" / "plan").exists()
    env["RECONCILER_NO_CACHE"] = "1"
    plan(env)
    assert not (tmp_path / "cache" / "plan").exists()


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


CHANGES = {
    "an included file's content": lambda d, env: _edit(d / "tenants" / "acme.yaml", "Platform", "Platform2"),
    "a new file matching an include": lambda d, env: (d / "tenants" / "initech.yaml").write_text(
        (d / "tenants" / "globex.yaml").read_text().replace("globex", "initech")
    ),
    "a file no longer matching an include": lambda d, env: (d / "tenants" / "globex.yaml").unlink(),
    "the root file": lambda d, env: _edit(d / "reconciler.yaml", "app-h.cyclr.com", "app-q.cyclr.com"),
    "the state": lambda d, env: run(["state", "rm", "installation.globex.ado-main"], env=env),
    "a shown reference's value": lambda d, env: env.update(ADO_CLIENT_ID="11111111-aaaa-4bbb-8ccc-000000000009"),
    "an environment overlay appearing": lambda d, env: (d / "environments").mkdir()
    or (d / "environments" / "default.yaml").write_text("platform: {service_domain: app-z.cyclr.com}\n"),
}
ENVIRONMENT = {"an environment overlay appearing": "default"}  # an overlay is read only for a named environment


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_any_change_to_an_input_is_planned_afresh(case, change: str) -> None:
    directory, env = case("included_tenant_files")
    if change in ENVIRONMENT:
        env["RECONCILER_ENV"] = ENVIRONMENT[change]
    before = plan(env, "--format", "json")
    assert before == fresh(env, "--format", "json")
    CHANGES[change](directory, env)
    after = plan(env, "--format", "json")
    assert after == fresh(env, "--format", "json")
    assert after != before, "the change should have changed the plan"


def test_a_missing_secret_is_noted_again(case) -> None:
    """A secret unset after a plan was memoised is noted as not checked, exactly as a fresh plan notes it."""
    _, env = case("included_tenant_files")
    assert plan(env)[0] == 0
    del env["ADO_CLIENT_SECRET"]
    code, out, err = plan(env)
    assert code == 0 and "${env:ADO_CLIENT_SECRET} at " in err and "not checked (not set here)" in err
    assert (code, out, err) == fresh(env)


def test_a_missing_shown_reference_is_still_an_error(case) -> None:
    """A client id unset after a plan was memoised is an error (plans show its value), as in a fresh plan."""
    _, env = case("included_tenant_files")
    assert plan(env)[0] == 0
    del env["ADO_CLIENT_ID"]
    code, out, err = plan(env)
    assert code == 1 and out == ""
    assert "ADO_CLIENT_ID is not set" in err
    assert (code, out, err) == fresh(env)


def test_a_pending_link_expiring_changes_the_plan_without_any_file_changing(case, monkeypatch) -> None:
    _, env = case("pending_authorization")
    before = plan(env)
    assert "authorization pending since" in before[1]
    later = dt.datetime(2026, 11, 8, 12, 0, tzinfo=dt.UTC)  # the pending link's expiry
    monkeypatch.setattr(cli_group, "now", lambda: later)
    after = plan(env)
    assert "pending authorization expired" in after[1]
    assert after == fresh(env)


def test_options_and_working_directory_have_their_own_entries(case, monkeypatch) -> None:
    directory, env = case("mixed")
    whole = plan(env, "--format", "json")
    targeted = plan(env, "--format", "json", "--target", "installation.acme.*")
    assert targeted != whole
    assert targeted == fresh(env, "--format", "json", "--target", "installation.acme.*")
    monkeypatch.chdir(directory.parent)
    elsewhere = run(["-C", directory.name, "plan"], env=env)
    assert elsewhere.stdout == run(["--no-cache", "-C", directory.name, "plan"], env=env).stdout
    assert f"{directory.name}/state/default.json" in elsewhere.stdout  # paths shown from this directory


def test_the_memo_holds_no_secret_value(case, tmp_path: Path) -> None:
    _, env = case("mixed")
    for fmt in ("text", "json", "markdown"):
        plan(env, "--format", fmt)
    blobs = [p.read_bytes() for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert blobs
    secrets = [value for key, value in env.items() if "SECRET" in key]
    for secret in secrets:
        forms = {secret.encode(), base64.b64encode(secret.encode()), secret.encode().hex().encode()}
        assert not any(form in blob for form in forms for blob in blobs)


def test_an_unreadable_or_foreign_memo_entry_is_ignored(case, tmp_path: Path) -> None:
    _, env = case("mixed")
    first = plan(env)
    for entry in (tmp_path / "cache" / "plan").iterdir():
        entry.write_bytes(b"not marshal data")
    assert plan(env) == first
    for entry in (tmp_path / "cache" / "plan").iterdir():
        entry.write_bytes(marshal.dumps({"format": "reconciler-plan-memo-1", "today": None}))
    assert plan(env) == first


def test_a_plan_that_fails_stores_nothing(case, tmp_path: Path) -> None:
    directory, env = case("mixed")
    _edit(directory / "reconciler.yaml", "version: 1", "version: 7")
    assert plan(env)[0] == 1
    assert not (tmp_path / "cache" / "plan").exists() or not any((tmp_path / "cache" / "plan").iterdir())


def test_postgres_state_is_never_memoised(tmp_path: Path) -> None:
    """Other writers change shared state unseen: the backend offers the memo no local files, so nothing is stored."""
    from reconciler.memo import StateFiles
    from reconciler.state.local import LocalBackend
    from reconciler.state.postgres import PostgresBackend

    assert not isinstance(PostgresBackend("host=127.0.0.1 port=1", "default"), StateFiles)
    assert isinstance(LocalBackend(Path("state"), "default"), StateFiles)


def test_the_state_digests_are_of_the_bytes_read(tmp_path: Path) -> None:
    from reconciler.state.local import LocalBackend
    from reconciler.state.model import StateDocument, encode_state

    backend = LocalBackend(tmp_path, "default")
    assert backend.read() is None
    assert backend.read_digests() == [(os.path.abspath(tmp_path / "default.json"), None)]
    raw = encode_state(StateDocument.new("default"))
    (tmp_path / "default.json").write_bytes(raw)
    backend.read()
    assert backend.read_digests() == [
        (os.path.abspath(tmp_path / "default.json"), hashlib.sha256(raw).hexdigest()),
        (os.path.abspath(tmp_path / "default.journal"), None),
    ]
    assert json.loads(raw)["serial"] == 0


def test_a_service_key_in_a_reconciler_variable_is_memoised(case, monkeypatch) -> None:
    """The service's keys may read RECONCILER_* variables: such a reference does not keep a repeated plan from the
    memo, and a change of its value is still noticed (the plan holds no secret, so the output is the same)."""
    directory, env = case("mixed")
    with (directory / "reconciler.yaml").open("a") as handle:
        handle.write(
            "service:\n  public_url: https://connect.example.com\n"
            "  api_keys: [{name: runtime, key: '${env:RECONCILER_API_KEY_EU}', tenants: ['*']}]\n"
        )
    env = {**env, "RECONCILER_API_KEY_EU": "memo-api-key-value"}
    first = plan(env)
    calls = planned_count(monkeypatch)
    second = plan(env)
    assert calls[0] == 0, "the second plan was computed again"
    assert second == first == fresh(env)
    assert "memo-api-key-value" not in first[1] + first[2]


def test_a_check_recorded_beside_the_state_is_planned_afresh(case, monkeypatch) -> None:
    """The refresh-token foresight reads the checks kept beside the state: a check recorded since the memo was
    written (another tenant found working) changes the plan, and the memo is not used."""
    directory, env = case("foresight_refresh_tokens_unused")
    calls = planned_count(monkeypatch)
    before = plan(env)
    assert "2 installation(s) reach that" in before[1]
    assert plan(env) == before and calls[0] == 1  # answered from the memo
    log = directory / "state" / "default.service" / "checks.jsonl"
    line = {"address": "installation.acme.lapses-soon", "at": "2026-11-01T06:00:00.000000Z", "outcome": "ok",
            "message": ""}
    log.write_text(log.read_text() + json.dumps(line) + "\n")
    after = plan(env)
    assert calls[0] == 2 and "1 installation(s) reach that" in after[1]
    assert after == fresh(env)
