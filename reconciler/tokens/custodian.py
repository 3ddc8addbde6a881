"""The custodian: the one place a token is written, and the one policy for keeping tokens fresh.

Owns: recording new tokens stage-then-promote (a crash anywhere leaves tokens the document's client id opens),
sealing a pending authorization beside the current tokens and withdrawing it, rotating tokens (refresh, then store
the rotated ones at once, before anything else happens), "verify fresh" (a check that meets a sign-in page or a
refusal refreshes once and checks again), moving an address's tokens to another address, re-sealing them under a
new key, and forgetting them. Must not: know the state document, the configuration or the plan — the caller
writes the document through the callback it hands in, between the two phases — print, or send a token anywhere
but the refresh and the check it is given.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

from reconciler.auth.errors import ProviderError
from reconciler.auth.retry import RetryPolicy, retrying
from reconciler.crypto import StateKey
from reconciler.errors import ReconcilerError, StaleStateError, StateError
from reconciler.tokens.model import BLOB_PARTS, Blob, PendingAuthorization, SealedRecord, TokenSet
from reconciler.tokens.vault import Vault

__all__ = ["REFRESH_TRIGGERS", "Fresh", "Held", "RefreshRejected", "Resealed", "Refresh", "TokenCustodian", "refresh_due"]

# A check answering with a sign-in page (the provider expired the access token before its recorded expiry) or
# refusing the token: one refresh, then the same check again.
REFRESH_TRIGGERS = frozenset({203, 401})
T = TypeVar("T")
V = TypeVar("V")


Refresh = Callable[[TokenSet], TokenSet]  # new tokens from the refresh token (the provider may rotate it)


@dataclass(frozen=True)
class Held:
    """The tokens recorded for an address, with the sealed record they came from (its generation: the
    compare-and-swap of the next write)."""

    tokens: TokenSet
    record: SealedRecord


@dataclass(frozen=True)
class Fresh(Generic[V]):
    """Tokens that passed the check (`checked`: what it said), and whether they were rotated on the way."""

    tokens: TokenSet
    checked: V
    refreshed: bool


@dataclass(frozen=True)
class Resealed:
    """What re-sealing one record did, and the blobs (`BLOB_PARTS`) dropped because nothing opens them."""

    outcome: Literal["already", "resealed", "deleted"]
    dropped: list[str]


class RefreshRejected(ReconcilerError):
    """The provider refused the refresh token (the grant is gone): only a new sign-in helps. `after` is the
    failed check that asked for the refresh (None: the refresh was due)."""

    def __init__(self, cause: ProviderError, after: ProviderError | None = None) -> None:
        super().__init__(cause.message)
        self.cause, self.after = cause, after


def refresh_due(tokens: TokenSet, now: dt.datetime, window: dt.timedelta) -> bool:
    """Whether `tokens` expire within `window` of `now` (tokens of unknown expiry always are)."""
    return tokens.expires_at is None or tokens.expires_at <= now + window


class TokenCustodian:
    """Every write of one state's tokens, through its vault. `policy` and `sleep` pace retried provider calls and
    retried writes of rotated tokens (back-off, never synchronisation)."""

    def __init__(
        self, vault: Vault, *, policy: RetryPolicy = RetryPolicy(), sleep: Callable[[float], None] = time.sleep
    ) -> None:
        self.vault, self.policy, self.sleep = vault, policy, sleep
        self.store = vault.store  # written by compare-and-swap on each record's generation

    def retrying(self, call: Callable[[], T], *, final: Callable[[ProviderError], bool] = lambda exc: False) -> T:
        return retrying(call, self.policy, self.sleep, final=final)

    # -- reading -----------------------------------------------------------------------------------------------

    def held(self, address: str, client_id: str) -> Held | None:
        """The tokens recorded for `address` as `client_id` opens them; None when none are recorded. A record that
        does not open raises (`StateKeyError`)."""
        record = self.vault.record(address)
        if record is None or (record.tokens is None and record.staged is None):
            return None
        return Held(self.vault.current_tokens(address, client_id, record), record)

    def pending(self, address: str, client_id: str) -> PendingAuthorization | None:
        """The pending authorization sealed for `address` (None: none is)."""
        record = self.vault.record(address)
        if record is None or record.pending is None:
            return None
        return self.vault.open_pending(address, client_id, record.pending)

    # -- writing -----------------------------------------------------------------------------------------------

    def record_new(self, address: str, client_id: str, tokens: TokenSet, write_document: Callable[[], object]) -> None:
        """Record the tokens of a new authorization in two phases: stage them beside the current ones, let the
        caller write the document that names their client, then promote them. A crash anywhere leaves tokens the
        document's client id opens (`Vault.current_tokens` falls back to the staged ones)."""
        record = self.vault.record(address)
        blob = self.vault.seal_tokens(address, client_id, tokens)
        staged = self.store.put(
            address,
            record.tokens if record else None,
            record.pending if record else None,
            staged=blob,
            expected_generation=_generation(record),
        )
        write_document()
        self.store.put(address, blob, None, expected_generation=staged)

    def stage_pending(self, address: str, client_id: str, pending: PendingAuthorization) -> None:
        """Seal a pending authorization beside the current tokens (replacing any earlier one)."""
        record = self.vault.record(address)
        blob = self.vault.seal_pending(address, client_id, pending)
        self.store.put(address, record.tokens if record else None, blob, expected_generation=_generation(record))

    def withdraw_pending(self, address: str) -> None:
        """Drop the pending authorization sealed for `address`, keeping its tokens (after the document said so)."""
        record = self.vault.record(address)
        if record is not None and record.pending is not None:
            self.store.put(address, record.tokens, None, staged=record.staged, expected_generation=record.generation)

    def move(
        self, old: str, new: str, client_id: str, pending_client_id: str | None, write_document: Callable[[], object]
    ) -> None:
        """Re-seal `old`'s tokens (and pending authorization, sealed for `pending_client_id`) for `new` — a blob
        opens only at the address it was sealed for — then let the caller write the document, then forget `old`.
        Credentials an interrupted move left at `new` are replaced (or forgotten, when `old` has none)."""
        record = self.vault.record(old)
        leftover = self.vault.record(new)
        if leftover is not None and record is None:
            self.vault.forget(new)
        if record is not None:
            held = self.held(old, client_id)
            pending = self.pending(old, pending_client_id) if pending_client_id else None
            self.store.put(
                new,
                self.vault.seal_tokens(new, client_id, held.tokens) if held else None,
                self.vault.seal_pending(new, pending_client_id, pending) if pending and pending_client_id else None,
                expected_generation=_generation(leftover),
            )
        write_document()
        if record is not None:
            self.vault.forget(old)

    def reseal(self, address: str, client_ids: Collection[str], keys: Mapping[str, StateKey]) -> Resealed | None:
        """Re-seal every blob of `address` under the vault's key in one compare-and-swap write (see
        `Vault.reseal`). A blob none of `client_ids` opens with `keys` is dropped — no command could use it — and
        a record left with none goes. None: no record."""
        record = self.vault.record(address)
        if record is None:
            return None
        blobs: dict[str, Blob | None] = {}
        dropped: list[str] = []
        for part in BLOB_PARTS:
            blob = getattr(record, part)
            blobs[part] = self.vault.reseal(address, part, blob, client_ids=client_ids, keys=keys) if blob else None
            if blob is not None and blobs[part] is None:
                dropped.append(part)
        if all(blobs[part] is getattr(record, part) for part in BLOB_PARTS):
            return Resealed("already", dropped)
        if all(blob is None for blob in blobs.values()):
            self.store.delete(address)  # only blobs nothing opens: the record goes with them
            return Resealed("deleted", dropped)
        self.store.put(
            address,
            blobs["tokens"],
            blobs["pending"],
            staged=blobs["staged"],
            expected_generation=record.generation,
        )
        return Resealed("resealed", dropped)

    def forget(self, address: str) -> None:
        """Drop every credential of `address` (after the document no longer names it)."""
        self.vault.forget(address)

    # -- keeping tokens fresh ----------------------------------------------------------------------------------

    def rotate(
        self, address: str, client_id: str, held: Held, refresh: Refresh, *, after: ProviderError | None = None
    ) -> Held:
        """Refresh `held` (transient failures retried) and store the rotated tokens before anything else happens:
        the provider may already have invalidated the previous refresh token. A refused refresh token raises
        `RefreshRejected` (with `after`, the check that asked for the refresh)."""
        self.vault.ensure_room_for_rotation(address)
        try:
            fresh = self.retrying(lambda: refresh(held.tokens))
        except ProviderError as exc:
            if exc.category != "grant":
                raise
            raise RefreshRejected(exc, after) from None
        blob = self.vault.seal_tokens(address, client_id, fresh)
        generation = self._store_rotated(address, blob, held.record)
        return Held(fresh, SealedRecord(generation=generation, tokens=blob, pending=held.record.pending))

    def _store_rotated(self, address: str, blob: Blob, record: SealedRecord) -> int:
        """Write rotated tokens over `record`. A failed write is retried with the policy's back-off before it is
        given up (and then the installation has to sign in again). A stale generation is not retried: another
        writer moved the record, a retry against the same generation cannot succeed, and overwriting it could
        lose the tokens it holds."""
        for attempt in range(self.policy.attempts):
            try:
                return self.store.put(address, blob, record.pending, expected_generation=record.generation)
            except StaleStateError:
                raise
            except StateError as exc:
                if attempt == self.policy.attempts - 1:
                    raise StateError(
                        f"the provider rotated the refresh token and it could not be stored ({exc.message})",
                        hint=f"free the disk, then re-authorize: reconciler apply --replace {address}",
                    ) from None
                self.sleep(self.policy.backoff * 2**attempt)
        raise AssertionError("unreachable")

    def verify_fresh(
        self,
        address: str,
        client_id: str,
        held: Held,
        refresh: Refresh,
        check: Callable[[TokenSet], V],
        *,
        due: bool,
    ) -> Fresh[V]:
        """Check tokens that work now: rotated first when `due`; a check answering with one of `REFRESH_TRIGGERS`
        rotates them once (never twice in one call, never without a refresh token) and checks again. Transient
        failures of the check are retried; a trigger is not retried while a refresh can answer it."""
        refreshed = False
        if due:
            held, refreshed = self.rotate(address, client_id, held, refresh), True
        tokens = held.tokens
        may_refresh = not refreshed and tokens.refresh_token is not None

        def triggered(exc: ProviderError) -> bool:
            return may_refresh and exc.status in REFRESH_TRIGGERS

        try:
            return Fresh(tokens, self.retrying(lambda: check(tokens), final=triggered), refreshed)
        except ProviderError as exc:
            if not triggered(exc):
                raise
            trigger = exc
        rotated = self.rotate(address, client_id, held, refresh, after=trigger)
        return Fresh(rotated.tokens, self.retrying(lambda: check(rotated.tokens)), True)


def _generation(record: SealedRecord | None) -> int | None:
    return record.generation if record is not None else None
