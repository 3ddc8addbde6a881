"""Fakes for unit tests of the executor and the custodian: an in-memory state backend with its credential store,
an in-memory OAuth provider and REST API served to the real flows through `httpx.MockTransport`, a consent step
that signs in at once, and hooks that record what they are told.

Owns: test doubles only, each keeping the contract of the real thing (a backend's serial and lock, a store's
compare-and-swap, the provider's token and check endpoints). Must not: touch files or the network.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from urllib.parse import parse_qs

import httpx

from reconciler.auth.flows import AuthorizationRequest
from reconciler.errors import StaleStateError, StateError, StateLockedError
from reconciler.state.backend import LockInfo
from reconciler.state.model import StateDocument
from reconciler.state.service_store import (
    Attempt,
    AuditEntry,
    CheckResult,
    check_attempt_key,
    latest_checks,
    utc,
)
from reconciler.tokens.model import SealedRecord
from reconciler.tokens.store import WholeRecordWrites

__all__ = ["FakeConsent", "FakeProvider", "MemoryBackend", "MemoryServiceStore", "MemoryStore", "RecordingHooks"]


class MemoryStore(WholeRecordWrites):
    """A credential store in a dict, with the store's compare-and-swap; `failures` fails that many writes."""

    def __init__(self) -> None:
        self.records: dict[str, SealedRecord] = {}
        self.failures: list[Exception] = []
        self.writes = 0

    def get(self, address: str) -> SealedRecord | None:
        return self.records.get(address)

    def put_record(self, address: str, record: SealedRecord, *, expected_generation: int | None) -> None:
        if self.failures:
            raise self.failures.pop(0)
        have = self.records[address].generation if address in self.records else None
        if have != expected_generation:
            raise StaleStateError(f"credentials of {address} changed meanwhile (generation {have})")
        self.writes += 1
        self.records[address] = record

    def delete(self, address: str) -> None:
        self.records.pop(address, None)

    def addresses(self) -> list[str]:
        return sorted(self.records)


class MemoryServiceStore:
    """The service store in memory: attempts taken exactly once (under a lock, for threads), the audit log."""

    def __init__(self) -> None:
        self.attempts: dict[str, Attempt] = {}
        self.entries: list[AuditEntry] = []
        self.latest: dict[str, CheckResult] = {}
        self._guard = threading.Lock()

    def put_attempt(self, attempt: Attempt) -> None:
        created, expires = utc(attempt.created_at), utc(attempt.expires_at)
        with self._guard:
            self.attempts = {k: a for k, a in self.attempts.items() if not a.expired(created)}
            self.attempts[check_attempt_key(attempt.key)] = replace(attempt, created_at=created, expires_at=expires)

    def take_attempt(self, key: str, now: dt.datetime) -> Attempt | None:
        with self._guard:
            attempt = self.attempts.pop(key, None)
        return None if attempt is None or attempt.expired(utc(now)) else attempt

    def append_audit(self, entry: AuditEntry) -> None:
        with self._guard:
            self.entries.append(entry)

    def audit(self, since: dt.datetime | None = None) -> list[AuditEntry]:
        with self._guard:
            return sorted((e for e in self.entries if since is None or e.at >= since), key=lambda e: e.at)

    def record_checks(self, results: Sequence[CheckResult]) -> None:
        with self._guard:
            self.latest = latest_checks([*self.latest.values(), *(replace(r, at=utc(r.at)) for r in results)])

    def checks(self) -> dict[str, CheckResult]:
        with self._guard:
            return dict(self.latest)


class MemoryBackend:
    """A `StateBackend` in memory: the serial compare-and-swap, one lock, and a `MemoryStore` for credentials.
    `writes` lists every document written, in order."""

    def __init__(self, environment: str = "default") -> None:
        self.environment = environment
        self.doc: StateDocument | None = None
        self.store = MemoryStore()
        self.service = MemoryServiceStore()
        self.writes: list[StateDocument] = []
        self.held: LockInfo | None = None

    def describe(self) -> str:
        return f"memory:{self.environment}"

    def read(self) -> StateDocument | None:
        return self.doc

    def read_digests(self) -> list[tuple[str, str | None]] | None:
        return None

    def write(self, doc: StateDocument, *, expected_serial: int | None, changed: set[str] | None = None) -> StateDocument:
        if self.held is None:
            raise StateError("state write attempted without holding the lock (a bug)")
        current = self.doc
        if (current.serial if current is not None else None) != expected_serial:
            raise StaleStateError(f"serial moved from {expected_serial} (another writer)")
        if current is not None and current.lineage != doc.lineage:
            raise StaleStateError("a different state")
        if current is not None and current.resources == doc.resources:
            return current
        self.doc = doc.model_copy(update={"serial": (current.serial if current else doc.serial) + 1})
        self.writes.append(self.doc)
        return self.doc

    @contextmanager
    def lock(self, operation: str, *, timeout: float = 0.0) -> Iterator[LockInfo]:
        if self.held is not None:
            raise StateLockedError(f"state is locked: {self.held.describe()}")
        self.held = LockInfo.for_current_process(operation)
        try:
            yield self.held
        finally:
            self.held = None

    def import_document(self, doc: StateDocument) -> None:
        self.doc = doc

    def force_unlock(self, lock_id: str, *, confirm_live: Callable[[str], bool] | None = None) -> str:
        holder, self.held = self.held, None
        return holder.describe() if holder is not None else "nobody"

    def credential_store(self) -> MemoryStore:
        return self.store

    def service_store(self) -> MemoryServiceStore:
        return self.service


class FakeProvider:
    """Azure DevOps OAuth and its REST checks in memory, for the real flows (`client()` is their transport).

    Codes come from `FakeConsent`; the token endpoint redeems them (or a refresh token) for `at-N`/`rt-N`; a
    check passes for a live access token of a known organization. Switches: `grant_only` narrows what consent
    grants, `missing_orgs` answers their checks 404, `token_statuses` answers the next token requests with those
    HTTP statuses. `issued` lists every code and token handed out, `revoked` every token revoked."""

    def __init__(self, organizations: tuple[str, ...] = ("acme", "globex")) -> None:
        self.organizations = set(organizations)
        self.codes: dict[str, tuple[str, ...]] = {}
        self.access: dict[str, tuple[str, ...]] = {}  # live access token -> its grant's scopes
        self.refresh: dict[str, tuple[str, ...]] = {}  # live refresh token -> its grant's scopes
        self.issued: list[str] = []
        self.revoked: list[str] = []
        self.exchanges = 0
        self.checks: list[str] = []  # the paths of every check made
        self.grant_only: tuple[str, ...] | None = None
        self.missing_orgs: set[str] = set()
        self.token_statuses: list[int] = []
        self._serial = itertools.count(1)

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self.handle))

    def new_code(self, scopes: tuple[str, ...]) -> str:
        code = f"code-{next(self._serial)}"
        self.codes[code] = tuple(s for s in scopes if self.grant_only is None or s in self.grant_only)
        self.issued.append(code)
        return code

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
            if request.url.path.endswith("/revoke"):
                self.revoked.append(form["token"])
                self.access = {a: s for a, s in self.access.items() if a != form["token"]}
                self.refresh.pop(form["token"], None)
                return httpx.Response(200, json={})
            return self._token(form)
        return self._check(request)

    def _token(self, form: dict[str, str]) -> httpx.Response:
        if self.token_statuses:
            return httpx.Response(self.token_statuses.pop(0), json={"error": "server_error"})
        if form["grant_type"] == "refresh_token":
            scopes = self.refresh.pop(form["assertion"], None)
        else:
            scopes = self.codes.pop(form["assertion"], None)
        if scopes is None:
            return httpx.Response(400, json={"error": "invalid_grant", "error_description": "unknown grant"})
        self.exchanges += 1
        serial = next(self._serial)
        access, refresh = f"at-{serial}", f"rt-{serial}"
        self.access[access], self.refresh[refresh] = scopes, scopes
        self.issued += [access, refresh]
        scope = " ".join([*scopes, "vso.authorization_grant"])
        body = {"access_token": access, "refresh_token": refresh, "token_type": "jwt-bearer", "expires_in": "3599"}
        return httpx.Response(200, json={**body, "scope": scope})

    def _check(self, request: httpx.Request) -> httpx.Response:
        self.checks.append(request.url.path)
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        organization = request.url.path.strip("/").split("/")[0]
        if token not in self.access:
            return httpx.Response(401, json={"message": "TF400813: not authorized"})
        if organization not in self.organizations or organization in self.missing_orgs:
            return httpx.Response(404, json={"message": f"TF200016: {organization} does not exist"})
        body = {"authenticatedUser": {"providerDisplayName": "fake.user@example.com"}, "id": organization}
        return httpx.Response(200, content=json.dumps(body), headers={"content-type": "application/json"})


class FakeConsent:
    """A consent step where the user approves at once: a code from `provider` for the requested scopes.
    `labels` lists the installations it signed in, in order."""

    def __init__(self, provider: FakeProvider) -> None:
        self.provider = provider
        self.labels: list[str] = []

    def obtain(self, request: AuthorizationRequest, label: str) -> str:
        self.labels.append(label)
        return self.provider.new_code(request.scopes)


class RecordingHooks:
    """ApplyHooks that keep every step, link and warning as (address, text)."""

    def __init__(self) -> None:
        self.steps: list[tuple[str, str]] = []
        self.links: list[tuple[str, str]] = []
        self.warnings: list[tuple[str, str]] = []

    def step(self, address: str, message: str) -> None:
        self.steps.append((address, message))

    def link(self, address: str, url: str) -> None:
        self.links.append((address, url))

    def warning(self, address: str, message: str) -> None:
        self.warnings.append((address, message))

    def messages(self) -> str:
        return "\n".join(text for _, text in (*self.steps, *self.links, *self.warnings))
