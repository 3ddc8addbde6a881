"""Links on the Cyclr platform: opening one mints a fresh one-use sign-in token and sends the tenant through Cyclr's
sign-in (the sandbox's), which returns them to the service; the service records the account connector signed in
once the platform says so. A used return is refused."""

from __future__ import annotations

import os
from pathlib import Path

import httpx

from reconciler.app.workspace import Workspace
from reconciler.auth.transport import Http
from reconciler.sandbox import SandboxServer
from reconciler.service.context import ServiceContext
from reconciler.service.server import ServiceServer
from tests.cyclr_support import assert_no_secret, run_cli, state_of
from tests.sandbox_support import free_port
from tests.service_support import links_in, sign_in


def test_a_cyclr_sign_in_through_the_services_link(cyclr_dir: Path, cyclr_sandbox: SandboxServer) -> None:
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    config = (cyclr_dir / "reconciler.yaml").read_text()
    (cyclr_dir / "reconciler.yaml").write_text(config.replace("partners:\n", f"service:\n  public_url: {public}\npartners:\n", 1))
    deferred = run_cli("apply", "--auto-approve", "--auth-mode", "defer")
    assert deferred.exit_code == 3, deferred.output
    links = links_in(deferred.output, public)
    assert sorted(links) == ["installation.acme.ado-main", "installation.globex.ado-main", "installation.initech.ado-main"]
    with Http(timeout=10) as http:
        ctx = ServiceContext.open(Workspace(cyclr_dir, dict(os.environ)), http=http)
        with ServiceServer(ctx, port=port), httpx.Client(timeout=20) as client:
            _, link = min(links.items())
            opened = client.get(link)
            assert opened.status_code == 302 and "/connectorauth/updateaccountconnectoroauth?" in opened.headers["Location"]
            from reconciler.sandbox.agent import answer_consent

            back = answer_consent(opened.headers["Location"], follow=False, client=client)
            assert back.startswith(f"{public}/connector/platform-return?attempt=")
            done = client.get(back)
            assert done.status_code == 200 and "Signed in" in done.text
            assert client.get(back).status_code == 400  # a return is taken once
            assert client.get(link).status_code == 410
            for other in sorted(links)[1:]:
                assert sign_in(links[other], client).status_code == 200
    records = state_of(cyclr_dir)
    for address in links:
        assert records[address]["status"] == "authorized" and records[address]["account_connector"]["authenticated"]
    plan = run_cli("plan", "--detailed-exitcode")
    assert plan.exit_code == 0 and "No changes" in plan.output, plan.output
    assert_no_secret(deferred.output + plan.output, cyclr_sandbox)
