"""Migration campaigns in the plan fidelity histories: a legacy Azure DevOps OAuth partner declares
`migrate_to: entra` (or withdraws it), and its installations move to the Entra ID partner one wave (a tenant) at a
time with `apply --target 'installation.tN.*'`, with consent in the browser or deferred and completed later with
`authorize`.

The rules are a mixin of the History state machine (tests/fidelity/test_plan_fidelity.py); the checks after each
wave are written out here from the documented behaviour (README "A migration campaign", docs/status-json.md):
- the wave's installations are recorded on the partner their campaign moves them to, for its client, flavour and
  the declared scopes (the granted set recorded normalised, as the catalog names scopes); the others are untouched;
  every partner declaring the move to where an installation arrived has its campaign recorded;
- the plan afterwards shows exactly the moves still to make, each a re-authorization whose reasons name the move
  and the scopes in the form the new flavour asks for;
- after a wave of every tenant, no installation change remains (save the honest narrower-grant residual);
- `status --format json` counts migrated / pending / failed per campaign as state records them.
An installation that brings its own credentials cannot follow its partner's campaign: the configuration is refused
with the documented error and nothing is written.
"""

from __future__ import annotations

import fnmatch
import json
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import rule

from tests.fidelity import oracle
from tests.fidelity.conftest import STATS
from tests.fidelity.oracle import fail
from tests.fidelity.world import CONNECTOR, FLAVOURS, POOL, TENANTS, Model, Snapshot

LEGACY = ("legacy", "legacy-b")  # the partners that may run a campaign; each moves to the Entra ID partner
ENTRA = "entra"
RESOURCE = "499b84ac-1321-427f-aa17-267ca6975798/"
# How each flavour asks for the declared scopes (the catalog's scope_prefix and extra_scopes, written out here).
FORMS = {"azure-devops-oauth": ("", ()), "entra-id": (RESOURCE, ("offline_access",))}
PROGRESS = ("migrated", "pending", "failed")


def requested_as(auth: str, declared: list[str]) -> str:
    prefix, extra = FORMS[auth]
    return f"scopes requested in the {auth} form: {', '.join([prefix + s for s in sorted(declared)] + list(extra))}"


def auth_of(partner: str) -> str:
    return FLAVOURS[POOL[partner]]


class Campaigns:
    """Rules of the History state machine about migration campaigns (its plumbing: model, write, plan, cli, snap,
    check_apply, agent)."""

    model: Model

    @rule(partner=st.sampled_from(LEGACY), drop_credentials=st.booleans())
    def declare_campaign(self, partner: str, drop_credentials: bool) -> None:
        """A legacy partner's installations are to move to Entra ID. Those bringing their own credentials are
        changed as the error's hint says: their credentials removed, or their new partner named."""
        self.model.partners[partner].migrate_to = ENTRA
        for inst in self.model.installations().values():
            if inst.partner == partner and inst.own is not None and drop_credentials:
                inst.own = None
        self.write(self.model)  # the others name the Entra partner (Model.follow_campaigns)

    @rule(partner=st.sampled_from(LEGACY))
    def withdraw_campaign(self, partner: str) -> None:
        """The campaign is called off: installations already moved go back with the next apply."""
        self.model.partners[partner].migrate_to = None
        self.write(self.model)

    @rule(data=st.data())
    def own_credentials_cannot_follow(self, data: st.DataObject) -> None:
        """An installation with its own credentials on a migrating partner: plan and apply refuse the
        configuration naming the installation's `credentials`, and nothing is written or opened."""
        moving = sorted(p for p in LEGACY if self.model.partners[p].migrate_to)
        address = self.pick(data, list(self.model.installations()))
        if not moving or address is None:
            return
        partner = data.draw(st.sampled_from(moving), label="partner")
        broken = self.model.copy()
        inst = broken.installations()[address]
        inst.partner, inst.own = partner, data.draw(st.integers(0, 1), label="own")
        (self.config_dir / "reconciler.yaml").write_text(broken.render())
        before, opened = self.snap(), self.agent.opened
        try:
            _, tenant, name = address.split(".")
            wanted = (
                f"tenants.{tenant}.installations.{name}.credentials: partner '{partner}' migrates to "
                f"'{ENTRA}', but this installation brings its own client credentials"
            )
            for command in (
                ["plan"],
                ["apply", "--auto-approve", "--auth-mode", "browser", "--auth-timeout", "20"],
            ):
                result = self.cli(*command)
                if result.exit_code != 1 or wanted not in result.stderr:
                    fail(
                        f"`{command[0]}` of own credentials on a migrating partner exited {result.exit_code}, "
                        f"not 1 with {wanted!r}: {result.stderr.strip()[-400:]}"
                    )
            if self.snap() != before or self.agent.opened != opened:
                fail("a configuration refused for own credentials on a migrating partner changed something")
        finally:
            self.write(self.model)

    @rule()
    def status_counts(self) -> None:
        """`status` (offline) at any point: after refreshes found revoked tokens, deferrals, reverted campaigns."""
        check_status(self.model, self.snap(), self.status())

    @rule(tenant=st.sampled_from(TENANTS), mode=st.sampled_from(["browser", "defer"]))
    def apply_wave(self, tenant: str, mode: str) -> None:
        self.wave(tenant, mode)

    @rule(
        partners=st.sampled_from([LEGACY, LEGACY, LEGACY[:1], LEGACY[1:]]),
        drop_credentials=st.booleans(),
        waves=st.permutations(TENANTS),
        mode=st.sampled_from(["browser", "defer"]),
        revoke=st.booleans(),
    )
    def run_campaign(
        self, partners: tuple[str, ...], drop_credentials: bool, waves: list[str], mode: str, revoke: bool
    ) -> None:
        """A whole campaign (of one legacy partner or both): declared, then a wave of every tenant in turn
        (deferred waves completed with `authorize`); afterwards no installation change remains. With `revoke`,
        after the first wave that records the campaign a tenant still waiting revokes its grant, and a refresh
        finds it: status counts it failed until a later wave moves it."""
        for partner in partners:
            self.declare_campaign(partner, drop_credentials)
        self.finish(waves, mode, revoke)

    @rule()
    def finish_campaign(self) -> None:
        """The campaigns declared so far (if any), finished: a wave of every tenant, consent given."""
        self.finish(list(TENANTS), "browser")

    def finish(self, waves: list[str], mode: str, revoke: bool = False) -> None:
        start = self.snap()
        for tenant in waves:
            if not self.wave(tenant, mode):
                return
            if revoke and self.revoke_waiting():
                revoke = False
        before = self.snap()
        pending = [a for a, r in before.resources.items() if "pending" in r]
        if pending and self.complete(None, pending, before) != 0:
            return
        after = self.snap()
        left = {a: x for a, x in oracle.active(self.plan()).items() if a.startswith("installation.")}
        if set(left) - oracle.residual(self.model, after) or any(x != "reauthorize" for x in left.values()):
            fail(f"after a wave of every tenant the plan still changes installations: {left}")
        check_status(self.model, after, self.status())
        moved = sum(
            1
            for a, r in after.resources.items()
            if r["kind"] == "installation"
            and a in start.resources
            and start.resources[a]["partner"] != r["partner"]
        )
        STATS.campaigns[f"campaign finished ({mode}): {min(moved, 2)}{'+' * (moved > 1)} moved"] += 1

    def revoke_waiting(self) -> bool:
        """One installation still on a partner whose campaign state records loses its grant; `refresh` finds it
        and `status` counts it failed. Whether there was one."""
        snap = self.snap()
        campaigns = {
            r["name"] for r in snap.resources.values() if r["kind"] == "partner" and r.get("migrate_to")
        }
        waiting = [
            a
            for a in self.authorized(snap)
            if snap.resources[a]["partner"] in campaigns and "pending" not in snap.resources[a]
        ]
        grant = self.grant_of(snap, waiting[0]) if waiting else None
        if grant is None:
            return False
        self.sandbox.provider.revoke(grant_id=grant)
        self.revoked.add(grant)
        # a refresh stopped by a fault the history queued may not have found the grant revoked
        if self.refreshed(window="0"):
            status = self.status()
            check_status(self.model, self.snap(), status)
            row = {e["address"]: e for e in status["installations"]}[waiting[0]]
            if (row["migration"] or {}).get("progress") != "failed":
                fail(
                    f"{waiting[0]}: its grant revoked while its campaign waits, status says {row['migration']}"
                )
            STATS.campaigns["a waiting installation revoked, counted failed"] += 1
        return True

    # -- one wave ------------------------------------------------------------------------------------------------

    def wave(self, tenant: str, mode: str) -> bool:
        """`apply --target 'installation.{tenant}.*'` and the checks after it; whether the run succeeded."""
        target = f"installation.{tenant}.*"
        before = self.snap()
        plan = self.plan("--target", target)
        result = self.cli(
            "apply", "--auto-approve", "--auth-mode", mode, "--auth-timeout", "20", "--target", target
        )
        self.check_apply(plan, before, result, mode, target, self.model)
        if result.exit_code == 1:
            return False
        after = self.snap()
        moved = check_wave(self.model, before, after, target)
        STATS.campaigns[
            f"wave ({mode}, exit {result.exit_code}): {min(moved, 2)}{'+' * (moved > 1)} moved"
        ] += 1
        check_remaining(self.model, after, self.plan())
        check_status(self.model, after, self.status())
        return True

    def status(self) -> dict[str, Any]:
        result = self.cli("status", "--format", "json")
        if result.exit_code not in (0, 2):
            fail(f"status exited {result.exit_code}: {result.stderr.strip()[-300:]}")
        return json.loads(result.stdout)


# -- the checks -------------------------------------------------------------------------------------------------


def check_wave(model: Model, before: Snapshot, after: Snapshot, target: str) -> int:
    """A successful wave: its installations are recorded where the configuration (and its campaigns) put them;
    nothing outside it changed; every partner declaring a move to where one arrived records its campaign. Returns
    how many installations moved to another partner."""
    installs = model.installations()
    arrived, moved = set(), 0
    for address in sorted(set(before.resources) | set(after.resources)):
        old, new = before.resources.get(address), after.resources.get(address)
        if not fnmatch.fnmatchcase(address, target):
            if address.startswith("installation.") and (
                old != new or before.credentials.get(address) != after.credentials.get(address)
            ):
                fail(f"{address}: the wave {target} changed it: {oracle._diff(old, new)}")
            continue
        inst = installs.get(address)
        if inst is None:
            if new is not None:
                fail(f"{address}: no longer declared, but still recorded after the wave")
            continue
        if new is None:
            fail(f"{address}: declared, but not recorded after the wave")
            continue
        marker = new.get("pending")
        if marker is not None:  # deferred (now or before): the current authorization stays until it completes
            if (
                marker["client_id"] != model.client_id(inst)
                or sorted(marker["requested_scopes"]) != inst.declared_scopes()
            ):
                fail(f"{address}: the wave deferred an authorization of {marker}, not the configuration's")
            continue
        _recorded_as_declared(model, address, inst, new)
        if old is not None and old["partner"] != new["partner"]:
            arrived.add(new["partner"])
            moved += 1
    for name, partner in model.partners.items():
        recorded = after.resources[f"partner.{name}"].get("migrate_to")
        if partner.migrate_to in arrived and recorded != partner.migrate_to:
            fail(
                f"partner.{name}: installations arrived at {partner.migrate_to}, its campaign is not recorded"
            )
    return moved


def _recorded_as_declared(model: Model, address: str, inst: Any, record: dict[str, Any]) -> None:
    partner = model.effective_partner(inst)
    want = {
        "partner": partner,
        "auth": auth_of(partner),
        "client_id": model.client_id(inst),
        "scopes": inst.declared_scopes(),
        "status": "authorized",
    }
    have = {k: record.get(k, "authorized" if k == "status" else None) for k in want}
    have["scopes"] = sorted(have["scopes"] or [])
    if have != want:
        fail(f"{address}: after the wave state records {have}, the configuration moves it to {want}")
    granted = oracle.field_of(record, "granted_scopes")
    if not set(granted) <= set(CONNECTOR.scopes) or granted != sorted(granted):
        fail(f"{address}: the granted scopes are not recorded as the catalog names them: {granted}")


def check_remaining(model: Model, snap: Snapshot, plan: dict[str, Any]) -> None:
    """The plan after a wave shows exactly the moves still to make: an installation recorded on another partner
    than the one the configuration and its campaigns put it on (no deferred authorization waiting), re-authorized
    where the flavour changes, with the scopes asked for in the new flavour's form."""
    changes = oracle.changes_of(plan)
    expected = set()
    # A deferred authorization waiting: the plan waits for it while it matches every declared attribute (its
    # target digest, not reproduced here), else re-issues it; either may show the move.
    waiting = {a for a, r in snap.resources.items() if "pending" in r}
    for address, inst in model.installations().items():
        record = snap.resources.get(address)
        partner = model.effective_partner(inst)
        if record is None or record["partner"] == partner or address in waiting:
            continue
        expected.add(address)
        change = changes.get(address)
        moved = f"partner changed: {record['partner']} -> {partner}"
        if change is None or moved not in change["reasons"]:
            fail(f"{address}: recorded on {record['partner']}, declared on {partner}; the plan says {change}")
            return
        if record["auth"] != auth_of(partner):
            asked = requested_as(auth_of(partner), inst.declared_scopes())
            if change["action"] != "reauthorize" or asked not in change["reasons"]:
                fail(
                    f"{address}: the move to {partner} is planned as {change['action']} {change['reasons']}, "
                    f"not a re-authorization with {asked!r}"
                )
    moves = {a for a, c in changes.items() if any(r.startswith("partner changed: ") for r in c["reasons"])}
    if moves - expected - waiting:
        fail(
            f"the plan moves {sorted(moves - expected - waiting)} to another partner, which state and "
            "configuration agree on"
        )


def check_status(model: Model, snap: Snapshot, status: dict[str, Any]) -> None:
    """`status --format json` counts each campaign state records: an installation still on a migrating partner is
    pending (failed when its row says it needs a sign-in or is in error), one a campaign moved (`migrated_from`
    names a recorded partner whose campaign moves to its partner) is migrated — one created on that partner, or
    moved there by hand, is in no campaign; the summary counts every recorded installation once."""
    campaigns = {
        r["name"]: r["migrate_to"]
        for r in snap.resources.values()
        if r["kind"] == "partner" and r.get("migrate_to")
    }
    rows = {e["address"]: e for e in status["installations"]}
    records = {a: r for a, r in snap.resources.items() if r["kind"] == "installation"}
    if set(rows) != set(records) or sum(status["summary"].values()) != len(records):
        fail(f"status shows {sorted(rows)} ({status['summary']}), state records {sorted(records)}")
    pending: dict[tuple[str, str], dict[str, int]] = {}
    migrated: dict[str, int] = {}
    for address, record in records.items():
        partner = record["partner"]
        if partner in campaigns:
            word = "failed" if rows[address]["status"] in ("needs-reauthorization", "error") else "pending"
            counts = pending.setdefault((partner, campaigns[partner]), dict.fromkeys(PROGRESS, 0))
            counts[word] += 1
        elif campaigns.get(record.get("migrated_from") or "") == partner:
            migrated[partner] = migrated.get(partner, 0) + 1
    got_pending = {
        (m["from"], m["to"]): {k: m[k] for k in ("pending", "failed")} for m in status["migrations"]
    }
    want_pending = {k: {w: v[w] for w in ("pending", "failed")} for k, v in pending.items()}
    got_pending = {k: v for k, v in got_pending.items() if any(v.values())}
    got_migrated: dict[str, int] = {}
    for m in status["migrations"]:
        got_migrated[m["to"]] = got_migrated.get(m["to"], 0) + m["migrated"]
    got_migrated = {k: v for k, v in got_migrated.items() if v}
    if got_pending != want_pending or got_migrated != migrated:
        fail(
            f"status counts campaigns {status['migrations']}; state records pending {want_pending}, "
            f"migrated {migrated} (campaigns {campaigns})"
        )
    declared = {a for a, i in model.installations().items() if model.effective_partner(i) != i.partner}
    for address in declared & set(records):
        partner, row = records[address]["partner"], rows[address]["migration"]
        named = model.installations()[address].partner
        moved = partner == model.effective_partner(model.installations()[address]) and campaigns.get(named) == partner
        if moved and records[address].get("migrated_from") is None:
            STATS.campaigns["on its campaign's partner before the campaign: not counted migrated"] += 1
        if moved and records[address].get("migrated_from") == named and (row is None or row["progress"] != "migrated"):
            fail(f"{address}: moved by its campaign, status says {row}")
