"""Entra ID preflight against the sandbox, over real HTTP: the app's tenant against `tenant_id`, scopes not on the
app registration, admin-only permissions (one admin-consent step per tenant, with its URL, before anyone signs in),
and what apply does with each — nothing asked of anyone, and nothing written, when a sign-in would fail."""

from __future__ import annotations

import base64
import json
from urllib.parse import parse_qs, urlsplit

import httpx

from tests.conftest import run
from tests.sandbox_support import APPLY, ENTRA_ID, ENTRA_SECRET, ENV, installation

KEY = base64.b64encode(b"preflight-key-0123456789abcdef01").decode()
RENV = {**ENV, "RECONCILER_STATE_KEY": KEY}
DIRECTORY = "6a5b0d1e-0000-4000-8000-000000000001"  # the directory the sandbox registers apps in
RESOURCE = "499b84ac-1321-427f-aa17-267ca6975798"


def _tenant(directory, tenant_id: str) -> None:  # type: ignore[no-untyped-def]
    """Point the Entra partner at one directory (its endpoints follow)."""
    path = directory / "reconciler.yaml"
    text = path.read_text().replace("tenant_id: organizations", f"tenant_id: {tenant_id}")
    path.write_text(text.replace("/organizations/oauth2/", f"/{tenant_id}/oauth2/"))


def _installs(*tenants: str, scopes: tuple[str, ...] = ("vso.work_full", "vso.project")) -> str:
    places = [("acme-org", "Platform"), ("globex", "Operations"), ("acme-org", "Web")]
    return "".join(installation(t, "ado", "entra", *places[i % 3], list(scopes)) for i, t in enumerate(tenants))


def _preflight(*args: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    result = run(["-C", ".", "preflight", "--format", "json", *args], RENV)
    assert result.stdout.startswith("{"), (result.exit_code, result.stdout, result.stderr)
    return result.exit_code, json.loads(result.stdout)


def test_a_clean_app_passes_and_apply_signs_in(sandbox_config) -> None:
    _sandbox, directory, write, _browser = sandbox_config
    write(_installs("acme"))
    _tenant(directory, DIRECTORY)
    code, doc = _preflight()
    assert code == 0
    assert doc["partners"] == [{"partner": "entra", "checked": True, "problems": [], "warnings": [],
                                "admin_only_scopes": [], "notes": []}]
    assert doc["admin_consents"] == []
    assert run(APPLY, RENV).exit_code == 0


def test_an_app_unknown_in_tenant_id_is_a_warning_that_stops_nothing(sandbox_config) -> None:
    """tenant_id names a directory the app is not known in (AADSTS700016): a single-tenant app from elsewhere (every
    sign-in fails) or a multi-tenant one that directory has yet to consent to (the first sign-in provisions it).
    Preflight cannot tell them apart from there: a warning (exit 2), and apply goes on."""
    _sandbox, directory, write, browser = sandbox_config
    write(_installs("acme"))
    _tenant(directory, "contoso.onmicrosoft.com")
    code, doc = _preflight()
    assert code == 2 and doc["partners"][0]["problems"] == []
    [warning] = doc["partners"][0]["warnings"]
    assert f"the app {ENTRA_ID} is not known in tenant contoso.onmicrosoft.com (AADSTS700016)" in warning
    assert "app_tenant_id" in warning
    text = run(["-C", ".", "preflight"], RENV)
    assert text.exit_code == 2 and "partner.entra: warning" in text.stdout
    applied = run(APPLY, RENV)
    assert applied.exit_code == 0, applied.stderr  # the sandbox's app is multi-tenant: the sign-in provisions it
    assert "AADSTS700016" in applied.stdout and len(browser.opened) == 1
    assert ENTRA_SECRET not in applied.stderr + applied.stdout + text.stdout + json.dumps(doc)


def test_scopes_not_on_the_registration_are_a_problem(sandbox_config) -> None:
    sandbox, directory, write, browser = sandbox_config
    sandbox.provider.apps[ENTRA_ID].scopes = ["vso.work_full", "vso.project"]
    write(_installs("acme", scopes=("vso.work_full", "vso.build")))
    _tenant(directory, DIRECTORY)
    code, doc = _preflight()
    assert code == 1
    assert doc["partners"][0]["problems"] == [
        (f"scopes not on the app registration of {ENTRA_ID}: vso.build (add them under API permissions, Azure "
        "DevOps, delegated)")
    ]
    applied = run(APPLY, RENV)
    assert applied.exit_code == 1 and "vso.build" in applied.stderr and browser.opened == []
    planned = json.loads(run(["-C", ".", "plan", "--refresh", "--format", "json"], RENV).stdout)
    assert [w for w in planned["warnings"] if "preflight" in w] == [
        f"partner.entra: {doc['partners'][0]['problems'][0]} (preflight: every sign-in with it would fail)"
    ]


def _consent_as_admin(url: str) -> dict[str, list[str]]:
    """An administrator opens the admin-consent link and approves: the query the sandbox redirects to."""
    page = httpx.get(url)
    assert page.status_code == 200, page.text
    consent = page.text.split('name="consent" value="')[1].split('"')[0]
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(url))
    answer = httpx.post(f"{origin}/oauth2/consent", data={"consent": consent, "decision": "approve"})
    assert answer.status_code == 302
    return parse_qs(urlsplit(answer.headers["location"]).query)


def test_admin_only_scopes_give_one_admin_consent_step_per_tenant(sandbox_config) -> None:
    sandbox, directory, write, _browser = sandbox_config
    sandbox.provider.set_consent_policy({"admin_only": ["vso.project"]})
    write(_installs("acme", "globex") + _installs("initech", scopes=("vso.work_full",)))
    _tenant(directory, DIRECTORY)
    code, doc = _preflight()
    assert code == 2
    assert doc["partners"][0]["admin_only_scopes"] == ["vso.project"]
    steps = {s["tenant"]: s for s in doc["admin_consents"]}
    assert sorted(steps) == ["acme", "globex"]  # initech asks for no admin-only scope
    url = steps["acme"]["url"]
    query = parse_qs(urlsplit(url).query)
    assert urlsplit(url).path == f"/{DIRECTORY}/v2.0/adminconsent"
    assert query["client_id"] == [ENTRA_ID] and query["state"] == ["admin-consent.acme"]
    assert query["scope"] == [f"{RESOURCE}/vso.project {RESOURCE}/vso.work_full"]
    assert steps["acme"]["installations"] == ["installation.acme.ado"]
    assert "tenant acme (partner.entra: vso.project, vso.work_full):" in run(["-C", ".", "preflight"], RENV).stdout
    assert run(["-C", ".", "preflight", "--tenant", "initech"], RENV).exit_code == 0

    planned = json.loads(run(["-C", ".", "plan", "--refresh", "--format", "json"], RENV).stdout)
    assert planned["format_version"] == "1.2"
    assert planned["admin_consents"] == doc["admin_consents"]
    assert any(w.startswith("partner.entra: vso.project may be consented to by an administrator only: 2 tenant(s)")
               for w in planned["warnings"])
    plain = json.loads(run(["-C", ".", "plan", "--format", "json"], RENV).stdout)
    assert plain["admin_consents"] == [] and not any("administrator" in w for w in plain["warnings"])  # no request
    text = run(["-C", ".", "plan", "--refresh"], RENV).stdout
    assert "Admin consent needed first" in text and f"  acme (partner.entra: vso.project, vso.work_full):\n    {url}\n" in text
    markdown = run(["-C", ".", "plan", "--refresh", "--format", "markdown"], RENV).stdout
    assert "**Admin consent needed first**" in markdown and "| acme | `entra` | vso.project, vso.work_full | [admin consent](" in markdown

    # Without the admin's consent a user's sign-in is refused (AADSTS65001): apply says what is needed.
    refused = run([*APPLY, "--target", "installation.acme.*"], RENV)
    assert refused.exit_code == 1
    assert f"  acme (partner.entra: vso.project, vso.work_full):\n    {url}" in refused.stdout
    assert "an administrator of the tenant's directory must consent first" in refused.stderr, refused.stderr
    assert "AADSTS65001" in refused.stderr

    granted = _consent_as_admin(url)
    assert granted["admin_consent"] == ["True"] and granted["state"] == ["admin-consent.acme"]
    assert run([*APPLY, "--target", "installation.acme.*"], RENV).exit_code == 0
    plan = run(["-C", ".", "apply", "--auto-approve", "--auth-mode", "defer"], RENV)  # the rest, for later
    assert plan.exit_code == 3
    assert "  globex (partner.entra: vso.project, vso.work_full):" in plan.stdout
    everything = json.dumps(doc) + plan.stderr + plan.stdout + refused.stderr
    assert ENTRA_SECRET not in everything


def test_what_cannot_be_checked_is_a_note_and_never_stops_apply(sandbox_config) -> None:
    sandbox, directory, write, _browser = sandbox_config
    write(_installs("acme"))
    code, doc = _preflight()  # tenant_id: organizations
    assert code == 0 and doc["partners"][0]["checked"] is False
    assert "tenant_id organizations names no directory" in doc["partners"][0]["notes"][0]
    _tenant(directory, DIRECTORY)
    sandbox.provider.set_consent_policy({"graph_readable": False})
    code, doc = _preflight()
    assert code == 0 and "Application.Read.All" in doc["partners"][0]["notes"][0]
    applied = run(APPLY, RENV)
    assert applied.exit_code == 0 and "Application.Read.All" not in applied.stdout + applied.stderr  # not a warning


def _home(directory, home: str) -> None:  # type: ignore[no-untyped-def]
    """Declare the Entra partner's app_tenant_id (its app's own directory)."""
    path = directory / "reconciler.yaml"
    path.write_text(path.read_text().replace("    tenant_id: organizations\n",
                                             f"    tenant_id: organizations\n    app_tenant_id: {home}\n"))


def test_a_multi_tenant_partner_is_checked_in_the_directory_its_app_is_registered_in(sandbox_config) -> None:
    sandbox, directory, write, browser = sandbox_config
    write(_installs("acme"))
    _home(directory, DIRECTORY)
    code, doc = _preflight()
    assert code == 0 and doc["partners"][0]["checked"] is True and doc["partners"][0]["problems"] == []

    # The same app registered for its own directory only: every sign-in through `organizations` would fail.
    sandbox.provider.apps[ENTRA_ID].sign_in_audience = "AzureADMyOrg"
    code, doc = _preflight()
    assert code == 1
    assert "accepts only users of its own directory" in doc["partners"][0]["problems"][0]
    assert "but tenant_id is organizations" in doc["partners"][0]["problems"][0]
    applied = run(APPLY, RENV)
    assert applied.exit_code == 1 and "AzureADMyOrg" in applied.stderr and browser.opened == []
    # what preflight foresaw: the sign-in page refuses the app at `organizations`
    with httpx.Client() as client:
        page = client.get(f"{sandbox.url}/organizations/oauth2/v2.0/authorize", params={
            "client_id": ENTRA_ID, "response_type": "code", "state": "s", "scope": f"{RESOURCE}/vso.project",
            "redirect_uri": sandbox.provider.apps[ENTRA_ID].redirect_uris[0], "code_challenge": "x" * 43,
            "code_challenge_method": "S256"})
    assert page.status_code == 400 and "AADSTS50194" in page.text

    path = directory / "reconciler.yaml"  # a wrong home directory
    path.write_text(path.read_text().replace(f"app_tenant_id: {DIRECTORY}\n", "app_tenant_id: contoso.onmicrosoft.com\n"))
    code, doc = _preflight()
    assert code == 1 and doc["partners"][0]["problems"] == [
        f"the app {ENTRA_ID} is not registered in tenant contoso.onmicrosoft.com (AADSTS700016): check app_tenant_id"
    ]
