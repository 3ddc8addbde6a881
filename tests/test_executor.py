"""The executor on fakes (tests/fakes.py): an in-memory state backend and credential store, an in-memory provider
answering the real flows through httpx.MockTransport, and a consent step that signs in at once. Each test names
one rule of `apply_plan`: create, defer, update in place, delete with revocation, re-authorize, partial state on
failure, and what the hooks are told."""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from reconciler.apply import ApplyResult, Services, apply_plan
from reconciler.auth.retry import RetryPolicy
from reconciler.catalog.files import load_catalog
from reconciler.config import DesiredState, load_config
from reconciler.crypto import StateKey
from reconciler.plan import Action, Plan
from reconciler.planner import make_plan
from reconciler.state.model import InstallationRecord, StateDocument
from reconciler.tokens.model import TokenSet
from reconciler.tokens.vault import Vault
from tests.fakes import FakeConsent, FakeProvider, MemoryBackend, RecordingHooks

NOW = dt.datetime(2026, 11, 2, 12, 0, tzinfo=dt.UTC)
CLIENT_ID = "11111111-aaaa-4bbb-8ccc-000000000001"
CLIENT_SECRET = "fake-partner-secret-5e1f0c9d"
ENV = {"ADO_CLIENT_ID": CLIENT_ID, "ADO_CLIENT_SECRET": CLIENT_SECRET}
KEY = StateKey(b"k" * 32, "test")
ACME, GLOBEX = "installation.acme.ado", "installation.globex.ado"
PARTNER = "partner.microsoft-azure-devops"
CONFIG = """\
version: 1
platform: {service_domain: app-h.cyclr.com}
partners:
  microsoft-azure-devops:
    auth: azure-devops-oauth
    client_id: ${env:ADO_CLIENT_ID}
    client_secret: ${env:ADO_CLIENT_SECRET}
    endpoints:
      authorize_url: https://provider.example/oauth2/authorize
      token_url: https://provider.example/oauth2/token
      revoke_url: https://provider.example/oauth2/revoke
      api_url: https://provider.example
tenants:
"""
INSTALLATION = """\
  {tenant}:
    installations:
      ado:
        connector: microsoft-azure-devops
        parameters: {{organization: {tenant}, project: {project}}}
        scopes: [{scopes}]
"""
BOTH = {"acme": ("Platform", "vso.work_full, vso.project"), "globex": ("Operations", "vso.work_full, vso.project")}


@dataclass
class World:
    """One environment's fakes, and the configuration directories written so far."""

    directory: Path
    backend: MemoryBackend = field(default_factory=MemoryBackend)
    provider: FakeProvider = field(default_factory=FakeProvider)
    hooks: RecordingHooks = field(default_factory=RecordingHooks)
    versions: itertools.count[int] = field(default_factory=itertools.count)

    def desired(self, tenants: dict[str, tuple[str, str]]) -> DesiredState:
        """The desired state of a configuration declaring, per tenant, one installation (project, scopes)."""
        folder = self.directory / f"config-{next(self.versions)}"
        folder.mkdir()
        body = "".join(INSTALLATION.format(tenant=t, project=p, scopes=s) for t, (p, s) in tenants.items())
        (folder / "reconciler.yaml").write_text(CONFIG + body)
        return load_config(folder, environ=ENV).desired

    def services(self, *, interactive: bool = True) -> Services:
        return Services(
            backend=self.backend,
            vault_for=self.vault,
            http=self.provider.client(),
            consent=FakeConsent(self.provider) if interactive else None,
            now=lambda: NOW,
            catalog=load_catalog(),
            retry=RetryPolicy(attempts=2, backoff=0.0),
            sleep=lambda seconds: None,
        )

    def vault(self, lineage: str) -> Vault:
        return Vault(self.backend.store, KEY, lineage=lineage, environment="default")

    def state(self) -> StateDocument:
        doc = self.backend.read()
        assert doc is not None
        return doc

    def record(self, address: str) -> InstallationRecord:
        record = self.state().resources[address]
        assert isinstance(record, InstallationRecord)
        return record

    def tokens(self, address: str) -> TokenSet | None:
        """The tokens recorded for `address` (None: no credential record, or none with tokens)."""
        vault = self.vault(self.state().lineage)
        sealed = vault.record(address)
        if sealed is None or sealed.tokens is None:
            return None
        return vault.current_tokens(address, self.record(address).client_id, sealed)


def run(world: World, desired: DesiredState, *, interactive: bool = True) -> tuple[Plan, ApplyResult]:
    """Plan `desired` against the recorded state and carry the plan out, with the state lock held: the one call
    site of `make_plan` and `apply_plan` in this file."""
    with world.backend.lock("apply"):
        plan = make_plan(desired, world.backend.read(), now=NOW, catalog=load_catalog())
        return plan, apply_plan(plan, desired, world.services(interactive=interactive), world.hooks)


def _actions(plan: Plan) -> dict[str, Action]:
    return {c.address: c.action for c in plan.changes}


def _assert_no_record_without_tokens(world: World) -> None:
    for address, record in world.state().resources.items():
        if isinstance(record, InstallationRecord) and record.status == "authorized":
            assert world.tokens(address) is not None, address


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def test_create_signs_in_exchanges_verifies_and_records(world: World) -> None:
    """create: consent, code exchange and the checks for each installation, then its record and sealed tokens."""
    plan, result = run(world, world.desired(BOTH))
    assert _actions(plan) == {PARTNER: Action.CREATE, ACME: Action.CREATE, GLOBEX: Action.CREATE}
    assert result.error is None
    assert result.completed == [PARTNER, ACME, GLOBEX]
    assert world.provider.exchanges == 2
    assert "/acme/_apis/connectionData" in world.provider.checks
    for address in (ACME, GLOBEX):
        record = world.record(address)
        assert record.status == "authorized" and record.granted_scopes == ("vso.project", "vso.work_full")
        assert record.authorized_by == "fake.user@example.com"
    assert world.tokens(ACME).access_token.get_secret_value() in world.provider.access  # type: ignore[union-attr]
    assert (ACME, "authorized (granted: vso.project, vso.work_full)") in world.hooks.steps
    assert len(world.backend.writes) == 3  # one write per completed step


def test_defer_records_a_pending_authorization_and_its_link(world: World) -> None:
    """Without a consent step, each new installation is recorded pending, its link reported; no token is issued."""
    _, result = run(world, world.desired(BOTH), interactive=False)
    assert result.error is None
    assert [address for address, _ in result.pending] == [ACME, GLOBEX]
    assert [address for address, _ in world.hooks.links] == [ACME, GLOBEX]
    assert all(url.startswith("https://provider.example/oauth2/authorize?") for _, url in world.hooks.links)
    record = world.record(ACME)
    assert record.status == "pending_authorization" and record.pending is not None
    sealed = world.backend.store.get(ACME)
    assert sealed is not None and sealed.pending is not None and sealed.tokens is None
    assert world.provider.exchanges == 0


def test_update_in_place_verifies_the_recorded_tokens_against_the_new_declaration(world: World) -> None:
    """update: a changed parameter is checked with the tokens already held; nobody signs in again."""
    run(world, world.desired(BOTH))
    held = world.tokens(ACME)
    plan, result = run(world, world.desired({**BOTH, "acme": ("Payments", "vso.work_full, vso.project")}))
    assert _actions(plan)[ACME] is Action.UPDATE
    assert result.error is None and result.completed == [ACME]
    assert world.record(ACME).parameters["project"] == "Payments"
    assert world.provider.exchanges == 2
    assert world.tokens(ACME) == held
    assert world.provider.checks[-1] == "/acme/_apis/projects/Payments"
    assert (ACME, "updated and verified") in world.hooks.steps


def test_delete_revokes_the_grant_and_forgets_the_tokens(world: World) -> None:
    """delete: the record goes, then its grant is revoked at the recorded endpoint and its tokens forgotten."""
    run(world, world.desired(BOTH))
    held = world.tokens(GLOBEX)
    assert held is not None and held.refresh_token is not None
    plan, result = run(world, world.desired({"acme": BOTH["acme"]}))
    assert _actions(plan)[GLOBEX] is Action.DELETE
    assert result.error is None and result.completed == [GLOBEX]
    assert GLOBEX not in world.state().resources
    assert world.backend.store.get(GLOBEX) is None
    assert world.provider.revoked == [held.refresh_token.get_secret_value()]
    assert (GLOBEX, "deleted; its grant is revoked") in world.hooks.steps
    _assert_no_record_without_tokens(world)


def test_reauthorize_signs_in_again_and_revokes_the_old_grant(world: World) -> None:
    """reauthorize: wider scopes need a new sign-in; the new tokens replace the old, whose grant is revoked."""
    run(world, world.desired(BOTH))
    old = world.tokens(ACME)
    assert old is not None and old.refresh_token is not None
    plan, result = run(world, world.desired({**BOTH, "acme": ("Platform", "vso.work_full, vso.project, vso.code")}))
    assert _actions(plan)[ACME] is Action.REAUTHORIZE
    assert result.error is None and result.completed == [ACME]
    assert world.record(ACME).granted_scopes == ("vso.code", "vso.project", "vso.work_full")
    new = world.tokens(ACME)
    assert new is not None and new != old
    assert world.provider.revoked == [old.refresh_token.get_secret_value()]
    assert (ACME, "the old grant is revoked") in world.hooks.steps


def test_a_failure_mid_run_keeps_the_completed_steps(world: World) -> None:
    """A step that fails stops the run: what completed before it is persisted, the failed one left no record."""
    world.provider.missing_orgs = {"globex"}
    _, result = run(world, world.desired(BOTH))
    assert result.error is not None
    assert result.error.message.startswith(f"{GLOBEX}: ")
    assert result.completed == [PARTNER, ACME]
    assert result.state == world.state()
    assert set(world.state().resources) == {PARTNER, ACME}
    assert world.backend.store.get(GLOBEX) is None
    _assert_no_record_without_tokens(world)


def test_a_failed_code_exchange_records_nothing_for_that_installation(world: World) -> None:
    """A token endpoint that refuses leaves no record and no tokens for that installation."""
    world.provider.token_statuses = [400]
    _, result = run(world, world.desired({"acme": BOTH["acme"]}))
    assert result.error is not None and result.error.message.startswith(f"{ACME}: ")
    assert set(world.state().resources) == {PARTNER}
    assert world.backend.store.get(ACME) is None


def test_hooks_receive_warnings_for_a_narrower_grant(world: World) -> None:
    """A grant narrower than asked is recorded as granted, and the hooks and the result are warned."""
    world.provider.grant_only = ("vso.work_full",)
    _, result = run(world, world.desired({"acme": BOTH["acme"]}))
    assert result.error is None
    assert world.record(ACME).granted_scopes == ("vso.work_full",)
    warning = (ACME, "granted fewer scopes than asked (missing: vso.project); recorded as granted")
    assert warning in world.hooks.warnings and warning in result.warnings


def test_no_secret_reaches_the_hooks(world: World) -> None:
    """Across create, defer, update, re-authorize, delete and a failure, no code, token or client secret is told
    to the hooks or put in the error."""
    run(world, world.desired(BOTH))
    run(world, world.desired({**BOTH, "acme": ("Payments", "vso.work_full, vso.project")}))
    run(world, world.desired({**BOTH, "acme": ("Payments", "vso.work_full, vso.project, vso.code")}))
    run(world, world.desired({"acme": BOTH["acme"], "initech": BOTH["globex"]}), interactive=False)
    world.provider.token_statuses = [400]
    _, failed = run(world, world.desired({**BOTH, "acme": ("Payments", "vso.work_full, vso.project, vso.code")}))
    assert failed.error is not None
    told = world.hooks.messages() + "\n" + str(failed.error) + "\n" + (failed.error.hint or "")
    assert world.hooks.steps and world.hooks.links
    for secret in (*world.provider.issued, CLIENT_SECRET):
        assert secret not in told
