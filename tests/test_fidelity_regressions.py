"""Regression tests from the plan fidelity test (tests/fidelity/): each is a shrunk history that once made apply,
plan, state and the provider disagree, replayed end to end against the sandbox."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from tests.conftest import run
from tests.sandbox_support import APPLY, ENV, installation

KEY = base64.b64encode(b"regression-key-0123456789abcdef0").decode()
RENV = {**ENV, "RECONCILER_STATE_KEY": KEY}
PLAN_EXIT = ["-C", ".", "plan", "--detailed-exitcode"]
OTHER_ID = "33333333-2222-4333-8444-legacyapp002"
OTHER_SECRET = "legacy-secret-other-app-UNIQUE"


def _resources(directory: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((directory / "state" / "default.json").read_text())["resources"]


def _sealed(directory: Path, address: str) -> dict:  # type: ignore[type-arg]
    return json.loads((directory / "state" / "default.credentials" / f"{address}.json").read_text())


def test_deferred_reauthorization_withdrawn_when_the_configuration_goes_back(sandbox_config) -> None:  # type: ignore[no-untyped-def]
    """A deferred re-authorization for a new partner client id, then the client id changed back: the plan updates
    the installation to withdraw the pending authorization (it used to say "up to date" and leave it in state,
    where `authorize` refused it and pointed at an apply that had nothing to do); after apply nothing is pending
    and the plan is empty."""
    sandbox, directory, write, browser = sandbox_config
    sandbox.provider.register_app(
        {
            "client_id": OTHER_ID,
            "client_secret": OTHER_SECRET,
            "flavour": "azure-devops-oauth",
            "redirect_uris": [sandbox.provider.apps["11111111-2222-4333-8444-legacyapp001"].redirect_uris[0]],
        }
    )
    env = {**RENV, "OTHER_SECRET": OTHER_SECRET}
    two = installation("t0", "i0", "legacy", "acme-org", "Platform", ["vso.work_full"]) + installation(
        "t1", "i1", "legacy", "acme-org", "Platform", ["vso.work_full"]
    )
    write(two)
    assert run(APPLY, env).exit_code == 0
    original = (directory / "reconciler.yaml").read_text()
    switched = original.replace(
        "client_id: 11111111-2222-4333-8444-legacyapp001\n    client_secret: ${env:LEGACY_SECRET}",
        f"client_id: {OTHER_ID}\n    client_secret: ${{env:OTHER_SECRET}}",
    )
    assert switched != original
    (directory / "reconciler.yaml").write_text(switched)
    deferred = run(["-C", ".", "apply", "--auto-approve", "--auth-mode", "defer"], env)
    assert deferred.exit_code == 3, deferred.stderr
    assert _resources(directory)["installation.t0.i0"]["pending"]["client_id"] == OTHER_ID

    (directory / "reconciler.yaml").write_text(original)  # the change is reverted before anyone signs in
    plan = json.loads(run(["-C", ".", "plan", "--format", "json"], env).stdout)
    actions = {c["address"]: (c["action"], c["reasons"]) for c in plan["changes"] if c["action"] != "noop"}
    withdrawn = ["pending authorization withdrawn: it no longer matches the configuration"]
    assert actions == {
        "partner.legacy": ("update", ["client_id changed", "client_secret reference changed"]),
        "installation.t0.i0": ("update", withdrawn),
        "installation.t1.i1": ("update", withdrawn),
    }
    result = run(APPLY, env)
    assert result.exit_code == 0, result.stderr
    for address in ("installation.t0.i0", "installation.t1.i1"):
        record = _resources(directory)[address]
        assert "pending" not in record and record["client_id"] == "11111111-2222-4333-8444-legacyapp001"
        assert "pending" not in _sealed(directory, address) and "tokens" in _sealed(directory, address)
    assert run(PLAN_EXIT, env).exit_code == 0
    nothing = run(["-C", ".", "authorize", "--auth-mode", "browser"], env)
    assert nothing.exit_code == 0 and "no longer matches" not in nothing.stderr
    assert len(browser.opened) == 2  # the first apply's consents only


def test_a_wave_records_the_campaign_of_the_partner_an_installation_names(sandbox_config) -> None:  # type: ignore[no-untyped-def]
    """An installation recorded on one legacy partner is moved to another in the change that starts that one's
    campaign (`migrate_to: entra`): the wave that moves it (`--target`) records the campaign on the partner it names,
    so status counts it as migrated (the wave used to carry only the partners it is recorded on and moves to, and
    the moved installation showed in no campaign)."""
    _, directory, write, _ = sandbox_config
    write(installation("t0", "i0", "legacy-b", "acme-org", "Platform", ["vso.work_full"]))
    path = directory / "reconciler.yaml"
    text = path.read_text()
    legacy = text[text.index("  legacy:\n") : text.index("  entra:\n")]
    path.write_text(text.replace(legacy, legacy + legacy.replace("  legacy:\n", "  legacy-b:\n", 1)))
    assert run(APPLY, RENV).exit_code == 0
    text = path.read_text()
    path.write_text(
        text.replace("partner: legacy-b", "partner: legacy").replace(
            "  legacy:\n    connector: microsoft-azure-devops\n",
            "  legacy:\n    connector: microsoft-azure-devops\n    migrate_to: entra\n",
        )
    )
    wave = run([*APPLY, "--target", "installation.t0.*"], RENV)
    assert wave.exit_code == 0, wave.stderr
    resources = _resources(directory)
    assert resources["installation.t0.i0"]["partner"] == "entra"
    assert resources["partner.legacy"]["migrate_to"] == "entra"
    status = json.loads(run(["-C", ".", "status", "--format", "json"], RENV).stdout)
    assert status["migrations"] == [{"from": "legacy", "to": "entra", "migrated": 1, "pending": 0, "failed": 0}]
    assert run(PLAN_EXIT, RENV).exit_code == 0
