"""A migration campaign against the sandbox: a legacy partner declares `migrate_to: entra`; the plan shows per
tenant the re-authorizations the move needs, with scopes in the Entra form; `--target` moves one wave at a time;
`status` tracks the progress; once all have moved, the plan is "No changes"."""

from __future__ import annotations

import base64
import json

from tests.conftest import run
from tests.sandbox_support import APPLY, ENTRA_SECRET, ENV, LEGACY_SECRET

KEY = base64.b64encode(b"migrate-key-0123456789abcdef0123").decode()
RENV = {**ENV, "RECONCILER_STATE_KEY": KEY}
RESOURCE = "499b84ac-1321-427f-aa17-267ca6975798"


def _tenants(names: list[str]) -> str:
    """Installations that name only their connector: the connector's default partner (the legacy one, declared
    first) is theirs."""
    organizations = {"acme": ("acme-org", "Platform"), "globex": ("globex", "Operations"), "initech": ("acme-org", "Web")}
    return "".join(
        f"  {t}:\n    installations:\n      ado:\n        connector: microsoft-azure-devops\n"
        f"        parameters: {{organization: {organizations[t][0]}, project: {organizations[t][1]}}}\n"
        "        scopes: [vso.work_full, vso.project]\n"
        for t in names
    )


def _migrating(directory) -> None:  # type: ignore[no-untyped-def]
    text = (directory / "reconciler.yaml").read_text()
    marker = "  legacy:\n    connector: microsoft-azure-devops\n"
    assert text.count(marker) == 1
    (directory / "reconciler.yaml").write_text(text.replace(marker, marker + "    migrate_to: entra\n"))


def _status() -> dict:  # type: ignore[type-arg]
    result = run(["-C", ".", "status", "--format", "json"], RENV)
    assert result.exit_code in (0, 2), result.stderr
    return json.loads(result.stdout)


def test_a_campaign_moves_waves_of_tenants_to_entra_and_status_tracks_it(sandbox_config) -> None:
    sandbox, directory, write, _ = sandbox_config
    tenants = ["acme", "globex", "initech"]
    write(_tenants(tenants))
    assert run(APPLY, RENV).exit_code == 0
    assert {e["auth"] for e in _status()["installations"]} == {"azure-devops-oauth"}
    assert _status()["migrations"] == []

    _migrating(directory)
    plan = run(["-C", ".", "plan", "--format", "json"], RENV)
    doc = json.loads(plan.stdout)
    moving = {c["address"]: c for c in doc["changes"] if c["kind"] == "installation"}
    assert {c["action"] for c in moving.values()} == {"reauthorize"}
    for change in moving.values():
        assert "partner changed: legacy -> entra" in change["reasons"]
        assert f"scopes requested in the entra-id form: {RESOURCE}/vso.project, {RESOURCE}/vso.work_full, offline_access" in change["reasons"]
    markdown = run(["-C", ".", "plan", "--format", "markdown"], RENV).stdout
    assert all(f"tenant <code>{t}</code>" in markdown for t in tenants)  # a section per tenant
    assert _status()["migrations"] == []  # status reports what is applied: the campaign starts with its first wave

    wave = run([*APPLY, "--target", "installation.acme.*"], RENV)  # the first wave: one tenant
    assert wave.exit_code == 0, wave.stderr
    status = _status()
    by_address = {e["address"]: e for e in status["installations"]}
    assert by_address["installation.acme.ado"]["auth"] == "entra-id"
    assert by_address["installation.acme.ado"]["migration"]["progress"] == "migrated"
    assert by_address["installation.globex.ado"]["migration"]["progress"] == "pending"
    assert status["migrations"] == [{"from": "legacy", "to": "entra", "migrated": 1, "pending": 2, "failed": 0}]
    assert "migration legacy -> entra: 1 migrated, 2 pending, 0 failed" in run(["-C", ".", "status"], RENV).stdout
    granted = {e["address"]: e["scopes"]["granted"] for e in status["installations"]}
    assert granted["installation.acme.ado"] == ["vso.project", "vso.work_full"]  # normalised from the Entra form

    assert run(APPLY, RENV).exit_code == 0  # the rest
    status = _status()
    assert status["migrations"] == [{"from": "legacy", "to": "entra", "migrated": 3, "pending": 0, "failed": 0}]
    assert status["summary"]["healthy"] == 3
    assert run(["-C", ".", "plan", "--detailed-exitcode"], RENV).exit_code == 0
    flavours = sorted((g["flavour"], g["revoked"]) for g in sandbox.provider.live_grants())
    assert [f for f, _ in flavours].count("entra-id") == 3
    html = run(["-C", ".", "status", "--format", "html"], RENV).stdout
    assert '<td class="num" data-progress="migrated">3</td>' in html
    outputs = run(["-C", ".", "status", "--format", "markdown"], RENV).stdout + json.dumps(status) + html
    assert LEGACY_SECRET not in outputs and ENTRA_SECRET not in outputs


def test_a_migration_to_an_unknown_or_other_partner_is_a_clear_error(sandbox_config) -> None:
    """migrate_to names a partner that does not exist: one line naming the file, line and key; nothing written."""
    _, directory, write, _ = sandbox_config
    write(_tenants(["acme"]))
    text = (directory / "reconciler.yaml").read_text()
    marker = "  legacy:\n    connector: microsoft-azure-devops\n"
    (directory / "reconciler.yaml").write_text(text.replace(marker, marker + "    migrate_to: entro\n"))
    result = run(["-C", ".", "plan"], RENV)
    assert result.exit_code == 1
    assert "reconciler.yaml:" in result.stderr and "partners.legacy.migrate_to: unknown partner 'entro'" in result.stderr
    assert "entra" in result.stderr  # did you mean
    assert not (directory / "state").exists()


def test_a_targeted_move_carries_only_the_leaving_partners_migrate_to(sandbox_config) -> None:
    """An installation moved by naming its new partner: `--target` leaves the old partner's own changes (which
    every other installation of it depends on) out of the plan; only a partner that declares the move comes along."""
    _, directory, write, _ = sandbox_config
    write(_tenants(["acme", "globex"]))
    assert run(APPLY, RENV).exit_code == 0
    text = (directory / "reconciler.yaml").read_text()
    marker = "  legacy:\n    connector: microsoft-azure-devops\n"
    text = text.replace(marker, marker + "    client_secret_expires: 2099-01-01\n")
    text = text.replace("  acme:\n    installations:\n      ado:\n        connector: microsoft-azure-devops\n",
                        "  acme:\n    installations:\n      ado:\n        partner: entra\n")
    (directory / "reconciler.yaml").write_text(text)
    plan = json.loads(run(["-C", ".", "plan", "--format", "json", "--target", "installation.acme.*"], RENV).stdout)
    actions = {c["address"]: c["action"] for c in plan["changes"]}
    assert actions["installation.acme.ado"] == "reauthorize" and actions["partner.legacy"] == "noop"
    (directory / "reconciler.yaml").write_text(text.replace(marker, marker + "    migrate_to: entra\n"))
    plan = json.loads(run(["-C", ".", "plan", "--format", "json", "--target", "installation.acme.*"], RENV).stdout)
    actions = {c["address"]: c["action"] for c in plan["changes"]}
    assert actions["partner.legacy"] == "update" and actions["installation.globex.ado"] == "noop"


def test_only_installations_a_campaign_moved_count_as_migrated(sandbox_config) -> None:
    """An installation created on the Entra partner directly (or moved there by hand) is no campaign's doing:
    `migrated` counts what the campaign moved, and keeps counting it through later re-authorizations."""
    _, directory, write, _ = sandbox_config
    direct = ("  initech:\n    installations:\n      ado:\n        partner: entra\n"
              "        parameters: {organization: acme-org, project: Web}\n        scopes: [vso.work_full, vso.project]\n")
    write(_tenants(["acme", "globex"]) + direct)
    assert run(APPLY, RENV).exit_code == 0
    _migrating(directory)
    assert run([*APPLY, "--target", "installation.acme.*"], RENV).exit_code == 0
    status = _status()
    assert status["migrations"] == [{"from": "legacy", "to": "entra", "migrated": 1, "pending": 1, "failed": 0}]
    by_address = {e["address"]: e for e in status["installations"]}
    assert by_address["installation.initech.ado"]["migration"] is None
    recorded = json.loads((directory / "state" / "default.json").read_text())["resources"]
    assert recorded["installation.acme.ado"]["migrated_from"] == "legacy"
    assert "migrated_from" not in recorded["installation.initech.ado"]

    # A later re-authorization on the Entra partner (a scope added) keeps the record of the move.
    path = directory / "reconciler.yaml"
    path.write_text(path.read_text().replace("scopes: [vso.work_full, vso.project]", "scopes: [vso.work_full, vso.project, vso.code]"))
    assert run([*APPLY, "--target", "installation.acme.*"], RENV).exit_code == 0
    assert _status()["migrations"][0]["migrated"] == 1


def test_a_format_5_state_keeps_the_installations_its_campaign_moved(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Format 5 recorded no `migrated_from`: an installation on the partner a recorded campaign names was moved by
    it, as format 5 counted; the upgrade records that, and nothing else."""
    from reconciler.state.model import decode_state

    def record(address: str, partner: str) -> dict:  # type: ignore[type-arg]
        tenant, name = address.split(".")[1:]
        return {"kind": "installation", "tenant": tenant, "name": name, "connector": "microsoft-azure-devops",
                "partner": partner, "auth": "entra-id", "parameters": {}, "scopes": ["vso.work_full"],
                "client_id": "c", "client_secret_ref": "${env:X}", "redirect_uri": "https://r/cb",
                "token_url": "https://t/token"}

    partner = {"kind": "partner", "name": "legacy", "connector": "microsoft-azure-devops", "auth": "azure-devops-oauth",
               "redirect_uri": "https://r/cb", "authorize_url": "https://a/authorize", "token_url": "https://t/token",
               "api_url": "https://api", "migrate_to": "entra"}
    raw = {"format_version": 5, "lineage": "0f5a2c3e-1b7d-4e8f-9a6b-2c4d6e8f0a1b", "serial": 3, "environment": "default",
           "resources": {"partner.legacy": partner, "installation.acme.ado": record("installation.acme.ado", "entra"),
                         "installation.globex.ado": record("installation.globex.ado", "legacy")}}
    doc = decode_state(json.dumps(raw).encode(), "state/default.json")
    assert doc.format_version == 6
    assert doc.resources["installation.acme.ado"].migrated_from == "legacy"  # type: ignore[union-attr]
    assert doc.resources["installation.globex.ado"].migrated_from is None  # type: ignore[union-attr]


def test_a_saved_plan_of_a_wave_records_the_move(sandbox_config) -> None:
    """`plan --out` then `apply PLANFILE`: the saved plan carries which partner's campaign moves each installation."""
    _, directory, write, _ = sandbox_config
    write(_tenants(["acme"]))
    assert run(APPLY, RENV).exit_code == 0
    _migrating(directory)
    assert run(["-C", ".", "plan", "--out", "wave.plan"], RENV).exit_code == 0
    applied = run(["-C", ".", "apply", "wave.plan", "--auto-approve", "--auth-mode", "browser", "--auth-timeout", "20"], RENV)
    assert applied.exit_code == 0, applied.stderr
    recorded = json.loads((directory / "state" / "default.json").read_text())["resources"]
    assert recorded["installation.acme.ado"]["migrated_from"] == "legacy"
    assert _status()["migrations"] == [{"from": "legacy", "to": "entra", "migrated": 1, "pending": 0, "failed": 0}]


def test_installations_waiting_for_their_wave_are_still_refreshed_and_checked(sandbox_config) -> None:
    """Until its wave moves it, an installation of a migrating partner works on that partner's app: `refresh`
    rotates its tokens and finds its grant revoked (it used to skip it as "the client changed"), so `status` counts
    it failed in the campaign."""
    sandbox, directory, write, _ = sandbox_config
    write(_tenants(["acme", "globex"]))
    assert run(APPLY, RENV).exit_code == 0
    _migrating(directory)
    assert run([*APPLY, "--target", "installation.acme.*"], RENV).exit_code == 0
    waiting = next(g for g in sandbox.provider.live_grants() if g["flavour"] == "azure-devops-oauth" and g["id"])
    sandbox.provider.expire()
    refreshed = run(["-C", ".", "refresh"], RENV)
    assert refreshed.exit_code == 0 and "2 refreshed" in refreshed.stdout, refreshed.stdout + refreshed.stderr
    assert any(g["refreshes"] == 1 for g in sandbox.provider.live_grants() if g["flavour"] == "azure-devops-oauth")
    sandbox.provider.revoke(client_id=waiting["client_id"])
    found = run(["-C", ".", "refresh", "--window", "0"], RENV)
    assert "installation.globex.ado: token revoked" in found.stdout + found.stderr
    status = _status()
    by_address = {e["address"]: e for e in status["installations"]}
    assert by_address["installation.globex.ado"]["status"] == "needs-reauthorization"
    assert status["migrations"] == [{"from": "legacy", "to": "entra", "migrated": 1, "pending": 0, "failed": 1}]
