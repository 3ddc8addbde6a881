"""The authorization service end to end over real HTTP: `apply --auth-mode defer` issues signed links, tenants open
them (a scripted user answers the sandbox's consent page), the service completes the sign-ins into state, and
forged, tampered, expired, replayed and withdrawn ones are refused with nothing recorded."""

from __future__ import annotations

import datetime as dt
import json

import httpx
import pytest

from tests.service_support import ServiceWorld, links_in, sign_in, tenants_yaml


def _deferred(world: ServiceWorld, count: int) -> dict[str, str]:
    world.write(tenants_yaml(count))
    result = world.cli("apply", "--auto-approve", "--auth-mode", "defer")
    assert result.exit_code == 3, result.stdout + result.stderr
    links = links_in(result.stdout, world.public_url)
    assert len(links) == count, result.stdout
    return links


def test_twenty_tenants_sign_in_through_their_links_and_the_plan_converges(service_world: ServiceWorld) -> None:
    links = _deferred(service_world, 20)
    assert all(link.startswith(f"{service_world.public_url}/authorize/installation.eu-") and "?sig=" in link for link in links.values())
    plan = service_world.cli("plan", "--format", "json")
    entries = {c["address"]: c for c in json.loads(plan.stdout)["changes"] if c["pending"]}
    assert {a: c["link"] for a, c in entries.items()} == links
    service_world.start()
    with httpx.Client(timeout=20) as client:
        for address, link in links.items():
            done = sign_in(link, client)
            assert done.status_code == 200, (address, done.text)
            assert "Signed in" in done.text and "<code>vso.project</code>" in done.text
    after = service_world.cli("plan", "--detailed-exitcode")
    assert after.exit_code == 0 and "No changes." in after.stdout, after.stdout
    state = service_world.state()["resources"]
    grants = service_world.sandbox.provider.live_grants()
    assert len(grants) == 20
    for address in links:
        record = state[address]
        assert record["status"] == "authorized" and "pending" not in record
        assert sorted(record["granted_scopes"]) == sorted(record["scopes"])


def _serial(world: ServiceWorld) -> int:
    return int(world.state()["serial"])


def test_forged_tampered_replayed_and_wrong_state_are_refused_with_nothing_recorded(service_world: ServiceWorld) -> None:
    links = _deferred(service_world, 2)
    service_world.start()
    first, second = links.values()
    serial = _serial(service_world)
    with httpx.Client(timeout=20) as client:
        assert client.get(first.split("?")[0]).status_code == 403  # no signature
        assert client.get(first[:-3] + "AAA").status_code == 403  # tampered signature
        swapped = second.split("?")[0] + "?" + first.split("?")[1]  # another link's signature
        assert client.get(swapped).status_code == 403
        wrong = client.get(f"{service_world.public_url}/connector/callback?code=abc&state=not-a-state")
        assert wrong.status_code == 400
        assert client.get(f"{service_world.public_url}/connector/callback").status_code == 400
        assert _serial(service_world) == serial
        opened = client.get(first)
        from reconciler.sandbox.agent import answer_consent

        callback = answer_consent(opened.headers["Location"], follow=False, client=client)
        done = client.get(callback)
        assert done.status_code == 200
        completed = _serial(service_world)
        assert completed > serial
        replay = client.get(callback)
        assert replay.status_code == 400 and _serial(service_world) == completed
        again = client.get(first)
        assert again.status_code == 410 and "already completed" in again.text
        assert f"reconciler authorize --reissue {next(iter(links))}" in again.text
        assert _serial(service_world) == completed


def test_a_denied_sign_in_leaves_the_link_usable(service_world: ServiceWorld) -> None:
    links = _deferred(service_world, 1)
    service_world.start()
    link = next(iter(links.values()))
    serial = _serial(service_world)
    with httpx.Client(timeout=20) as client:
        denied = sign_in(link, client, approve=False)
        assert denied.status_code == 400 and "declined" in denied.text
        assert _serial(service_world) == serial
        assert sign_in(link, client).status_code == 200


def test_an_expired_link_is_gone(service_world: ServiceWorld) -> None:
    links = _deferred(service_world, 1)
    service_world.clock = lambda: dt.datetime.now(dt.UTC) + dt.timedelta(days=8)
    service_world.start()
    serial = _serial(service_world)
    with httpx.Client(timeout=20) as client:
        gone = client.get(next(iter(links.values())))
    assert gone.status_code == 410 and "expired" in gone.text and "--reissue" in gone.text
    assert _serial(service_world) == serial


def test_a_withdrawn_authorization_refuses_its_link_and_its_callback(service_world: ServiceWorld) -> None:
    """An apply that withdraws a pending authorization (its scopes changed) makes its link and an attempt already
    under way refuse, with no restart of the service."""
    links = _deferred(service_world, 1)
    address, link = next(iter(links.items()))
    service_world.start()
    with httpx.Client(timeout=20) as client:
        opened = client.get(link)
        assert opened.status_code == 302
        from reconciler.sandbox.agent import answer_consent

        callback = answer_consent(opened.headers["Location"], follow=False, client=client)
        service_world.write(tenants_yaml(1).replace("[vso.code, vso.project]", "[vso.code, vso.project, vso.work_full]"))
        again = service_world.cli("apply", "--auto-approve", "--auth-mode", "defer")
        assert again.exit_code == 3, again.stdout + again.stderr
        serial = _serial(service_world)
        late = client.get(callback)
        assert late.status_code == 410 and _serial(service_world) == serial
        old = client.get(link)
        assert old.status_code == 410
        new_link = links_in(again.stdout, service_world.public_url)[address]
        assert new_link != link and sign_in(new_link, client).status_code == 200


def test_authorize_links_prints_the_recorded_links(service_world: ServiceWorld) -> None:
    links = _deferred(service_world, 3)
    printed = service_world.cli("authorize", "--links")
    assert printed.exit_code == 0, printed.stderr
    assert links_in(printed.stdout, service_world.public_url) == links
    assert "eu-0:" in printed.stdout and "3 sign-in links." in printed.stdout


@pytest.mark.parametrize("path", ["/healthz", "/metrics"])
def test_operations_endpoints(service_world: ServiceWorld, path: str) -> None:
    _deferred(service_world, 2)
    service_world.start()
    response = httpx.get(service_world.public_url + path, timeout=10)
    assert response.status_code == 200
    if path == "/metrics":
        assert "reconciler_pending_links 2.0" in response.text
        assert "reconciler_authorizations_completed_total" in response.text


def test_apply_in_json_lists_each_pending_sign_in_with_its_link(service_world: ServiceWorld) -> None:
    """`apply --format json`: the plan on stderr, one document on stdout whose pending entries carry `link`."""
    service_world.write(tenants_yaml(2))
    result = service_world.cli("apply", "--auto-approve", "--auth-mode", "defer", "--format", "json")
    assert result.exit_code == 3, result.stderr
    document = json.loads(result.stdout)
    assert [(p["address"], p["tenant"]) for p in document["pending"]] == [
        ("installation.eu-0.ado", "eu-0"), ("installation.eu-1.ado", "eu-1")
    ]
    assert all(p["link"].startswith(f"{service_world.public_url}/authorize/") for p in document["pending"])
    assert document["error"] is None and "Plan:" in result.stderr


def test_an_administrator_back_from_an_admin_consent_link_is_told_what_happens_next(service_world: ServiceWorld) -> None:
    """The admin-consent link of `reconciler preflight` returns to the service's callback: a page, nothing recorded,
    nothing of the request echoed."""
    _deferred(service_world, 1)
    service_world.start()
    serial = _serial(service_world)
    callback = f"{service_world.public_url}/connector/callback"
    with httpx.Client(timeout=20) as client:
        given = client.get(callback, params={"admin_consent": "True", "tenant": "<b>x</b>", "state": "admin-consent.eu-1"})
        assert given.status_code == 200 and "Admin consent given" in given.text and "<b>x</b>" not in given.text
        refused = client.get(callback, params={"error": "access_denied", "state": "admin-consent.eu-1"})
        assert refused.status_code == 400 and "Admin consent was not given" in refused.text
    assert _serial(service_world) == serial
