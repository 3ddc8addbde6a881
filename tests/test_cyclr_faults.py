"""Faults of the Cyclr API through the CLI against the cyclr_sandbox: an expired partner token is fetched again once,
429 with Retry-After and 500 are retried, a hung install never installs twice, a 400's Message is what the user
reads, and an apply stopped half way keeps exactly what it created."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reconciler.sandbox import SandboxServer
from tests.cyclr_support import admin, cyclr_config, run_cli, state_of

DEFER = ("apply", "--auto-approve", "--auth-mode", "defer")


@pytest.fixture
def one_tenant(cyclr_dir: Path, cyclr_sandbox: SandboxServer) -> Path:
    (cyclr_dir / "reconciler.yaml").write_text(cyclr_config(cyclr_sandbox.url, ("acme",)))
    return cyclr_dir


def _faults(cyclr_sandbox: SandboxServer, endpoint: str, *faults: object) -> None:
    admin(cyclr_sandbox, "faults", {"endpoint": endpoint, "faults": list(faults)})


def test_an_expired_partner_token_is_fetched_again_once(one_tenant: Path, cyclr_sandbox: SandboxServer) -> None:
    assert run_cli(*DEFER).exit_code == 3
    tokens = len(cyclr_sandbox.cyclr.bearers)
    admin(cyclr_sandbox, "cyclr/expire-bearers")
    refreshed = run_cli("refresh")
    assert refreshed.exit_code == 0, refreshed.output
    assert len(cyclr_sandbox.cyclr.bearers) == 1 and tokens >= 1  # the old ones gone, one new one fetched


def test_a_partner_token_refused_twice_names_the_partner_credentials(one_tenant: Path, cyclr_sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CYCLR_CLIENT_SECRET", "not-the-partner-secret-at-all")
    result = run_cli(*DEFER)
    assert result.exit_code == 1
    assert "partner-client" in result.output and "credentials" in result.output and "Traceback" not in result.output
    assert not (one_tenant / "state" / "default.json").exists()  # nothing written


def test_429_and_500_are_retried_and_retry_after_is_honoured(one_tenant: Path, cyclr_sandbox: SandboxServer) -> None:
    _faults(cyclr_sandbox, "cyclr", {"status": 429, "retry_after": "1"}, 500, 503)
    result = run_cli(*DEFER)
    assert result.exit_code == 3, result.output
    assert "cyclr" not in cyclr_sandbox.provider.faults or not cyclr_sandbox.provider.faults["cyclr"]  # every fault was met
    assert len(cyclr_sandbox.cyclr.account_connectors) == 1


def test_a_hung_install_is_not_installed_twice(one_tenant: Path, cyclr_sandbox: SandboxServer) -> None:
    _faults(cyclr_sandbox, "cyclr-install", {"kind": "slow", "seconds": 3})
    result = run_cli("--http-timeout", "1", *DEFER)
    assert result.exit_code == 3, result.output
    assert len(cyclr_sandbox.cyclr.account_connectors) == 1  # the slow install went through: listed, not repeated
    assert state_of(one_tenant)["installation.acme.ado-main"]["account_connector"]["account_connector_id"]


def test_a_cyclr_message_is_what_the_user_reads(one_tenant: Path, cyclr_sandbox: SandboxServer) -> None:
    _faults(cyclr_sandbox, "cyclr-install", {"status": 400, "message": "Scope vso.code is not registered for this app"})
    result = run_cli(*DEFER)
    assert result.exit_code == 1
    assert "Scope vso.code is not registered for this app" in result.output and "Traceback" not in result.output


def test_an_apply_stopped_half_way_keeps_what_it_created(one_tenant: Path, cyclr_sandbox: SandboxServer) -> None:
    """The account is created, its install fails: the account is in state, and the next plan only installs."""
    _faults(cyclr_sandbox, "cyclr-install", *([500] * 8))
    failed = run_cli(*DEFER)
    assert failed.exit_code == 1
    state = state_of(one_tenant)
    assert "account.acme" in state and "installation.acme.ado-main" not in state
    cyclr_sandbox.provider.faults.clear()
    plan = json.loads(run_cli("plan", "--format", "json").output)
    actions = {c["address"]: c["action"] for c in plan["changes"] if c["action"] != "noop"}
    assert actions == {"installation.acme.ado-main": "create"}
    assert run_cli(*DEFER).exit_code == 3
    assert len(cyclr_sandbox.cyclr.accounts) == 1 and len(cyclr_sandbox.cyclr.account_connectors) == 1
