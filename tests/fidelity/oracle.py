"""The fidelity oracle: what a plan promised, checked against what state and the sandbox show afterwards.

Each check raises `Divergence` naming the address and what differs. The expectations are written out here from the
documented semantics (docs/plan-json.md, DESIGN.md), not taken from the planner, so that a planner bug is not
shared by its own oracle.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from reconciler.sandbox import SandboxServer
from tests.fidelity.world import CONNECTOR, Model, Snapshot, open_pending_ok, open_tokens

# Installation attributes a plan's `after` declares, and the record field each one is recorded in.
DECLARED = {
    "connector": "connector",
    "partner": "partner",
    "auth": "auth",
    "parameters": "parameters",
    "scopes": "scopes",
    "client_id": "client_id",
    "credentials_source": "credentials_source",
    "redirect_uri": "redirect_uri",
    "token_url": "token_url",
    "client_secret_ref": "client_secret_ref",
    "protected": "protected",
}
RECORD_DEFAULTS = {"credentials_source": "partner", "protected": False, "granted_scopes": []}
PARTNER_FIELDS = (
    "connector",
    "auth",
    "tenant_id",
    "client_id",
    "client_secret_ref",
    "redirect_uri",
    "authorize_url",
    "token_url",
    "api_url",
    "scopes",
    "migrate_to",
)
# What an in-place update may change besides the declared attributes: the token's expiry (the current token may be
# refreshed first) and when it was last verified. Everything else about the authorization stays as it was.
# A pending authorization is withdrawn by an update: one that still matched the configuration would have made the
# plan a no-op that waits for it.
UPDATE_MAY_CHANGE = {"expires_at", "verified_at", "pending"}


class Divergence(AssertionError):
    """Apply, plan, state and the provider disagree."""


def fail(message: str) -> None:
    raise Divergence(message)


def field_of(record: dict[str, Any], name: str) -> Any:
    return record.get(name, RECORD_DEFAULTS.get(name))


def changes_of(plan: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["address"]: c for c in plan["changes"]}


def active(plan: dict[str, Any]) -> dict[str, str]:
    """address -> action, for every change that is not a no-op."""
    return {c["address"]: c["action"] for c in plan["changes"] if c["action"] != "noop"}


# -- effects of one apply ---------------------------------------------------------------------------------------


def check_effects(
    plan: dict[str, Any], before: Snapshot, after: Snapshot, *, deferred: bool, completed: bool
) -> None:
    """Every address changed exactly as planned; with `completed`, every planned change happened."""
    changes = changes_of(plan)
    addresses = (
        set(before.resources) | set(after.resources) | set(before.credentials) | set(after.credentials)
    )
    stray = sorted(addresses - set(changes))
    if stray:
        fail(f"apply touched addresses the plan does not mention: {stray}")
    if (
        before.doc
        and after.doc
        and (before.doc["lineage"], before.doc["environment"])
        != (
            after.doc["lineage"],
            after.doc["environment"],
        )
    ):
        fail("apply changed the state's lineage or environment")
    for address, change in changes.items():
        old, new = before.resources.get(address), after.resources.get(address)
        old_cred, new_cred = before.credentials.get(address), after.credentials.get(address)
        untouched = old == new and old_cred == new_cred
        action = change["action"]
        if action == "noop" or untouched:
            if not untouched:
                fail(f"{address}: planned no-op ({change['reasons']}) but state changed: {_diff(old, new)}")
            if completed and action != "noop" and not (deferred and change["pending"]):
                fail(f"{address}: planned {action} ({change['reasons']}) but nothing changed")
            continue
        if not completed and action == "update" and old == new and _only_tokens_changed(old_cred, new_cred):
            continue  # the run stopped at this update after refreshing the token: a rotation is stored at once
        if change["kind"] == "partner":
            _partner_effect(address, action, change, new)
        elif action == "delete":
            if new is not None or new_cred is not None:
                fail(f"{address}: planned delete but the record or its credentials remain")
        elif action == "update":
            _update_effect(address, change, old, new, new_cred)
        elif deferred:
            _deferred_effect(address, change, old, new, old_cred, new_cred)
        else:
            _authorized_effect(address, change, old, new, old_cred, new_cred)


def _only_tokens_changed(old: dict[str, Any] | None, new: dict[str, Any] | None) -> bool:
    if old is None or new is None:
        return False
    return {k: v for k, v in old.items() if k not in ("tokens", "generation")} == {
        k: v for k, v in new.items() if k not in ("tokens", "generation")
    }


def _partner_effect(address: str, action: str, change: dict[str, Any], new: dict[str, Any] | None) -> None:
    if action == "delete":
        if new is not None:
            fail(f"{address}: planned delete but the partner is still recorded")
        return
    if new is None:
        fail(f"{address}: planned {action} but the partner is not recorded")
        return
    after = change["after"]
    for name in PARTNER_FIELDS:
        if new.get(name) != after.get(name):
            fail(f"{address}: planned {name}={after.get(name)!r}, recorded {new.get(name)!r}")


def _declared_match(address: str, change: dict[str, Any], new: dict[str, Any]) -> None:
    after = change["after"]
    for view, recorded in DECLARED.items():
        if view not in after and view != "protected":
            continue
        want = after.get(view, False) if view == "protected" else after[view]
        have = field_of(new, recorded)
        if view == "scopes":
            have = sorted(have)
        if want != have:
            fail(f"{address}: planned {view}={want!r} ({change['action']}), recorded {have!r}")


def _authorized_effect(
    address: str,
    change: dict[str, Any],
    old: dict[str, Any] | None,
    new: dict[str, Any] | None,
    old_cred: dict[str, Any] | None,
    new_cred: dict[str, Any] | None,
) -> None:
    """create / reauthorize with consent: a new authorization recorded for exactly the declared attributes."""
    if new is None or new_cred is None:
        fail(f"{address}: planned {change['action']} but no record or credentials were written")
        return
    _declared_match(address, change, new)
    if new.get("status") not in (None, "authorized") or "pending" in new or "drift" in new:
        fail(f"{address}: after {change['action']} the record is not plainly authorized: {_brief(new)}")
    if "tokens" not in new_cred or "staged" in new_cred or "pending" in new_cred:
        fail(f"{address}: after {change['action']} the sealed record holds {sorted(new_cred)}")
    if old_cred is not None and old_cred.get("tokens") == new_cred.get("tokens"):
        fail(f"{address}: {change['action']} kept the previous tokens")


def _deferred_effect(
    address: str,
    change: dict[str, Any],
    old: dict[str, Any] | None,
    new: dict[str, Any] | None,
    old_cred: dict[str, Any] | None,
    new_cred: dict[str, Any] | None,
) -> None:
    """create / reauthorize deferred: a pending marker for the declared target; current tokens keep working."""
    if new is None or new_cred is None or "pending" not in new or "pending" not in new_cred:
        fail(f"{address}: planned {change['action']} (deferred) but no pending authorization was recorded")
        return
    after, marker = change["after"], new["pending"]
    if sorted(marker["requested_scopes"]) != after["scopes"] or marker["client_id"] != after["client_id"]:
        fail(
            f"{address}: the pending authorization is for {marker['requested_scopes']} / {marker['client_id']}"
        )
    if old is not None and old.get("status", "authorized") == "authorized":
        kept = {k: v for k, v in new.items() if k != "pending"}
        if kept != {k: v for k, v in old.items() if k != "pending"}:
            fail(f"{address}: deferring changed the current authorization: {_diff(old, new)}")
        if (old_cred or {}).get("tokens") != new_cred.get("tokens"):
            fail(f"{address}: deferring replaced the current tokens")
    else:
        _declared_match(address, change, new)
        if new.get("status") != "pending_authorization" or "tokens" in new_cred:
            fail(f"{address}: a new deferred installation is recorded as {new.get('status')}")


def _update_effect(
    address: str,
    change: dict[str, Any],
    old: dict[str, Any] | None,
    new: dict[str, Any] | None,
    new_cred: dict[str, Any] | None,
) -> None:
    """update: the declared attributes change in place; the authorization (scopes, client, grant) stays."""
    if old is None or new is None:
        fail(f"{address}: planned update but the record is missing before or after")
        return
    _declared_match(address, change, new)
    declared_fields = set(DECLARED.values()) - {"scopes", "client_id"}
    for name in sorted(set(old) | set(new)):
        if name in declared_fields or name in UPDATE_MAY_CHANGE:
            continue
        if old.get(name) != new.get(name):
            fail(f"{address}: the update changed {name}: {old.get(name)!r} -> {new.get(name)!r}")
    if new_cred is None or "tokens" not in new_cred:
        fail(f"{address}: after the update no tokens are recorded")
    if "pending" in new or (new_cred and "pending" in new_cred):  # a pending one still matching makes a no-op
        fail(f"{address}: after the update a pending authorization is still recorded")


# -- refresh ----------------------------------------------------------------------------------------------------

# `reconciler refresh` records what it found: the drift finding and when it was checked. Nothing else.
REFRESH_MAY_CHANGE = {"drift", "checked_at"}


def check_refresh_effects(before: Snapshot, after: Snapshot) -> None:
    if set(before.resources) != set(after.resources):
        fail("refresh added or removed records")
    for address, old in before.resources.items():
        new = after.resources[address]
        for name in sorted(set(old) | set(new)):
            if name not in REFRESH_MAY_CHANGE and old.get(name) != new.get(name):
                fail(f"{address}: refresh changed {name}")
    if before.doc and after.doc:
        moved = any(
            before.resources[a].get("drift") != after.resources[a].get("drift") for a in before.resources
        )
        if not moved and after.serial != before.serial:
            fail("refresh bumped the serial without recording anything")
    for address in set(before.credentials) | set(after.credentials):
        old_cred, new_cred = before.credentials.get(address), after.credentials.get(address)
        if (old_cred is None) != (new_cred is None) or (
            old_cred and old_cred.get("pending") != new_cred.get("pending")
        ):
            fail(f"{address}: refresh changed more than the tokens of its credentials")


# -- convergence --------------------------------------------------------------------------------------------------


def residual(model: Model, snap: Snapshot) -> set[str]:
    """Installations a plan may honestly keep re-authorizing after a successful apply: recorded as authorized for
    the declared scopes, with a grant (recorded as the provider gave it) that lacks some of them."""
    out = set()
    for address, inst in model.installations().items():
        record = snap.resources.get(address)
        if record is None or record.get("status", "authorized") != "authorized" or "pending" in record:
            continue
        declared = inst.declared_scopes()
        if sorted(record["scopes"]) != declared:
            continue
        if set(declared) - CONNECTOR.closure(frozenset(field_of(record, "granted_scopes"))):
            out.add(address)
    return out


def check_converged(plan: dict[str, Any], expected: set[str], targets: Iterable[str] = ()) -> None:
    """A plan made right after a successful apply: only the honest residual (narrower grants) may remain."""
    patterns = list(targets)
    want = {a for a in expected if not patterns or any(fnmatch.fnmatchcase(a, p) for p in patterns)}
    got = active(plan)
    if set(got) != want or any(action != "reauthorize" for action in got.values()):
        extra = {a: (got[a], changes_of(plan)[a]["reasons"]) for a in got}
        fail(f"plan after a successful apply is not empty: {extra} (only {sorted(want)} may remain)")


def check_matches_model(model: Model, snap: Snapshot) -> None:
    """After a full apply, state records exactly what the configuration declares (or a pending authorization of
    it): an independent check that the plan left nothing out."""
    installs = model.installations()
    recorded = {a for a, r in snap.resources.items() if r["kind"] == "installation"}
    if recorded != set(installs):
        fail(f"state records installations {sorted(recorded)}, the configuration declares {sorted(installs)}")
    for address, inst in installs.items():
        record = snap.resources[address]
        marker = record.get("pending")
        scopes, client = (
            (marker["requested_scopes"], marker["client_id"])
            if marker
            else (record["scopes"], record["client_id"])
        )
        if sorted(scopes) != inst.declared_scopes() or client != model.client_id(inst):
            fail(
                f"{address}: state holds {sorted(scopes)} for {client}, the configuration declares "
                f"{inst.declared_scopes()} for {model.client_id(inst)}"
            )
        if (
            not marker
            and (record["parameters"]["organization"], record["parameters"]["project"]) != inst.place
        ):
            fail(f"{address}: state holds {record['parameters']}, the configuration declares {inst.place}")
        if record["partner"] != model.effective_partner(inst) and not marker:
            fail(
                f"{address}: state holds partner {record['partner']}, the configuration declares "
                f"{inst.partner} (moving to {model.effective_partner(inst)})"
            )
    for name, partner in model.partners.items():
        record = snap.resources.get(f"partner.{name}")
        if record is None or record["client_id"] != model.client_id_of_partner(name):
            fail(f"partner.{name}: state holds {record and record['client_id']}")
        elif record.get("migrate_to") != partner.migrate_to:
            fail(f"partner.{name}: state holds migrate_to {record.get('migrate_to')}, declared {partner.migrate_to}")


# -- the provider's view ------------------------------------------------------------------------------------------


def check_provider(
    config_dir: Path, snap: Snapshot, sandbox: SandboxServer, revoked_by_history: set[str]
) -> None:
    """Every authorized record's sealed tokens are the live, current tokens of one grant at the sandbox, issued to
    the recorded client for exactly the recorded (granted) scopes; pending authorizations open; no orphan blobs."""
    provider = sandbox.provider
    orphans = sorted(set(snap.credentials) - set(snap.resources))
    if orphans:
        fail(f"sealed credentials without a record: {orphans}")
    seen: dict[str, str] = {}
    for address, record in snap.resources.items():
        if record["kind"] != "installation":
            continue
        if "pending" in record and not open_pending_ok(config_dir, snap, address):
            fail(f"{address}: its pending authorization is not sealed for {record['pending']['client_id']}")
        if record.get("status", "authorized") != "authorized":
            if "tokens" in snap.credentials.get(address, {}):
                fail(f"{address}: a never-authorized installation holds tokens")
            continue
        tokens = open_tokens(config_dir, snap, address)
        if tokens.refresh_token is None:
            fail(f"{address}: no refresh token recorded")
            return
        with provider.lock:
            grant = provider.by_refresh.get(tokens.refresh_token.get_secret_value())
            current_access = (
                grant is not None and grant.access_token == tokens.access_token.get_secret_value()
            )
        if grant is None:
            fail(
                f"{address}: the recorded refresh token is not a current one at the provider (a rotation was lost)"
            )
            return
        if not current_access:
            fail(f"{address}: the recorded access token is not the grant's current one")
        if grant.app.client_id != record["client_id"]:
            fail(
                f"{address}: tokens were issued to {grant.app.client_id}, state records {record['client_id']}"
            )
        if sorted(grant.scopes) != sorted(field_of(record, "granted_scopes")):
            fail(
                f"{address}: the provider granted {sorted(grant.scopes)}, state records {record.get('granted_scopes')}"
            )
        if grant.revoked and grant.id not in revoked_by_history:
            fail(f"{address}: its grant was revoked, but not by this history")
        if grant.id in seen:
            fail(f"{address} and {seen[grant.id]} hold the same grant")
        seen[grant.id] = address


def revoked(config_dir: Path, snap: Snapshot, sandbox: SandboxServer) -> set[str]:
    """Installations whose recorded grant the history revoked at the provider: `plan --refresh` rightly plans to
    re-authorize them. (A token the history expired early is refreshed by `plan --refresh`, which must then find
    nothing to do: the issue allows an exception there, the product no longer needs it.)"""
    out = set()
    for address, record in snap.resources.items():
        if record["kind"] != "installation" or record.get("status", "authorized") != "authorized":
            continue
        tokens = open_tokens(config_dir, snap, address)
        with sandbox.provider.lock:
            grant = (
                sandbox.provider.by_refresh.get(tokens.refresh_token.get_secret_value())
                if tokens.refresh_token
                else None
            )
            if grant is None or grant.revoked:
                out.add(address)
    return out


def _brief(record: dict[str, Any] | None) -> dict[str, Any] | None:
    if record is None:
        return None
    keep = ("status", "scopes", "granted_scopes", "client_id", "parameters", "pending", "drift")
    return {k: record[k] for k in keep if k in record}


def _diff(old: dict[str, Any] | None, new: dict[str, Any] | None) -> dict[str, Any]:
    if old is None or new is None:
        return {"before": _brief(old), "after": _brief(new)}
    return {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)}
