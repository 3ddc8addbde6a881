"""The service on PostgreSQL state: two instances on one configuration behind one public URL (a link opened on
either is completed on either: attempts live in the shared store), a CLI apply running at the same time, and many
concurrent completions — none lost, none recorded twice, no lock held afterwards. The full 1,000 completions run
in the reliability suite (tests/reliability/test_service_load.py); see tests/service_load_support.py for how the
two instances stand behind one URL."""

from __future__ import annotations

import httpx

from tests.service_load_support import (
    PG_BACKEND,
    concurrent_completions,
    lock_holders,
    sign_in_via,
    state_backend,
    two_instances,
)
from tests.service_support import API_KEY_ALL, ServiceWorld, links_in, tenants_yaml


def test_a_link_opened_on_one_instance_completes_on_the_other(service_world: ServiceWorld, pg_database: str) -> None:
    world = service_world
    world.env["RECONCILER_PG_DSN"] = pg_database
    world.write(tenants_yaml(4) + PG_BACKEND)
    deferred = world.cli("apply", "--auto-approve", "--auth-mode", "defer")
    assert deferred.exit_code == 3, deferred.stdout + deferred.stderr
    links = links_in(deferred.stdout, world.public_url)
    with two_instances(world) as (a, b), httpx.Client(timeout=30) as client:
        routes = dict(zip(sorted(links), [(a, b), (b, a), (b, b), (a, a)], strict=True))
        for address, (opener, receiver) in routes.items():
            done = sign_in_via(world, links[address], opener, receiver, client)
            assert done.status_code == 200, (address, opener, receiver, done.text)
            again = client.get(links[address].replace(world.public_url, receiver if opener == a else a))
            assert again.status_code == 410 and "already completed" in again.text
        token = client.get(f"{b}/v1/installations/{min(links)}/token", headers={"Authorization": f"Bearer {API_KEY_ALL}"})
        assert token.status_code == 200 and token.json()["access_token"]  # read from PostgreSQL off the event loop
    doc = state_backend(pg_database).read()
    assert doc is not None
    assert all(doc.resources[a].status == "authorized" for a in links)  # type: ignore[union-attr]
    assert len(world.sandbox.provider.live_grants()) == 4
    assert lock_holders(pg_database) == 0


def test_concurrent_completions_through_two_instances_during_an_apply(service_world: ServiceWorld, pg_database: str) -> None:
    """60 sign-ins (32 at a time) through two instances while a CLI apply adds a tenant: each recorded once."""
    figures = concurrent_completions(service_world, pg_database, 60)
    assert (figures.completions, figures.lost, figures.twice, figures.locks_held) == (61, 0, 0, 0)
