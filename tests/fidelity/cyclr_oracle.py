"""The Cyclr fidelity oracle: each plan predicted from the configuration model, the records state holds and (for
`--refresh`) what the sandbox's Cyclr model shows; and what an apply must leave on the platform.

The rules are written out here from the issue's contract (issue 14: accounts, account connectors, drift), not
taken from reconciler's planner (nothing here imports it), so that a planner bug is not shared by its own oracle:

- an account is created for a new tenant, updated when its name or (declared) time zone differs, and when its
  tenant is gone deleted only with `--allow-delete account.<t>`, else kept;
- an installation is created when new or gone from the platform; deleted when removed; signed in again when its
  scopes change, its sign-in was not completed, or the platform says it is no longer authenticated; updated when
  its parameters differ; a sign-in due (deferred) waits as a no-op (its parameters changed: an update, still due);
- a refresh sees the platform as it is: a deleted account or account connector is gone (an account gone with its
  tenant is forgotten: a delete without --allow-delete, nothing being left to delete), a console edit is the
  recorded value, a lapsed authentication is drift, and a deferred sign-in completed meanwhile is done.
"""

from __future__ import annotations

from typing import Any

from tests.fidelity.cyclr_world import ADO, PROPERTY, CModel, Platform, scope_set
from tests.fidelity.oracle import Divergence, fail

__all__ = ["Divergence", "check_platform", "observed", "predict"]

Records = dict[str, dict[str, Any]]
DUE = "noop (sign-in due)"  # a deferred sign-in still due: a no-op that waits for `reconciler authorize`


def observed(resources: Records, platform: Platform) -> Records:
    """The records as a refresh finds them on the platform."""
    out: Records = {}
    for address, record in resources.items():
        if record["kind"] == "account":
            shown = platform.accounts.get(record["id"])
            if shown is None:  # the plan creates it again, or forgets it (its tenant gone too)
                out[address] = {**record, "gone": True}
                continue
            timezone = shown[1] if record.get("timezone") is not None else None
            out[address] = {**record, "name": shown[0], "timezone": timezone}
        elif record["kind"] == "installation" and record.get("account_connector"):
            out[address] = _observed_installation(record, platform)
        else:
            out[address] = record
    return out


def _observed_installation(record: dict[str, Any], platform: Platform) -> dict[str, Any]:
    installed = record["account_connector"]
    found = platform.connectors.get(installed["account_connector_id"])
    if found is None or found.account != record["placement"]["account"]:
        return {**record, "account_connector": None}
    by_slug = {name.lower(): value for name, value in found.properties.items()}
    parameters = {k: by_slug.get(PROPERTY.get(k, k).lower(), v) for k, v in record["parameters"].items()}
    scopes = record["scopes"]
    if scopes and "Scopes" in found.properties:
        scopes = found.properties["Scopes"].split()
    seen = {**record, "parameters": parameters, "scopes": scopes,
            "account_connector": {**installed, "authenticated": found.authenticated}}
    status = record.get("status", "authorized")
    if found.authenticated and status == "pending_authorization" and not installed["authenticated"]:
        seen.update(status="authorized")  # signed in through a link meanwhile
        seen.pop("pending", None)
        seen.pop("drift", None)
    elif not found.authenticated and status == "authorized":
        seen["drift"] = "deauthenticated"
    elif found.authenticated and seen.get("drift") == "deauthenticated":
        seen.pop("drift")
    return seen


def predict(model: CModel, resources: Records, allow_delete: set[str]) -> dict[str, str]:
    """address -> action of every resource the plan must show (the partner, accounts, installations)."""
    out = {"partner.microsoft-azure-devops": "noop" if "partner.microsoft-azure-devops" in resources else "create"}
    for tenant, spec in model.tenants.items():
        address = f"account.{tenant}"
        have = resources.get(address)
        if have is None or have.get("gone"):
            out[address] = "create"
        elif have["name"] != spec.name or have.get("timezone") != spec.timezone:
            out[address] = "update"
        else:
            out[address] = "noop"
    for address, record in resources.items():
        if record["kind"] == "account" and record["tenant"] not in model.tenants:
            out[address] = "delete" if record.get("gone") or address in allow_delete else "noop"
    declared = model.installations()
    for address in set(declared) | {a for a, r in resources.items() if r["kind"] == "installation"}:
        out[address] = _installation(declared.get(address), resources.get(address))
    return out


def _installation(want: Any, have: dict[str, Any] | None) -> str:
    if want is None:
        return "delete"
    if have is None or have.get("account_connector") is None:
        return "create"
    status = have.get("status", "authorized")
    reauthorize = have["connector"] != want.connector or sorted(set(have["scopes"])) != want.declared_scopes()
    if status == "pending_authorization":
        if "pending" in have and not reauthorize:
            return DUE if have["parameters"] == want.parameters else "update"  # set in place; still due
        reauthorize = True  # installed, its sign-in stopped (or due, for what the configuration no longer says)
    elif have.get("drift") or not have["account_connector"]["authenticated"]:
        reauthorize = True
    if reauthorize:
        return "reauthorize"
    return "update" if have["parameters"] != want.parameters else "noop"


def check_plan(predicted: dict[str, str], plan: dict[str, Any], what: str) -> None:
    got = {c["address"]: DUE if c["pending"] and c["action"] == "noop" else c["action"] for c in plan["changes"]}
    if got != predicted:
        differ = {a: (predicted.get(a), got.get(a)) for a in sorted(set(got) | set(predicted))
                  if predicted.get(a) != got.get(a)}
        reasons = {c["address"]: c["reasons"] for c in plan["changes"] if c["address"] in differ}
        fail(f"{what}: (predicted, planned) differ: {differ}; reasons {reasons}")


# -- after an apply -----------------------------------------------------------------------------------------------


def check_platform(model: CModel, resources: Records, platform: Platform) -> None:
    """After a completed apply: every declared account and installation is on the platform as declared and
    recorded where it is; nothing of this history is on the platform that state does not record."""
    for tenant, spec in model.tenants.items():
        shown = platform.accounts.get(model.account_id(tenant))
        if shown is None or shown[0] != spec.name or (spec.timezone and shown[1] != spec.timezone):
            fail(f"account.{tenant}: the platform shows {shown}, the configuration declares {spec}")
        if resources.get(f"account.{tenant}", {}).get("id") != model.account_id(tenant):
            fail(f"account.{tenant}: not recorded")
    recorded_accounts = {r["id"] for r in resources.values() if r["kind"] == "account"}
    if set(platform.accounts) - recorded_accounts:
        fail(f"accounts on the platform that state does not record: {sorted(set(platform.accounts) - recorded_accounts)}")
    recorded = {}
    for address, inst in model.installations().items():
        record = resources.get(address)
        installed = record and record.get("account_connector")
        if not installed:
            fail(f"{address}: not recorded as installed: {record and record.get('status')}")
            continue
        recorded[installed["account_connector_id"]] = address
        _check_installed(address, inst, record, platform)
    orphans = sorted(set(platform.connectors) - set(recorded))
    if orphans:
        fail(f"account connectors on the platform that state does not record: {orphans}")


def _check_installed(address: str, inst: Any, record: dict[str, Any], platform: Platform) -> None:
    found = platform.connectors.get(record["account_connector"]["account_connector_id"])
    tenant = address.split(".")[1]
    if found is None or not found.account.endswith(f"-{tenant}"):
        fail(f"{address}: its account connector is not on the platform in its account")
        return
    want = inst.properties()
    have = dict(found.properties)
    if "Scopes" in want:
        want["Scopes"], have["Scopes"] = scope_set(want["Scopes"]), scope_set(have.get("Scopes", ""))
    if have != want:
        fail(f"{address}: the platform holds properties {have}, the configuration declares {want}")
    if found.connector.lower().replace(" ", "-") != (ADO if inst.connector == ADO else inst.connector):
        fail(f"{address}: installed as {found.connector}, declared {inst.connector}")
    status = record.get("status", "authorized")
    if status == "authorized" and not found.authenticated:
        fail(f"{address}: recorded as signed in, the platform says not authenticated")
    if status == "pending_authorization" and "pending" not in record:
        fail(f"{address}: a completed apply left it not signed in and no sign-in due")
    if record["account_connector"]["authenticated"] != found.authenticated and status == "authorized":
        fail(f"{address}: state says authenticated={record['account_connector']['authenticated']}")
