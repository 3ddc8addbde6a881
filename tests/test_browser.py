"""A real headless Chromium clicks the consent page during `reconciler apply --auth-mode browser`.

The CLI runs as a real process with BROWSER pointing at tests/tools/chromium_approve.py (Python's `webbrowser`
honours BROWSER); the sandbox serves on 127.0.0.1; the redirect comes back to reconciler's loopback listener.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.sandbox import SandboxServer
from tests.sandbox_support import ENV, config_text, free_port, installation, register

TOOL = Path(__file__).parent / "tools" / "chromium_approve.py"


def _apply(directory: Path, decision: str) -> subprocess.CompletedProcess[str]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RECONCILER_") or k == "RECONCILER_CACHE_DIR"},
        **ENV,
        "BROWSER": f"{sys.executable} {TOOL} %s",
        "CHROMIUM_DECISION": decision,
    }
    command = [sys.executable, "-m", "reconciler", "-C", str(directory), "apply", "--auto-approve"]
    command += ["--auth-mode", "browser", "--auth-timeout", "60"]
    return subprocess.run(command, check=False, env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("partner", ["legacy", "entra"])
def test_chromium_approves_and_tokens_are_recorded(sandbox: SandboxServer, tmp_path: Path, partner: str) -> None:
    """Chromium clicks Approve: the loopback listener gets the code, apply records tokens and granted scopes."""
    port = free_port()
    register(sandbox, port)
    scopes = ["vso.work_full", "vso.project"]
    (tmp_path / "reconciler.yaml").write_text(
        config_text(sandbox.url, port, installation("acme", "ado", partner, "acme-org", "Platform", scopes))
    )
    result = _apply(tmp_path, "approve")
    assert result.returncode == 0, result.stderr
    assert "Authorization received" in result.stderr  # what Chromium showed after the redirect
    record = json.loads((tmp_path / "state" / "default.json").read_text())["resources"]["installation.acme.ado"]
    assert record["status"] == "authorized" and record["granted_scopes"] == sorted(scopes)
    assert [g["client_id"] for g in sandbox.provider.live_grants()] == [
        "11111111-2222-4333-8444-legacyapp001" if partner == "legacy" else "22222222-3333-4444-8555-entraapp0001"
    ]


def test_chromium_deny_records_nothing(sandbox: SandboxServer, tmp_path: Path) -> None:
    """Chromium clicks Deny: apply fails with a clear message and records no installation."""
    port = free_port()
    register(sandbox, port)
    (tmp_path / "reconciler.yaml").write_text(
        config_text(sandbox.url, port, installation("acme", "ado", "legacy", "acme-org", "Platform", ["vso.work_full"]))
    )
    result = _apply(tmp_path, "deny")
    assert result.returncode == 1
    assert "the user denied the authorization" in result.stderr and "Traceback" not in result.stderr
    state = json.loads((tmp_path / "state" / "default.json").read_text())
    assert "installation.acme.ado" not in state["resources"]
