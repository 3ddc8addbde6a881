"""The recorded state document: what was applied, per address. Versioned, with lineage and serial.

Owns: the document's types, its JSON encoding, and the upgrade chain between format versions.
Must not: hold token material (sealed credentials live in their own store, one record per address, so that a
token refresh never rewrites — or bumps the serial of — this document).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from enum import Enum
from typing import Annotated, Any, Final, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictInt, ValidationError

from reconciler.declared import DeclaredInstallation, DeclaredPartner
from reconciler.errors import StaleStateError, StateError, one_line
from reconciler.names import is_address
from reconciler.placement import DeclaredAccount

__all__ = [
    "FORMAT_VERSION",
    "AccountConnectorRecord",
    "AccountRecord",
    "Drift",
    "InstallationRecord",
    "PartnerRecord",
    "PendingRecord",
    "Record",
    "StateDocument",
    "AnyRecord",
    "check_import",
    "decode_state",
    "decode_stored",
    "encode_state",
    "upgrade_record",
]

FORMAT_VERSION: Final = 6


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PartnerRecord(DeclaredPartner):
    """A partner's declaration as last applied (the client secret by reference only)."""

    kind: Literal["partner"] = "partner"


class AccountRecord(DeclaredAccount):
    """A tenant's account on the platform as last applied: created by us, or adopted (`reconciler import`)."""

    kind: Literal["account"] = "account"
    adopted: bool = False


class AccountConnectorRecord(_Record):
    """Where an installation lives on the platform: the account connector, the platform connector (id and version)
    and authentication entry it was installed from, and whether the platform last said it is authenticated."""

    account_connector_id: str
    connector_id: str
    connector_version: str | None = None
    authentication_id: str | None = None
    authenticated: bool = False
    client_secret_digest: str | None = None  # of the ClientSecret property last set (`placement.secret_digest`)


class PendingRecord(_Record):
    """A deferred authorization waiting for its user (the secrets of it are sealed with the credentials)."""

    since: AwareDatetime
    expires_at: AwareDatetime
    target_digest: str  # digest of the declared attributes the authorization will record
    client_id: str
    requested_scopes: tuple[str, ...]
    # The link the user opens. It carries `state` (posted in pull requests by design, so a link stays valid); the
    # PKCE verifier that completes it stays sealed with the credentials. None for a sign-in through the platform,
    # whose link carries a one-use token: `reconciler authorize` mints one when someone is there to use it.
    authorize_url: str | None = None
    # The authorization service's signed link to it (`service:` configured): `{public_url}/authorize/{id}?sig=…`.
    # Opening it starts a fresh sign-in; it carries no secret of the flow.
    link: str | None = None


class Drift(str, Enum):
    """What `reconciler refresh` found at the provider (or the platform) about an installation's tokens: it must
    re-authorize. The value is what state stores; `words` is what plans and listings show (display only)."""

    REVOKED = "revoked"
    REJECTED = "rejected"
    DEAUTHENTICATED = "deauthenticated"
    GONE = "gone"  # an account deleted on the platform (found by a refresh; planned, never stored)

    @property
    def words(self) -> str:
        return _DRIFT_WORDS[self]


_DRIFT_WORDS = {
    Drift.REVOKED: "token revoked",
    Drift.REJECTED: "refresh token rejected",
    Drift.DEAUTHENTICATED: "not authenticated on the platform",
    Drift.GONE: "gone from the platform",
}


class InstallationRecord(DeclaredInstallation):
    """An installation's declaration as last applied, and what happened: what the provider granted, when and to
    whom, a pending authorization, and what a refresh found since."""

    kind: Literal["installation"] = "installation"
    granted_scopes: tuple[str, ...] = ()
    status: Literal["authorized", "pending_authorization"] = "authorized"
    authorized_at: AwareDatetime | None = None
    authorized_by: str | None = None
    expires_at: AwareDatetime | None = None
    verified_at: AwareDatetime | None = None
    pending: PendingRecord | None = None
    drift: Drift | None = None  # None: nothing found (or not checked)
    checked_at: AwareDatetime | None = None  # when `drift` was last established (each check: the service store)
    account_connector: AccountConnectorRecord | None = None  # on a platform: where it is installed
    # The partner it moved from in a migration campaign (that partner's `migrate_to` names this one's partner); kept
    # through later re-authorizations on the same partner. None: not moved by a campaign.
    migrated_from: str | None = None

    @property
    def platform_holds_tokens(self) -> bool:
        """Whether the platform, not our state, holds this installation's tokens (no grant is recorded here)."""
        return self.placement is not None and self.placement.platform_holds_tokens


Record = Annotated[PartnerRecord | AccountRecord | InstallationRecord, Field(discriminator="kind")]
AnyRecord = PartnerRecord | AccountRecord | InstallationRecord


class StateDocument(BaseModel):
    """The whole document. `serial` moves on every write that changes it; `lineage` never changes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format_version: Literal[6] = FORMAT_VERSION
    lineage: str = Field(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
    serial: StrictInt = Field(ge=0)
    environment: str
    resources: dict[str, Record] = Field(default_factory=dict)

    @classmethod
    def new(cls, environment: str) -> StateDocument:
        """An empty document with a fresh lineage (serial 0: nothing written yet)."""
        return cls(lineage=str(uuid.uuid4()), serial=0, environment=environment)

    def with_resources(self, resources: dict[str, AnyRecord]) -> StateDocument:
        return self.model_copy(update={"resources": dict(sorted(resources.items()))})

    def with_record(self, address: str, record: AnyRecord | None) -> StateDocument:
        """A copy with one address set (or removed, for None). Order does not matter: encoding sorts."""
        resources = dict(self.resources)
        if record is None:
            resources.pop(address, None)
        else:
            resources[address] = record
        return self.model_copy(update={"resources": resources})


def check_import(where: str, current: StateDocument, doc: StateDocument) -> None:
    """Refuse to store a copied `doc` (`state push`/`pull`) over `current` unless it is the same history at the
    same or a later point: the same lineage, a serial not behind, and at the same serial the same contents (other
    contents at one serial mean both sides moved on from one document: neither can replace the other)."""
    if current.lineage != doc.lineage or current.serial > doc.serial:
        raise StaleStateError(
            f"{where}: holds lineage {current.lineage} serial {current.serial}; refusing to replace it with "
            f"lineage {doc.lineage} serial {doc.serial}",
            hint="nothing was changed",
        )
    if current.serial == doc.serial and current.resources != doc.resources:
        raise StaleStateError(
            f"{where}: holds serial {current.serial} with other contents than the copy (both changed since they "
            "were one); refusing to replace it",
            hint="nothing was changed; pull a fresh copy and make the change there",
        )


_V1_DRIFT = {"token revoked": Drift.REVOKED.value, "refresh token rejected": Drift.REJECTED.value}


def _upgrade_v1(data: dict[str, Any]) -> dict[str, Any]:
    """Format 1 -> 2: an installation's declared scopes are `scopes` (as declared), no longer `requested_scopes`;
    `drift` holds the finding (`revoked`, `rejected`), no longer its display words. Anything else is left for
    validation to judge."""
    resources = data.get("resources")
    if isinstance(resources, dict):
        data = {**data, "resources": {address: upgrade_record(r) for address, r in resources.items()}}
    return {**data, "format_version": 2}


def upgrade_record(record: Any) -> Any:
    """One raw record of any format as the current one. Idempotent, so that stores keeping records one by one (the
    local journal, PostgreSQL rows: a step rewrites only its own) may hold records of both formats."""
    if not isinstance(record, dict) or record.get("kind") != "installation":
        return record
    record = dict(record)
    if "requested_scopes" in record and "scopes" not in record:
        record["scopes"] = record.pop("requested_scopes")
    drift = record.get("drift")
    if isinstance(drift, str):
        record["drift"] = _V1_DRIFT.get(drift, drift)
    return record


def _upgrade_v2(data: dict[str, Any]) -> dict[str, Any]:
    """Format 2 -> 3: accounts and installations on a platform may be recorded; nothing recorded before changes
    (the version moves so that an older reconciler refuses such a document as newer, not as damaged)."""
    return {**data, "format_version": 3}


def _upgrade_v3(data: dict[str, Any]) -> dict[str, Any]:
    """Format 3 -> 4: a pending authorization may record the service's link; nothing recorded before changes."""
    return {**data, "format_version": 4}


def _upgrade_v4(data: dict[str, Any]) -> dict[str, Any]:
    """Format 4 -> 5: a partner may record the expiry of its client secret and its app type; nothing recorded
    before changes."""
    return {**data, "format_version": 5}


def _upgrade_v5(data: dict[str, Any]) -> dict[str, Any]:
    """Format 5 -> 6: an installation may record the partner a migration campaign moved it from. One recorded
    (format 5) on the partner a recorded partner's `migrate_to` names was moved by that campaign, as format 5 told."""
    resources = data.get("resources")
    if isinstance(resources, dict):
        targets = {
            r["migrate_to"]: r.get("name")
            for r in resources.values()
            if isinstance(r, dict) and r.get("kind") == "partner" and isinstance(r.get("migrate_to"), str)
        }  # anything malformed is left for validation to report
        resources = {
            address: {**r, "migrated_from": targets[r["partner"]]}
            if isinstance(r, dict) and r.get("kind") == "installation" and isinstance(r.get("partner"), str)
            and r["partner"] in targets and "migrated_from" not in r else r
            for address, r in resources.items()
        }
        data = {**data, "resources": resources}
    return {**data, "format_version": 6}


# One function per format version, upgrading a raw document from version N to N+1.
_UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {
    1: _upgrade_v1, 2: _upgrade_v2, 3: _upgrade_v3, 4: _upgrade_v4, 5: _upgrade_v5,
}


def encode_state(doc: StateDocument) -> bytes:
    """Stable JSON: sorted keys, two-space indent, trailing newline."""
    return (json.dumps(doc.model_dump(mode="json", exclude_none=True), indent=2, sort_keys=True) + "\n").encode()


def decode_state(raw: bytes, where: str) -> StateDocument:
    """Parse a state document, upgrading older formats; every problem is a `StateError` naming `where`."""
    return decode_stored(raw, where)[0]


class _Stored(BaseModel):
    """What is read of a stored document before the rest: its format."""

    format_version: StrictInt


def _current(raw: bytes) -> StateDocument | None:
    """A document of the current format, validated straight from its JSON (no intermediate objects: half the time
    at 10,000 installations); None for anything else — an older format, damage — which `decode_stored` then
    decodes step by step, upgrading it or saying where it is damaged."""
    try:
        if _Stored.model_validate_json(raw).format_version != FORMAT_VERSION:
            return None
        return StateDocument.model_validate_json(raw)
    except (ValueError, RecursionError):  # pydantic's ValidationError is a ValueError
        return None


def decode_stored(raw: bytes, where: str) -> tuple[StateDocument, int]:
    """`decode_state`, and the format version the document was stored in (older: the next write upgrades it)."""
    restore = f"the file is left as it is; restore {where}.backup (if there is one) or move the file away"
    doc = _current(raw)
    if doc is None:
        doc, stored = _decode_stepwise(raw, where, restore)
    else:
        stored = FORMAT_VERSION
    for address, record in doc.resources.items():
        check_resource(address, record, where, restore)
    return doc, stored


def _decode_stepwise(raw: bytes, where: str, restore: str) -> tuple[StateDocument, int]:
    try:
        data = json.loads(raw)
    except RecursionError:
        raise StateError(f"{where}: state file is nested too deeply to be a reconciler state", hint=restore) from None
    except UnicodeDecodeError:
        raise StateError(f"{where}: state file is not valid UTF-8", hint=restore) from None
    except json.JSONDecodeError as exc:
        raise StateError(
            f"{where}:{exc.lineno}:{exc.colno}: state file is not valid JSON ({exc.msg})", hint=restore
        ) from None
    if not isinstance(data, dict) or type(data.get("format_version")) is not int:
        raise StateError(f"{where}: not a reconciler state file (no format_version)", hint=restore)
    version = stored = data["format_version"]
    if version > FORMAT_VERSION:
        raise StateError(
            f"{where}: state format_version {version} is newer than this reconciler reads ({FORMAT_VERSION})",
            hint="upgrade reconciler; the file was not changed",
        )
    while version < FORMAT_VERSION:
        upgrade = _UPGRADES.get(version)
        if upgrade is None:
            raise StateError(f"{where}: state format_version {version} is not supported", hint=restore)
        data = upgrade(data)
        version = data["format_version"]
    try:
        return StateDocument.model_validate(data), stored
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        loc = ".".join(str(p) for p in error["loc"])
        raise StateError(f"{where}: invalid state at {loc}: {error['msg']}", hint=restore) from None


def check_resource(address: str, record: AnyRecord, where: str, hint: str) -> None:
    """A recorded resource is damaged unless its address is one the configuration's names can form and is the
    record's own (a forged address could write lines into listings and plans)."""
    if not is_address(address):
        raise StateError(f"{where}: invalid address {one_line(address)[:200]} in state (damaged)", hint=hint)
    if address != record.address:
        raise StateError(f"{where}: resource {address} records {one_line(record.address)[:200]}", hint=hint)
