"""`reconciler serve` stopped with SIGTERM while tenants complete their sign-ins, and the secrets scan of its logs.

What the service guarantees (reconciler/service/server.py): on SIGTERM it stops accepting; completions in flight
are finished and recorded when the provider answers within the grace period; one stuck on a provider that never
answers is abandoned with nothing recorded, its link still usable; the process exits 0 within 10 seconds either
way, holding no lock. Each run here: links deferred by `apply --auth-mode defer`, a first stop while a completion
waits on a slow token endpoint (it must be recorded), a second while one waits on a token endpoint that hangs
(the process must still exit 0 in time), a restart in which every remaining link completes, token API reads,
webhooks, a declined sign-in, and a last stop. The service's stderr over the whole run must be JSON lines holding
no secret, key, token, code, `state`, signature or PKCE verifier.

Figures: the "service" area counts stops, sign-ins completed, lost and stranded (goals 0), and secrets searched.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from reconciler.sandbox.agent import answer_consent
from reconciler.sandbox.model import Fault
from tests.reliability.conftest import Figures
from tests.reliability.service_proc import ServiceProcess, deferred
from tests.service_support import API_KEY_ALL, API_KEY_EU, SECRETS, ServiceWorld, sign_in
from tests.test_service_api import Receiver

EXIT_SECONDS = 10.0  # the bound from SIGTERM to exit
WRONG_KEY = "wrong-api-key-3f9a0c7e21-UNIQUE"  # a caller's guess: no more loggable than a real key


def _callbacks(proc: ServiceProcess, links: dict[str, str], seen: list[str]) -> dict[str, str]:
    """Each link opened and its consent page answered: address -> the callback URL (not yet followed)."""
    out = {}
    with httpx.Client(timeout=30) as client:
        for address, link in links.items():
            opened = client.get(link)
            assert opened.status_code == 302, (address, opened.text[:300])
            out[address] = answer_consent(opened.headers["Location"], follow=False, client=client)
            seen.append(out[address])
    return out


def _fault_drawn(world: ServiceWorld) -> None:
    """Wait until the queued token fault has been drawn: a completion is then at the provider."""
    deadline = time.monotonic() + 60
    while world.sandbox.provider.faults.get("token"):
        assert time.monotonic() < deadline, "no completion reached the token endpoint"
        time.sleep(0.02)


def _stop_during(proc: ServiceProcess, callbacks: dict[str, str], fault: Fault) -> dict[str, int]:
    """Every callback followed at once; SIGTERM once one of them drew `fault` at the token endpoint. Each
    address's outcome: its HTTP status, or 0 for a connection refused or cut."""
    world = proc.world
    world.sandbox.provider.add_faults("token", [fault])
    outcomes: dict[str, int] = {}

    def follow(address: str, url: str) -> None:
        try:
            outcomes[address] = httpx.get(url, timeout=60).status_code
        except httpx.HTTPError:
            outcomes[address] = 0

    threads = [threading.Thread(target=follow, args=item) for item in callbacks.items()]
    for thread in threads:
        thread.start()
    _fault_drawn(world)
    status, seconds = proc.terminate()
    assert status == 0 and seconds < EXIT_SECONDS, (status, seconds)
    for thread in threads:
        thread.join(90)
    world.sandbox.provider.clear_faults("token")
    return outcomes


def _check_outcomes(world: ServiceWorld, links: dict[str, str], outcomes: dict[str, int], figures: Figures) -> int:
    """Every sign-in completed (200, authorized) or failed cleanly with nothing recorded (still pending, its link
    unchanged); the state loads. Returns how many completed."""
    resources = world.state()["resources"]
    plan = world.cli("plan", "--format", "json")
    assert plan.exit_code in (0, 2), plan.stdout + plan.stderr
    done = 0
    for address, status in outcomes.items():
        record = resources[address]
        if status == 200:
            assert record["status"] == "authorized" and "pending" not in record, address
            done += 1
        else:
            assert status in (0, 400, 503), (address, status)
            assert record["status"] != "authorized" and record["pending"]["link"] == links[address], address
        figures.add("service", sign_ins_lost=int(status == 200 and record["status"] != "authorized"))
    return done


def _token_works(world: ServiceWorld, address: str, key: str) -> str:
    got = httpx.get(f"{world.public_url}/v1/installations/{address}/token",
                    headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert got.status_code == 200, (address, got.text)
    token = got.json()["access_token"]
    live = {g.access_token for g in world.sandbox.provider.grants.values() if not g.revoked}
    assert token in live, address
    return token


def _run(world: ServiceWorld, tmp: Path, figures: Figures, count: int) -> None:
    receiver = Receiver()
    try:
        _stops_and_restarts(world, tmp, figures, count, receiver)
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()


def _stops_and_restarts(world: ServiceWorld, tmp: Path, figures: Figures, count: int, receiver: Receiver) -> None:
    hooks = f"  webhooks:\n    - url: {receiver.url}\n      secret: ${{env:WEBHOOK_SECRET}}\n"
    links = deferred(world, count, extra_service=hooks)
    seen: list[str] = []  # every callback URL (its state and code)
    proc = ServiceProcess(world, tmp / "serve.log")
    addresses = list(links)
    half = addresses[: count // 2]
    try:
        proc.start()
        slow = _stop_during(proc, _callbacks(proc, {a: links[a] for a in half}, seen), Fault("slow", seconds=2.0))
        assert _check_outcomes(world, links, slow, figures) >= 1  # the one at the provider was finished
        proc.start()
        rest = [a for a in addresses if world.state()["resources"][a]["status"] != "authorized"]
        hung = _stop_during(proc, _callbacks(proc, {a: links[a] for a in rest}, seen), Fault("hang"))
        _check_outcomes(world, links, hung, figures)
        assert 503 in hung.values(), hung  # the one stuck at the provider: a page saying to open the link again
        proc.start()
        tokens = _finish(world, links, receiver)
        assert proc.terminate()[0] == 0
        applied = world.cli("apply", "--auto-approve")  # no lock left behind: it is taken at once
        assert applied.exit_code == 0 and "No changes." in applied.stdout, applied.stdout + applied.stderr
    finally:
        proc.kill()
    figures.goal("service", sign_ins_lost=0, stranded_links=0, secrets_found=0, log_lines_not_json=0)
    stranded = [a for a in links if world.state()["resources"][a]["status"] != "authorized"]
    figures.add("service", stops=len(proc.exits), sign_ins=count, stranded_links=len(stranded))
    assert not stranded
    _scan(proc, [*links.values(), *seen], tokens, figures)


def _finish(world: ServiceWorld, links: dict[str, str], receiver: Receiver) -> list[str]:
    """After a restart: a declined sign-in, then every link not yet completed completes; each installation's token
    works through the token API. The tokens handed out."""
    resources = world.state()["resources"]
    left = [a for a in links if resources[a]["status"] != "authorized"]
    with httpx.Client(timeout=30) as client:
        if left:
            assert sign_in(links[left[0]], client, approve=False).status_code == 400
        for address in left:
            assert sign_in(links[address], client).status_code == 200, address
    tokens = [_token_works(world, address, API_KEY_ALL) for address in links]
    tokens.append(_token_works(world, next(iter(links)), API_KEY_EU))
    refused = httpx.get(f"{world.public_url}/v1/installations/{next(iter(links))}/token",
                        headers={"Authorization": f"Bearer {WRONG_KEY}"}, timeout=30)
    assert refused.status_code == 401
    assert len(receiver.wait_for("authorization.completed", len(left))) >= len(left), "webhooks missing"
    return tokens


def _scan(proc: ServiceProcess, urls: list[str], tokens: list[str], figures: Figures) -> None:
    """No secret of the run in any log line; every line one JSON object."""
    lines = proc.lines()
    not_json = [line for line in lines if not _is_json_object(line)]
    issued = list(proc.world.sandbox.provider.issued)  # every code, token and PKCE verifier the provider saw
    params = [v for url in urls for values in parse_qs(urlsplit(url).query).values() for v in values]  # sig, state, code
    searched = {s for s in (*SECRETS, WRONG_KEY, *tokens, *issued, *params) if len(s) >= 8}
    text = "\n".join(lines)
    found = [s[:6] + "…" for s in searched if s in text]
    figures.set("service", secrets_searched=len(searched), log_lines=len(lines))
    figures.add("service", secrets_found=len(found), log_lines_not_json=len(not_json))
    assert not found and not not_json, (found, not_json[:3])
    assert "sig=" not in text and "code=" not in text and "state=" not in text
    assert any('"/connector/callback"' in line for line in lines) and any("/token" in line for line in lines)


def _is_json_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


@pytest.mark.quick
def test_sigterm_during_completions_loses_nothing_quick(service_world: ServiceWorld, tmp_path: Path, figures: Figures) -> None:
    _run(service_world, tmp_path, figures, 6)


@pytest.mark.slow
def test_sigterm_during_completions_loses_nothing(service_world: ServiceWorld, tmp_path: Path, figures: Figures) -> None:
    _run(service_world, tmp_path, figures, 20)
