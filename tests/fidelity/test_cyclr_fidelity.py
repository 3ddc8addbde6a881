"""Plan fidelity on the Cyclr platform, property-based: every plan is the oracle's prediction, apply leaves the
platform as declared, and plan after apply is empty.

A hypothesis state machine writes histories of a `platform: {type: cyclr}` configuration — tenants (accounts)
added and removed (with and without `--allow-delete account.<t>`), accounts renamed and their time zone changed,
installations of microsoft-azure-devops and of Slack (a connector outside the catalog, parameter Channel) added,
removed and changed (parameters: an update; scopes: a new sign-in) — and interleaves console drift at the sandbox
(an account connector deauthenticated, deleted or a property edited; an account deleted) with `plan`,
`plan --refresh`, `refresh`, `apply` (saved or not, `--refresh`, sign-ins through the platform in the browser or
deferred) and `authorize`. The oracle (tests/fidelity/cyclr_oracle.py) predicts each plan from the configuration,
state and the sandbox, independently of the planner.

Budget: a share of the fidelity profile's histories (conftest.py: `cyclr_settings`).
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import tempfile
import uuid
import webbrowser
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import Result
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from reconciler.sandbox import SandboxServer
from reconciler.sandbox.agent import answer_consent
from tests.conftest import run
from tests.fidelity import cyclr_oracle as oracle
from tests.fidelity.conftest import STATS, cyclr_settings
from tests.fidelity.cyclr_world import (
    ACCOUNT_NAMES,
    ADO,
    CHANNELS,
    NAMES,
    PARTNER_SECRET,
    PLACES,
    SCOPES,
    TENANTS,
    TIMEZONES,
    CInstallation,
    CModel,
    CTenant,
    ado,
    platform_of,
    record_brief,
    secrets_of,
    setup_platform,
    slack,
)
from tests.fidelity.oracle import Divergence, fail
from tests.fidelity.world import ORGANIZATIONS, STATE_KEY, Snapshot, snapshot

AUTH = ["--auth-timeout", "20"]
SCOPE_LISTS = st.lists(st.sampled_from(SCOPES), min_size=1, max_size=3)
INSTALLATIONS = st.one_of(
    st.builds(ado, st.sampled_from(PLACES), SCOPE_LISTS), st.builds(slack, st.sampled_from(CHANNELS))
)
ALLOW = st.sampled_from([None, "account.t0", "account.t1", "account.*"])


class ConsoleAgent:
    """Stands in for `webbrowser.open`: follows a connectorauth link through the sandbox's consent page (Approve)
    and its Cyclr callback to the loopback receiver, over one reused HTTP client."""

    def __init__(self) -> None:
        self.client = httpx.Client(timeout=10.0, follow_redirects=False)
        self.errors: list[str] = []

    def __call__(self, url: str) -> bool:
        try:
            answer_consent(url, client=self.client)
        except Exception as exc:  # noqa: BLE001 - reported by the history
            self.errors.append(f"{type(exc).__name__}: {exc}")
        return True


class CyclrHistory(RuleBasedStateMachine):
    """One configuration history on the Cyclr platform; class attributes are set by the test."""

    sandbox: SandboxServer
    agent: ConsoleAgent
    scratch: Path

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(dir=self.scratch, prefix="cyclr-history-"))
        self.model = CModel(uid=uuid.uuid4().hex[:12], url=self.sandbox.url)
        self.drifted = False  # the console changed the platform since state last saw it
        self.agent.errors.clear()
        self.started = False
        self.applied = self.model.copy()  # the configuration of the last completed apply
        self.write()

    def teardown(self) -> None:
        if sys.exc_info()[0] is None:
            STATS.histories += 1
            STATS.by_platform["cyclr"] += 1
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- plumbing ---------------------------------------------------------------------------------------------

    def write(self) -> None:
        (self.dir / "reconciler.yaml").write_text(self.model.render())

    def cli(self, *args: str) -> Result:
        env = {"CYCLR_CLIENT_SECRET": PARTNER_SECRET, "RECONCILER_STATE_KEY": STATE_KEY}
        result = run(["-C", str(self.dir), *args], env)
        output = result.stdout + result.stderr
        if "internal error" in output or "Traceback" in output:
            fail(f"`reconciler {' '.join(args)}` crashed: {result.stderr.strip()[-500:]}")
        if any(secret in output for secret in secrets_of(self.sandbox)):
            fail(f"`reconciler {' '.join(args)}` printed a secret")
        return result

    def plan(self, *args: str) -> dict[str, Any]:
        result = self.cli("plan", "--format", "json", *args)
        if result.exit_code != 0:
            fail(f"plan {' '.join(args)} failed: {result.stderr.strip()[-400:]}")
        return json.loads(result.stdout)

    def snap(self) -> Snapshot:
        return snapshot(self.dir)

    def predicted(self, *, refresh: bool, allow: str | None) -> dict[str, str]:
        resources = self.snap().resources
        if refresh:
            resources = oracle.observed(resources, platform_of(self.sandbox, self.model.uid))
        allowed = {f"account.{t}" for t in TENANTS if allow in (f"account.{t}", "account.*")}
        return oracle.predict(self.model, resources, allowed)

    def pick(self, data: st.DataObject, items: list[str]) -> str | None:
        return data.draw(st.sampled_from(sorted(items)), label="which") if items else None

    def installed(self, data: st.DataObject) -> tuple[str, str] | None:
        """(address, account connector id) of a recorded installation that is on the platform."""
        resources = self.snap().resources
        placed = {a: r["account_connector"]["account_connector_id"] for a, r in resources.items()
                  if r["kind"] == "installation" and r.get("account_connector")}
        address = self.pick(data, list(placed))
        return (address, placed[address]) if address else None

    @invariant()
    def counted(self) -> None:
        if self.started:
            STATS.steps += 1
        self.started = True

    # -- configuration ------------------------------------------------------------------------------------------

    @initialize(
        installations=st.lists(st.tuples(st.sampled_from(TENANTS), st.sampled_from(NAMES), INSTALLATIONS),
                               min_size=1, max_size=3),
        mode=st.sampled_from(["browser", "defer"]),
    )
    def first_apply(self, installations: list[tuple[str, str, CInstallation]], mode: str) -> None:
        for tenant, name, inst in installations:
            self.tenant(tenant).installations[name] = inst
        self.write()
        self.apply(mode=mode, allow=None, refresh=False, saved=False)

    def tenant(self, tenant: str) -> CTenant:
        return self.model.tenants.setdefault(tenant, CTenant(ACCOUNT_NAMES[0], None))

    @rule(tenant=st.sampled_from(TENANTS), name=st.sampled_from(NAMES), inst=INSTALLATIONS)
    def put_installation(self, tenant: str, name: str, inst: CInstallation) -> None:
        """Add an installation, or replace one (another connector, parameters or scopes)."""
        self.tenant(tenant).installations[name] = inst
        self.write()

    @rule(data=st.data())
    def remove_installation(self, data: st.DataObject) -> None:
        address = self.pick(data, list(self.model.installations()))
        if address is not None:
            _, tenant, name = address.split(".")
            del self.model.tenants[tenant].installations[name]
            self.write()

    @rule(tenant=st.sampled_from(TENANTS), present=st.booleans())
    def add_or_remove_tenant(self, tenant: str, present: bool) -> None:
        if present:
            self.tenant(tenant)
        else:
            self.model.tenants.pop(tenant, None)
        self.write()

    @rule(tenant=st.sampled_from(TENANTS), name=st.sampled_from(ACCOUNT_NAMES), timezone=st.sampled_from(TIMEZONES))
    def edit_account(self, tenant: str, name: str, timezone: str | None) -> None:
        """Rename a tenant's account, or change its time zone."""
        if tenant in self.model.tenants:
            self.model.tenants[tenant].name, self.model.tenants[tenant].timezone = name, timezone
            self.write()

    @rule(data=st.data(), scopes=SCOPE_LISTS, place=st.sampled_from(PLACES), channel=st.sampled_from(CHANNELS))
    def change_installation(self, data: st.DataObject, scopes: list[str], place: tuple[str, str], channel: str) -> None:
        """Change an installation's parameters (an update) or its scopes (a new sign-in)."""
        address = self.pick(data, list(self.model.installations()))
        if address is None:
            return
        inst = self.model.installations()[address]
        if inst.connector != ADO:
            inst.parameters = {"Channel": channel}
        elif data.draw(st.booleans(), label="scopes"):
            inst.scopes = scopes
        else:
            inst.parameters = {"organization": place[0], "project": place[1]}
        self.write()

    # -- the console --------------------------------------------------------------------------------------------

    @rule(data=st.data(), action=st.sampled_from(["deauthenticate", "delete", "edit"]))
    def console(self, data: st.DataObject, action: str) -> None:
        """Someone deauthenticates, deletes or edits an account connector in the console."""
        found = self.installed(data)
        if found is None:
            return
        _, connector = found
        cyclr = self.sandbox.cyclr
        if int(connector) not in cyclr.account_connectors:
            return
        if action == "deauthenticate":
            cyclr.deauthenticate(int(connector))
        elif action == "delete":
            cyclr.console_delete(int(connector))
        else:
            properties = sorted(cyclr.account_connectors[int(connector)].properties)
            name = data.draw(st.sampled_from(properties), label="property")
            value = {"Scopes": "vso.code", "Channel": "#edited"}.get(name, "edited")
            cyclr.console_set_property(int(connector), name, value)
        self.drifted = True

    @rule(tenant=st.sampled_from(TENANTS))
    def console_delete_account(self, tenant: str) -> None:
        account = self.model.account_id(tenant)
        if account in self.sandbox.cyclr.accounts:
            self.sandbox.cyclr.delete_account(account)
            self.drifted = True

    # -- plan and refresh ---------------------------------------------------------------------------------------

    @rule(allow=ALLOW, refresh=st.booleans())
    def plan_only(self, allow: str | None, refresh: bool) -> None:
        """A plan (offline, or `--refresh`) is the prediction, and writes nothing."""
        before = self.snap()
        flags = (["--refresh"] if refresh else []) + (["--allow-delete", allow] if allow else [])
        oracle.check_plan(self.predicted(refresh=refresh, allow=allow), self.plan(*flags), f"plan {flags}")
        if self.snap() != before:
            fail(f"plan {flags} changed state")

    @rule()
    def refresh(self) -> None:
        """`reconciler refresh` records what the platform shows: the offline plan is then the refreshed one."""
        expected = self.predicted(refresh=True, allow=None)
        result = self.cli("refresh")
        if result.exit_code != 0:
            fail(f"refresh failed: {result.stderr.strip()[-400:]}")
        oracle.check_plan(expected, self.plan(), "plan after refresh")
        self.drifted = False

    # -- apply ----------------------------------------------------------------------------------------------------

    @rule(mode=st.sampled_from(["browser", "defer"]), allow=ALLOW, refresh=st.booleans(), saved=st.booleans())
    def apply(self, mode: str, allow: str | None, refresh: bool, saved: bool) -> None:
        """Plan (the prediction), then apply it: saved and applied, or `apply [--refresh]`. Console drift not yet
        seen is applied with --refresh (an offline plan cannot know of it)."""
        refresh = refresh or self.drifted
        flags = (["--refresh"] if refresh else []) + (["--allow-delete", allow] if allow else [])
        plan = self.plan(*flags)
        oracle.check_plan(self.predicted(refresh=refresh, allow=allow), plan, f"plan {flags}")
        consent = ["--auto-approve", "--auth-mode", mode, *AUTH]
        if saved:
            path = self.dir / "plan.bin"
            self.plan(*flags, "--out", str(path))
            result = self.cli("apply", str(path), *consent)
        else:
            result = self.cli("apply", *consent, *flags)
        self.check_apply(plan, result, mode)

    @rule(data=st.data())
    def authorize(self, data: st.DataObject) -> None:
        """Complete sign-ins due (all, or one) through the platform in the browser, once state knows what the
        console did."""
        pending = [a for a, r in self.snap().resources.items() if "pending" in r]
        if not pending or self.drifted:  # a link to an account connector deleted in the console leads nowhere
            return
        which = data.draw(st.sampled_from([None, *sorted(pending)]), label="authorize")
        result = self.cli("authorize", *([which] if which else []), "--auth-mode", "browser", *AUTH)
        if self.agent.errors:
            fail(f"the consent agent failed: {self.agent.errors}")
        after = self.snap().resources
        moved = re.search(r"error: (\S+): (the pending authorization no longer matches the configuration|the "
                          r"configuration changed since it was installed)", result.stderr)
        if result.exit_code == 1 and moved:  # the configuration moved on since: the next apply plans it anew
            address = moved.group(1)
            if self.model.installations().get(address) == self.applied.installations().get(address):
                fail(f"authorize says the configuration of {address} moved; it did not")
            return
        gone = re.search(r"error: (\S+): its account connector is gone from the platform", result.stderr)
        if result.exit_code == 1 and gone:  # a refresh recorded it gone: the next apply installs it again
            if (after.get(gone.group(1)) or {}).get("account_connector") is not None:
                fail(f"authorize says {gone.group(1)} is gone from the platform; state records it installed")
            return
        if result.exit_code != 0:
            fail(f"authorize exited {result.exit_code}: {result.stderr.strip()[-400:]}")
        for address in [which] if which else pending:
            record = after.get(address)
            if record is None or "pending" in record or record.get("status", "authorized") != "authorized":
                fail(f"{address}: authorize left {record_brief(record)}")
        if self.model == self.applied:
            self.check_converged("after authorize")
        else:  # the configuration moved on since the last apply: the plan is still the prediction
            oracle.check_plan(self.predicted(refresh=False, allow=None), self.plan(), "plan after authorize")

    # -- the checks after an apply ------------------------------------------------------------------------------

    def check_apply(self, plan: dict[str, Any], result: Result, mode: str) -> None:
        if self.agent.errors:
            fail(f"the consent agent failed: {self.agent.errors}")
        signs_in = any(c["action"] in ("create", "reauthorize") and c["kind"] == "installation"
                       for c in plan["changes"])
        waiting = any(c["pending"] for c in plan["changes"])  # sign-ins due before, still due: exit 3 as well
        wanted = 3 if (mode == "defer" and signs_in) or waiting else 0
        for change in plan["changes"]:
            STATS.applied[f"cyclr {change['kind']} {change['action']} ({mode}, exit {result.exit_code})"] += 1
        if result.exit_code != wanted:
            fail(f"apply exited {result.exit_code}, not {wanted}: {result.stderr.strip()[-600:]}")
        self.drifted = False
        self.applied = self.model.copy()
        self.check_converged("after apply")

    def check_converged(self, when: str) -> None:
        """State and the platform are what the configuration declares; plans offline and refreshed are empty."""
        resources = self.snap().resources
        oracle.check_platform(self.model, resources, platform_of(self.sandbox, self.model.uid))
        for refresh in (False, True):
            predicted = self.predicted(refresh=refresh, allow=None)
            if any(action not in ("noop", oracle.DUE) for action in predicted.values()):
                fail(f"{when}: the oracle predicts changes {predicted} (refresh={refresh})")
            oracle.check_plan(predicted, self.plan(*(["--refresh"] if refresh else [])), f"plan {when}")


@pytest.fixture(scope="module")
def cyclr_sandbox() -> Iterator[SandboxServer]:
    with SandboxServer() as server:
        for organization, projects in ORGANIZATIONS.items():
            server.provider.register_org(organization, projects)
        setup_platform(server)
        yield server


def test_cyclr_plans_are_predicted_and_applied(
    cyclr_sandbox: SandboxServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Across generated Cyclr histories, every plan is the oracle's prediction and apply converges."""
    agent = ConsoleAgent()
    monkeypatch.setattr(webbrowser, "open", agent)
    CyclrHistory.sandbox, CyclrHistory.agent, CyclrHistory.scratch = cyclr_sandbox, agent, tmp_path
    try:
        run_state_machine_as_test(CyclrHistory, settings=cyclr_settings())
    except (Divergence, AssertionError):
        STATS.divergences += 1
        raise
    finally:
        agent.client.close()
    assert STATS.by_platform["cyclr"] > 0
