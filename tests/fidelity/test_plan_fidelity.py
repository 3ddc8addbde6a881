"""Plan fidelity, property-based: apply does exactly what plan said, and plan after apply is always empty.

A hypothesis state machine writes configuration histories — tenants and installations added and removed, scopes
added, removed, reordered and duplicated, organization/project moves, partner secrets rotated and client ids
changed, installations switching between partner and own credentials, reverts — and interleaves what happens at
the provider (revoked and expired tokens, narrower grants, failed requests) with `plan --out`/`apply PLANFILE`,
plain `apply`, `--target`, deferred authorizations completed later with `authorize`, `refresh` and
`plan --refresh`. Everything
runs through the CLI in-process against one sandbox provider over real HTTP; each history has its own directory,
apps and callback port. After every step the oracle (tests/fidelity/oracle.py) checks that apply's effects equal
its plan change by change, that a plan after a successful apply is empty (save the documented narrower-grant
exception), that saved plans apply exactly or are refused as stale, that reordered or duplicated scopes change
nothing, and that the provider's live tokens and granted scopes are what state records.

Budgets: HYPOTHESIS_PROFILE=quick (make test) or fidelity (make fidelity, 1,000 histories), two thirds of them
here and a third on the Cyclr platform (test_cyclr_fidelity.py); see conftest.py.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import sys
import tempfile
import uuid
import webbrowser
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from reconciler.sandbox import SandboxServer
from tests.conftest import run
from tests.fidelity import oracle
from tests.fidelity.conftest import STATS, local_settings
from tests.fidelity.migration import Campaigns
from tests.fidelity.oracle import Divergence, fail
from tests.fidelity.world import (
    APPS_PER_POOL,
    FLAVOURS,
    NAMES,
    ORGANIZATIONS,
    PARTNERS,
    PLACES,
    SCOPES,
    TENANTS,
    ConsentAgent,
    Installation,
    Model,
    Snapshot,
    app_id,
    open_tokens,
    register_world,
    snapshot,
)
from tests.sandbox_support import free_port

AUTH = ["--auth-timeout", "20"]
TARGETS = st.one_of(
    st.none(),
    st.sampled_from(
        [f"installation.{t}.*" for t in TENANTS]
        + [f"installation.{t}.{n}" for t in TENANTS for n in NAMES]
        + [f"partner.{p}" for p in PARTNERS]
    ),
)
SCOPE_LISTS = st.lists(st.sampled_from(SCOPES), min_size=1, max_size=4)
MODES = st.sampled_from(["browser", "defer"])
FAULTED = r"unavailable \(HTTP (500|429)\)|sign-in page \(HTTP 203\)"  # what a fault queued at the provider says


@dataclass
class Held:
    """A saved plan waiting to be applied: what it showed, and the configuration it was made from."""

    path: Path
    plan: dict[str, Any]
    serial: int | None
    lineage: str | None
    model: Model
    target: str | None


class History(Campaigns, RuleBasedStateMachine):
    """One configuration history against the sandbox. Class attributes are set by the test (one sandbox, one
    consent agent and one scratch directory for every history)."""

    sandbox: SandboxServer
    agent: ConsentAgent
    scratch: Path

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(dir=self.scratch, prefix="history-"))
        self.config_dir = self.dir / "config"
        self.config_dir.mkdir()
        uid = uuid.uuid4().hex[:12]
        port = free_port()
        self.model = Model(uid=uid, sandbox_url=self.sandbox.url, port=port)
        for (pool, index), secret in register_world(self.sandbox, uid, port).items():
            name = f"S_{pool.upper()}{index}_V0"
            self.model.refs[(pool, index)] = name
            self.model.env[name] = secret
        self.versions = dict.fromkeys(self.model.refs, 0)
        self.revoked: set[str] = set()
        self.held: Held | None = None
        self.last_applied: Model | None = None
        self.faulted = False
        self.issued_from = len(self.sandbox.provider.issued)
        self.started = False
        self.write(self.model)

    def teardown(self) -> None:
        # Runs in hypothesis' `finally`: an exception in flight means the history did not run to its end (a
        # divergence, or a draw hypothesis abandoned); only histories that did are counted.
        with self.sandbox.provider.lock:  # faults this history queued must not reach the next one
            self.sandbox.provider.faults.clear()
        aborted = sys.exc_info()[0]
        if aborted is None:
            STATS.histories += 1
            STATS.by_platform["local"] += 1
        else:
            STATS.failures[f"history not completed: {aborted.__name__}"] += 1
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- plumbing ---------------------------------------------------------------------------------------------

    def write(self, model: Model) -> None:
        model.follow_campaigns()  # own credentials on a migrating partner: a configuration error (see migration)
        (self.config_dir / "reconciler.yaml").write_text(model.render())

    def cli(self, *args: str) -> Result:
        """Run the CLI on this history's configuration; a crash or a printed secret is a divergence."""
        with self.sandbox.provider.lock:
            self.faulted = any(self.sandbox.provider.faults.values())  # may explain a failure of this command
        result = run(["-C", str(self.config_dir), *args], self.model.environ())
        output = result.stdout + result.stderr
        if "internal error" in output or "Traceback" in output:
            fail(f"`reconciler {' '.join(args)}` crashed: {result.stderr.strip()[-500:]}")
        secrets = [v for k, v in self.model.env.items() if k.startswith("S_")]
        secrets += self.sandbox.provider.issued[self.issued_from :]
        if any(secret in output for secret in secrets):
            fail(f"`reconciler {' '.join(args)}` printed a secret")
        return result

    def plan(self, *args: str) -> dict[str, Any]:
        result = self.cli("plan", "--format", "json", *args)
        if result.exit_code != 0:
            fail(f"plan {' '.join(args)} failed: {result.stderr.strip()}")
        return json.loads(result.stdout)

    def snap(self) -> Snapshot:
        return snapshot(self.config_dir)

    def pick(self, data: st.DataObject, items: list[str]) -> str | None:
        return data.draw(st.sampled_from(sorted(items)), label="which") if items else None

    def authorized(self, snap: Snapshot) -> list[str]:
        return [
            a
            for a, r in snap.resources.items()
            if r["kind"] == "installation" and r.get("status", "authorized") == "authorized"
        ]

    def grant_of(self, snap: Snapshot, address: str) -> str | None:
        tokens = open_tokens(self.config_dir, snap, address)
        with self.sandbox.provider.lock:
            grant = (
                self.sandbox.provider.by_refresh.get(tokens.refresh_token.get_secret_value())
                if tokens.refresh_token
                else None
            )
            return grant.id if grant else None

    # -- invariants -------------------------------------------------------------------------------------------

    @invariant()
    def provider_matches_state(self) -> None:
        if self.started:
            STATS.steps += 1
        self.started = True
        oracle.check_provider(self.config_dir, self.snap(), self.sandbox, self.revoked)

    # -- configuration ------------------------------------------------------------------------------------------

    @initialize(
        installations=st.lists(
            st.tuples(
                st.sampled_from(TENANTS),
                st.sampled_from(NAMES),
                st.sampled_from(PARTNERS),
                st.sampled_from(PLACES),
                SCOPE_LISTS,
            ),
            min_size=1,
            max_size=3,
        ),
        saved=st.booleans(),
    )
    def first_apply(
        self, installations: list[tuple[str, str, str, tuple[str, str], list[str]]], saved: bool
    ) -> None:
        """Every history starts from an applied configuration of one to three installations."""
        for tenant, name, partner, place, scopes in installations:
            self.model.tenants.setdefault(tenant, {})[name] = Installation(partner, place, scopes)
        self.write(self.model)
        self.apply(mode="browser", only=None, saved=saved)

    @rule(
        tenant=st.sampled_from(TENANTS),
        name=st.sampled_from(NAMES),
        partner=st.sampled_from(PARTNERS),
        place=st.sampled_from(PLACES),
        scopes=SCOPE_LISTS,
    )
    def put_installation(
        self, tenant: str, name: str, partner: str, place: tuple[str, str], scopes: list[str]
    ) -> None:
        self.model.tenants.setdefault(tenant, {})[name] = Installation(partner, place, scopes)
        self.write(self.model)

    @rule(data=st.data())
    def remove_installation(self, data: st.DataObject) -> None:
        address = self.pick(data, list(self.model.installations()))
        if address is not None:
            _, tenant, name = address.split(".")
            del self.model.tenants[tenant][name]
            self.write(self.model)

    @rule(tenant=st.sampled_from(TENANTS), present=st.booleans())
    def add_or_remove_tenant(self, tenant: str, present: bool) -> None:
        if present:
            self.model.tenants.setdefault(tenant, {})
        else:
            self.model.tenants.pop(tenant, None)
        self.write(self.model)

    @rule(data=st.data(), scope=st.sampled_from(SCOPES))
    def add_scope(self, data: st.DataObject, scope: str) -> None:
        address = self.pick(data, list(self.model.installations()))
        if address is not None:
            self.model.installations()[address].scopes.append(scope)
            self.write(self.model)

    @rule(data=st.data())
    def remove_scope(self, data: st.DataObject) -> None:
        """Remove every mention of one scope (an installation keeps at least one)."""
        address = self.pick(data, list(self.model.installations()))
        inst = self.model.installations()[address] if address else None
        if inst is not None and len(set(inst.scopes)) > 1:
            scope = data.draw(st.sampled_from(sorted(set(inst.scopes))), label="scope")
            inst.scopes = [s for s in inst.scopes if s != scope]
            self.write(self.model)

    @rule(data=st.data(), place=st.sampled_from(PLACES))
    def move(self, data: st.DataObject, place: tuple[str, str]) -> None:
        address = self.pick(data, list(self.model.installations()))
        if address is not None:
            self.model.installations()[address].place = place
            self.write(self.model)

    @rule(data=st.data())
    def reorder_or_duplicate_scopes(self, data: st.DataObject) -> None:
        """Scope order and duplicates never matter: the plan is the same before and after."""
        address = self.pick(data, list(self.model.installations()))
        if address is None:
            return
        inst = self.model.installations()[address]
        before = self.plan()
        shuffled = data.draw(st.permutations(inst.scopes), label="order")
        extra = data.draw(st.lists(st.sampled_from(inst.scopes), max_size=2), label="duplicates")
        inst.scopes = [*shuffled, *extra]
        self.write(self.model)
        after = self.plan()
        if before["changes"] != after["changes"] or before["summary"] != after["summary"]:
            fail(
                f"reordering or duplicating the scopes of {address} changed the plan: "
                f"{oracle.active(before)} -> {oracle.active(after)}"
            )

    @rule(data=st.data(), own=st.sampled_from([None, *range(APPS_PER_POOL)]))
    def switch_credentials(self, data: st.DataObject, own: int | None) -> None:
        """Partner-level credentials, or the installation's own (the partner's app or the other one)."""
        address = self.pick(data, list(self.model.installations()))
        if address is not None:
            self.model.installations()[address].own = own
            self.write(self.model)

    @rule(data=st.data(), partner=st.sampled_from(PARTNERS))
    def switch_partner(self, data: st.DataObject, partner: str) -> None:
        """Move an installation to another partner entry (with the same client: an in-place update)."""
        address = self.pick(data, list(self.model.installations()))
        if address is not None:
            self.model.installations()[address].partner = partner
            self.write(self.model)

    @rule()
    def revert(self) -> None:
        """Go back to the configuration of the last apply (a reverted pull request); secrets stay as they are."""
        if self.last_applied is not None:
            self.model.tenants = copy.deepcopy(self.last_applied.tenants)
            self.model.partners = copy.deepcopy(self.last_applied.partners)
            self.write(self.model)

    @rule(partner=st.sampled_from(PARTNERS))
    def change_partner_client_id(self, partner: str) -> None:
        self.model.partners[partner].app = (self.model.partners[partner].app + 1) % APPS_PER_POOL
        self.write(self.model)

    @rule(endpoint=st.sampled_from(["token", "api"]), status=st.sampled_from([500, 429, 203]))
    def provider_fault(self, endpoint: str, status: int) -> None:
        """The provider fails the next request to an endpoint (an outage, throttling, a sign-in page)."""
        self.sandbox.provider.add_fault(endpoint, [status])

    @rule(
        pool=st.sampled_from(sorted(FLAVOURS)), index=st.integers(0, APPS_PER_POOL - 1), rename=st.booleans()
    )
    def rotate_secret(self, pool: str, index: int, rename: bool) -> None:
        """Rotate an app's client secret at the provider, and in the configuration's environment: under the same
        variable (the plan cannot see it) or a new one (the reference changes)."""
        app = (pool, index)
        self.versions[app] += 1
        secret = f"{self.model.uid}-{pool}-secret{index}-v{self.versions[app]}"
        self.sandbox.provider.rotate_secret(app_id(self.model.uid, pool, index), secret)
        if rename:
            self.model.refs[app] = f"S_{pool.upper()}{index}_V{self.versions[app]}"
        self.model.env[self.model.refs[app]] = secret
        self.write(self.model)

    # -- the provider ---------------------------------------------------------------------------------------------

    @rule(data=st.data(), expire=st.booleans())
    def revoke_or_expire(self, data: st.DataObject, expire: bool) -> None:
        snap = self.snap()
        address = self.pick(data, self.authorized(snap))
        grant = self.grant_of(snap, address) if address else None
        if grant is None:
            return
        if expire:
            self.sandbox.provider.expire(grant_id=grant)
        else:
            self.sandbox.provider.revoke(grant_id=grant)
            self.revoked.add(grant)

    @rule(
        pool=st.sampled_from(sorted(FLAVOURS)),
        index=st.integers(0, APPS_PER_POOL - 1),
        scopes=st.one_of(st.none(), st.lists(st.sampled_from(SCOPES), min_size=1, max_size=3, unique=True)),
    )
    def grant_only(self, pool: str, index: int, scopes: list[str] | None) -> None:
        """Users of this app consent to these scopes at most from now on (None: everything asked)."""
        self.sandbox.provider.set_grant_only(app_id(self.model.uid, pool, index), scopes)

    # -- refresh --------------------------------------------------------------------------------------------------

    @rule(window=st.sampled_from(["0", "15", "120"]))
    def refresh(self, window: str) -> None:
        self.refreshed(window)

    def refreshed(self, window: str) -> bool:
        """`refresh` and the checks after it: whether it refreshed everything (queued faults may stop it)."""
        before = self.snap()
        result = self.cli("refresh", "--window", window)
        if result.exit_code != 0 and not (self.faulted and re.search(FAULTED, result.stderr)):
            fail(f"refresh failed: {result.stderr.strip()}")
        oracle.check_refresh_effects(before, self.snap())
        if result.exit_code != 0:
            STATS.failures["refresh stopped by queued provider faults"] += 1
        return result.exit_code == 0

    @rule(window=st.sampled_from(["15", "120"]))
    def plan_refresh(self, window: str) -> None:
        """plan --refresh writes no document; its plan differs from the offline one only by what the provider
        says about tokens this history revoked."""
        before = self.snap()
        offline = self.plan()
        refreshed = self.plan("--refresh", "--window", window)
        after = self.snap()
        if before.doc != after.doc:
            fail("plan --refresh changed the state document")
        oracle.check_refresh_effects(before, after)
        extra = {a: x for a, x in oracle.active(refreshed).items() if oracle.active(offline).get(a) != x}
        allowed = oracle.revoked(self.config_dir, before, self.sandbox)
        if any(action != "reauthorize" or a not in allowed for a, action in extra.items()):
            fail(
                f"plan --refresh planned {extra} beyond the offline plan; only {sorted(allowed)} were touched"
            )

    # -- apply --------------------------------------------------------------------------------------------------

    @rule(mode=MODES, only=TARGETS, saved=st.booleans())
    def apply(self, mode: str, only: str | None, saved: bool) -> None:
        """Plan (as JSON, saved or not), then apply: the effects must be the plan's, change by change."""
        targeting = ["--target", only] if only else []
        before = self.snap()
        if saved:
            path = self.dir / "plan.bin"
            plan = self.plan("--out", str(path), *targeting)
            result = self.cli("apply", str(path), "--auto-approve", "--auth-mode", mode, *AUTH)
        else:
            plan = self.plan(*targeting)
            result = self.cli("apply", "--auto-approve", "--auth-mode", mode, *AUTH, *targeting)
        self.check_apply(plan, before, result, mode, only, self.model)

    @rule(saved=st.booleans())
    def apply_everything(self, saved: bool) -> None:
        """The common case, drawn more often: apply the whole plan with consent given in the browser."""
        self.apply(mode="browser", only=None, saved=saved)

    @rule()
    def apply_again(self) -> None:
        """The common case once more (rules are drawn alike, and most histories should apply often)."""
        self.apply(mode="browser", only=None, saved=False)

    @rule(mode=MODES, window=st.sampled_from(["15", "120"]))
    def apply_refreshed_plan(self, mode: str, window: str) -> None:
        """plan --refresh --out, then apply that plan: what the provider said (revoked tokens) is applied too."""
        path = self.dir / "refreshed.bin"
        plan = self.plan("--refresh", "--window", window, "--out", str(path))
        before = self.snap()  # plan --refresh may have stored rotated tokens: that is not the apply's doing
        result = self.cli("apply", str(path), "--auto-approve", "--auth-mode", mode, *AUTH)
        self.check_apply(plan, before, result, mode, None, self.model)

    @rule(only=TARGETS)
    def save_plan(self, only: str | None) -> None:
        path = self.dir / "held.bin"
        plan = self.plan("--out", str(path), *(["--target", only] if only else []))
        doc = self.snap().doc
        self.held = Held(path, plan, doc and doc["serial"], doc and doc["lineage"], self.model.copy(), only)

    @rule(mode=MODES)
    def apply_saved_plan(self, mode: str) -> None:
        """A saved plan applied later does exactly what it showed, or is refused as stale with nothing changed."""
        held, self.held = self.held, None
        if held is None:  # a rule that is always valid: a filtered rule draw can discard a whole history
            return
        before = self.snap()
        opened = self.agent.opened
        result = self.cli("apply", str(held.path), "--auto-approve", "--auth-mode", mode, *AUTH)
        doc = before.doc
        if (doc and doc["serial"], doc and doc["lineage"]) != (held.serial, held.lineage):
            if result.exit_code != 1 or not re.search(r"state moved|no state", result.stderr):
                fail(
                    f"a stale saved plan was not refused (exit {result.exit_code}): {result.stderr.strip()[-300:]}"
                )
            if self.snap() != before or self.agent.opened != opened:
                fail("a refused saved plan changed something")
            return
        self.check_apply(held.plan, before, result, mode, held.target, held.model)

    @rule(data=st.data())
    def authorize(self, data: st.DataObject) -> None:
        """Complete deferred authorizations (all, or one): each becomes a fresh authorization of the configuration,
        or the run stops at one that no longer matches it."""
        before = self.snap()
        pending = [a for a, r in before.resources.items() if "pending" in r]
        if not pending:
            return
        which = data.draw(st.sampled_from([None, *sorted(pending)]), label="authorize")
        self.complete(which, pending, before)

    def complete(self, which: str | None, pending: list[str], before: Snapshot) -> int:
        """`authorize` (all pending, or `which`) and the checks after it; its exit code."""
        result = self.cli("authorize", *([which] if which else []), "--auth-mode", "browser", *AUTH)
        after = self.snap()
        selected = [which] if which else pending
        changed = {
            a
            for a in set(before.resources) | set(after.resources)
            if before.resources.get(a) != after.resources.get(a)
            or before.credentials.get(a) != after.credentials.get(a)
        }
        if changed - set(selected):
            fail(f"authorize changed {sorted(changed - set(selected))}, which it was not asked to")
        if result.exit_code not in (0, 1):
            fail(f"authorize exited {result.exit_code}: {result.stderr.strip()[-300:]}")
        if result.exit_code == 0 and changed != set(selected):
            fail(f"authorize succeeded but left {sorted(set(selected) - changed)} as they were")
        if result.exit_code == 1:
            self.expected_failure(result, before, self.faulted)
        installs = self.model.installations()
        for address in sorted(changed):
            record = after.resources.get(address)
            inst = installs.get(address)
            if (
                record is None
                or inst is None
                or "pending" in record
                or record.get("status", "authorized") != "authorized"
            ):
                fail(f"{address}: authorize left {oracle._brief(record)}")
            if (
                sorted(record["scopes"]) != inst.declared_scopes()
                or record["client_id"] != self.model.client_id(inst)
                or record["partner"] != self.model.effective_partner(inst)
            ):
                fail(
                    f"{address}: authorize recorded {oracle._brief(record)}, the configuration declares "
                    f"{inst.declared_scopes()} for {self.model.client_id(inst)}"
                )
        if changed:
            plan = self.plan()
            expected = oracle.residual(self.model, after)
            left = {a: x for a, x in oracle.active(plan).items() if a in changed and a not in expected}
            if left:
                fail(f"plan after authorize still changes what was just authorized: {left}")
        return result.exit_code

    # -- the checks after an apply ------------------------------------------------------------------------------

    def check_apply(
        self,
        plan: dict[str, Any],
        before: Snapshot,
        result: Result,
        mode: str,
        target: str | None,
        model: Model,
    ) -> None:
        if self.agent.errors:
            fail(f"the consent agent failed: {self.agent.errors}")
        if result.exit_code not in (0, 1, 3):
            fail(f"apply exited {result.exit_code}: {result.stderr.strip()[-300:]}")
        completed = result.exit_code != 1
        self.last_applied = model.copy()
        after = self.snap()
        for change in plan["changes"]:
            for reason in change["reasons"] if change["action"] != "noop" else ["-"]:
                kind = re.sub(r": .*|since .*", "", reason)
                STATS.applied[
                    f"{change['kind']} {change['action']} {kind} ({mode}, exit {result.exit_code})"
                ] += 1
        oracle.check_effects(plan, before, after, deferred=mode == "defer", completed=completed)
        if not completed:
            self.expected_failure(result, before, self.faulted)
            return
        targets = [target] if target else []
        self.write(model)  # a saved plan is checked against the configuration it was made from
        try:
            expected = oracle.residual(model, after)
            targeting = ["--target", target] if target else []
            oracle.check_converged(self.plan(*targeting), expected, targets)
            exit_code = self.cli("plan", "--detailed-exitcode", *targeting).exit_code
            wanted = 2 if oracle.active(self.plan(*targeting)) else 0
            if exit_code != wanted:
                fail(f"plan --detailed-exitcode exited {exit_code} after a successful apply, not {wanted}")
            # A saved plan's configuration may name a secret variable that was renamed (and its secret rotated at
            # the provider) since: refreshing with it is rightly a partner fault, so only current secrets refresh.
            current_secrets = model.refs == self.model.refs
            if current_secrets and not oracle.revoked(self.config_dir, after, self.sandbox):
                oracle.check_converged(self.plan("--refresh", *targeting), expected, targets)
            if not targets:
                oracle.check_matches_model(model, self.snap())
        finally:
            self.write(self.model)

    def expected_failure(self, result: Result, before: Snapshot, faulted: bool) -> None:
        """A run may stop only for what an offline plan cannot know: a token this history revoked (apply), a fault
        it queued at the provider, or a deferred authorization the configuration has moved away from (authorize).
        Anything else is a divergence.
        The kinds are counted for FIDELITY_VERBOSE=1."""
        lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        if not lines:
            fail(f"a failed run says no error: {result.stderr.strip()[-300:]}")
        line = lines[0]
        match = re.match(r"error: (installation\.[^:]+): ", line)
        address = match.group(1) if match else None
        if "the refresh token was rejected" in line:
            if address not in oracle.revoked(self.config_dir, before, self.sandbox):
                fail(f"apply stopped on a refresh token the provider still honours: {line}")
        elif re.search(FAULTED, line):
            if not faulted:
                fail(f"a run stopped on a provider fault nobody queued: {line}")
        elif "the pending authorization no longer matches the configuration" not in line:
            fail(f"unexpected failure: {line}")
        kind = re.sub(r"installation\.\S+|partner\.\S+|\(.*?\)|[0-9a-f]{12}-\S+", "…", line)
        STATS.failures[kind] += 1


@pytest.fixture(scope="module")
def fidelity_sandbox() -> Iterator[SandboxServer]:
    """One sandbox provider for every history of the module (each history registers its own apps)."""
    with SandboxServer() as server:
        for organization, projects in ORGANIZATIONS.items():
            server.provider.register_org(organization, projects)
        yield server


def _one_tls_context(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every request here is plain HTTP to 127.0.0.1, yet each HTTP client the CLI makes loads the CA bundle into a
    new TLS context it never uses — a third of a history's time. Build that context once (same settings)."""
    from httpx._transports import default

    original = getattr(default, "create_ssl_context", None)
    if original is None:  # another httpx: slower, not wrong
        return
    contexts: dict[object, object] = {}

    def shared(verify: object = True, cert: object = None, trust_env: bool = True) -> object:
        if verify is not True or cert is not None:
            return original(verify=verify, cert=cert, trust_env=trust_env)
        if trust_env not in contexts:
            contexts[trust_env] = original(verify=verify, cert=cert, trust_env=trust_env)
        return contexts[trust_env]

    monkeypatch.setattr(default, "create_ssl_context", shared)


def test_apply_does_what_plan_said(
    fidelity_sandbox: SandboxServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Across generated configuration histories, apply does exactly what its plan said and plan after apply is
    empty; the summary line reports histories, steps and divergences."""
    _one_tls_context(monkeypatch)
    agent = ConsentAgent()
    monkeypatch.setattr(webbrowser, "open", agent)
    # Histories write state thousands of times; on a memory file system each fsync costs nothing. Durability is
    # tested elsewhere (tests/test_state_local.py); here only what is written matters.
    shm = Path("/dev/shm")
    scratch = Path(tempfile.mkdtemp(prefix="fidelity-", dir=shm)) if os.access(shm, os.W_OK) else tmp_path
    History.sandbox, History.agent, History.scratch = fidelity_sandbox, agent, scratch
    try:
        run_state_machine_as_test(History, settings=local_settings())
    except Divergence:
        STATS.divergences += 1
        raise
    except BaseExceptionGroup as group:
        STATS.divergences += len(group.exceptions)
        raise
    except AssertionError:
        STATS.divergences += 1
        raise
    finally:
        agent.close()
        if scratch != tmp_path:
            shutil.rmtree(scratch, ignore_errors=True)
    assert STATS.histories > 0 and STATS.steps > 0
