"""Saved plans: `plan --out FILE` writes one; `apply FILE` applies exactly it, or refuses it as stale or tampered.

Owns: the plan file's versioned format — the plan document it shows, the declaration each change moves to (what
apply carries out), the desired values it was made from (secret references, never values), the state lineage and
serial it was made against, the configuration digest — and its HMAC, keyed from the state key, so that a file
edited after review does not apply. Must not: hold secret values, or decide anything the planner decides.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from reconciler import __version__
from reconciler.config.desired import CyclrSettings, DesiredInstallation, DesiredPartner, DesiredState
from reconciler.crypto import StateKey
from reconciler.declared import DeclaredInstallation, DeclaredPartner
from reconciler.errors import ReconcilerError
from reconciler.names import is_address
from reconciler.placement import DeclaredAccount
from reconciler.plan import Action, Plan, ResourceChange, StateRef
from reconciler.render.document import PlanDocument
from reconciler.statefiles import open_regular

__all__ = ["PLAN_FILE_VERSION", "PlanFileError", "SavedPlan", "config_digest", "read_plan_file", "write_plan_file"]

PLAN_FILE_VERSION = 2
MAGIC = "reconciler-plan"


class PlanFileError(ReconcilerError):
    """A saved plan cannot be used: unreadable, from another version or environment, tampered with, or stale."""


@dataclass(frozen=True)
class SavedPlan:
    document: PlanDocument
    plan: Plan
    desired: DesiredState
    config_digest: str


def _declared_data(declared: DeclaredPartner | DeclaredAccount | DeclaredInstallation) -> dict[str, Any]:
    """A declaration as saved: its attributes, the client secret by reference only (a declaration holds no value)."""
    return declared.model_dump(mode="json")


def _desired_data(desired: DesiredState) -> dict[str, Any]:
    data: dict[str, Any] = {
        "environment": desired.environment,
        "partners": {address: _declared_data(p.declared) for address, p in sorted(desired.partners.items())},
        "installations": {address: _declared_data(i.declared) for address, i in sorted(desired.installations.items())},
    }
    moved = {address: i.moved_from for address, i in sorted(desired.installations.items()) if i.moved_from}
    if moved:  # absent without a migration campaign: such plan files are as before
        data["moved_from"] = moved
    platform = desired.platform
    if platform is not None:  # absent for the local platform: its plan files are as before
        data["platform"] = {
            "type": "cyclr", "api_url": platform.api_url, "service_url": platform.service_url,
            "client_id": platform.client_id, "client_secret_ref": platform.client_secret_ref,
        }
        data["accounts"] = {address: _declared_data(a) for address, a in sorted(desired.accounts.items())}
    return data


def _targets_data(plan: Plan) -> dict[str, Any]:
    """What each change apply carries out moves to (no-ops are not carried out)."""
    return {
        c.address: _declared_data(c.target) for c in plan.changes if c.target is not None and c.action is not Action.NOOP
    }


def config_digest(desired: DesiredState) -> str:
    """A digest of everything the configuration declares (references, not secret values)."""
    canonical = json.dumps(_desired_data(desired), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _mac(key: StateKey, body: dict[str, Any]) -> str:
    mac_key = hashlib.sha256(b"reconciler-plan-hmac\n" + key.key).digest()
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return hmac.new(mac_key, canonical, hashlib.sha256).hexdigest()


def write_plan_file(path: Path, plan: Plan, document: PlanDocument, desired: DesiredState, key: StateKey) -> None:
    body = {
        "magic": MAGIC,
        "format_version": PLAN_FILE_VERSION,
        "reconciler_version": __version__,
        "environment": document.environment,
        "state": {"lineage": document.state.lineage, "serial": document.state.serial},
        "config_digest": config_digest(desired),
        "desired": _desired_data(desired),
        "targets": _targets_data(plan),
        "plan": document.model_dump(mode="json"),
    }
    payload = {**body, "hmac": _mac(key, body), "key_id": key.key_id}
    try:  # never through a link: a checkout can plant one at the plan file's name (a CI job's `--out plan.bin`)
        with os.fdopen(open_regular(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), "w") as handle:
            handle.write(json.dumps(payload, indent=1, sort_keys=True) + "\n")
    except OSError as exc:
        raise PlanFileError(f"{path}: cannot write the plan file: {exc.strerror}") from None


def read_plan_file(
    path: Path,
    *,
    key: StateKey | None,
    environment: str,
    resolve_secret: Callable[[str], str],
) -> SavedPlan:
    """Read and check a saved plan; `resolve_secret` turns each `${env:}`/`${file:}` reference it names into a value.
    With `key` None (no key available) the HMAC cannot be checked and the plan is refused."""
    try:
        payload = json.loads(Path(path).read_text())
    except (OSError, ValueError, UnicodeDecodeError, RecursionError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not a plan file"
        raise PlanFileError(f"{path}: cannot read the plan file ({reason})") from None
    if not isinstance(payload, dict) or payload.get("magic") != MAGIC:
        raise PlanFileError(f"{path}: not a reconciler plan file")
    if payload.get("format_version") != PLAN_FILE_VERSION:
        raise PlanFileError(
            f"{path}: plan file format {payload.get('format_version')!r}; this reconciler reads {PLAN_FILE_VERSION}",
            hint="plan again with this version",
        )
    if payload.get("environment") != environment:
        raise PlanFileError(
            f"{path}: the plan is for environment '{payload.get('environment')}', not '{environment}'",
            hint=f"apply it with --env {payload.get('environment')}",
        )
    body = {k: v for k, v in payload.items() if k not in {"hmac", "key_id"}}
    if key is None:
        raise PlanFileError(f"{path}: no state key to check the plan's signature with", hint="set the state key")
    if not hmac.compare_digest(str(payload.get("hmac", "")), _mac(key, body)):
        raise PlanFileError(
            f"{path}: the plan file was changed after it was made, or was made with another state key",
            hint="plan again; nothing was changed",
        )
    try:
        document = PlanDocument.model_validate(body["plan"])
        desired = _rebuild_desired(body["desired"], resolve_secret)
        plan = plan_from_document(document, body["targets"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise PlanFileError(f"{path}: the plan file is inconsistent ({type(exc).__name__})") from None
    if config_digest(desired) != body.get("config_digest"):
        raise PlanFileError(f"{path}: the plan file's configuration does not match its digest")
    named = [c.address for c in document.changes] + [*desired.partners, *desired.accounts, *desired.installations]
    if not all(is_address(address) for address in named):
        raise PlanFileError(f"{path}: the plan file names an invalid address (damaged)", hint="plan again")
    return SavedPlan(document, plan, desired, body["config_digest"])


def _rebuild_desired(data: dict[str, Any], resolve_secret: Callable[[str], str]) -> DesiredState:
    def secret(item: dict[str, Any]) -> SecretStr | None:
        ref = item.get("client_secret_ref")
        return SecretStr(resolve_secret(ref)) if ref else None

    partners = {
        address: DesiredPartner(DeclaredPartner.model_validate(item), client_secret=secret(item))
        for address, item in data["partners"].items()
    }
    moved = data.get("moved_from") or {}
    installations = {
        address: DesiredInstallation(
            DeclaredInstallation.model_validate(item), client_secret=secret(item), moved_from=moved.get(address)
        )
        for address, item in data["installations"].items()
    }
    platform = data.get("platform")
    if platform is None:
        return DesiredState(partners=partners, installations=installations, environment=data["environment"])
    settings = CyclrSettings(
        api_url=str(platform["api_url"]), service_url=str(platform["service_url"]),
        client_id=str(platform["client_id"]), client_secret_ref=str(platform["client_secret_ref"]),
        client_secret=SecretStr(resolve_secret(str(platform["client_secret_ref"]))),
    )
    accounts = {address: DeclaredAccount.model_validate(item) for address, item in data["accounts"].items()}
    return DesiredState(partners, installations, data["environment"], platform=settings, accounts=accounts)


def plan_from_document(document: PlanDocument, targets: dict[str, Any]) -> Plan:
    """The executor's Plan from the saved document (the document is what was reviewed) and the declarations its
    changes move to."""
    changes = tuple(
        ResourceChange(
            address=c.address,
            action=Action(c.action),
            reasons=tuple(c.reasons),
            before=c.before,
            after=c.after,
            warnings=tuple(c.warnings),
            pending=c.pending,
            target=_target(c.address, targets.get(c.address)),
        )
        for c in document.changes
    )
    state = StateRef(document.state.location, document.state.lineage, document.state.serial)
    return Plan(environment=document.environment, state=state, changes=changes)


_KINDS: dict[str, type[DeclaredPartner | DeclaredAccount | DeclaredInstallation]] = {
    "partner": DeclaredPartner, "account": DeclaredAccount, "installation": DeclaredInstallation,
}


def _target(address: str, data: Any) -> DeclaredPartner | DeclaredAccount | DeclaredInstallation | None:
    if data is None:
        return None
    declared = _KINDS[address.split(".", 1)[0]].model_validate(data)
    if declared.address != address:
        raise ValueError("a target names another address")
    return declared
