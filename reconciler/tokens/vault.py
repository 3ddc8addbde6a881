"""The vault: seals and opens one state's credentials with the state key, bound to lineage, environment, address,
client id and purpose, over the store that keeps them (written by compare-and-swap on each record's generation).

Owns: sealing and opening, re-sealing under a new key (`reseal`, for a key rotation), which blob holds the
current tokens (`current_tokens`: the promoted one, or new ones staged just before a crash), and refusing to
rotate a refresh token that could not be stored. Must not: decide when tokens are written (the custodian does),
or put token material anywhere but inside a sealed blob.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping

from reconciler.crypto import StateKey, StateKeyError, associated_data, open_blob, seal
from reconciler.errors import ReconcilerError, StateError
from reconciler.tokens.model import Blob, PendingAuthorization, SealedRecord, TokenSet, TokenTimes, plaintext
from reconciler.tokens.store import CredentialStore

__all__ = ["ROOM_FOR_ROTATION", "Vault"]

ROOM_FOR_ROTATION = 64 * 1024  # free bytes a local store needs before a refresh token is rotated


class Vault:
    """Seals and opens credentials of one state (lineage + environment). Each blob is bound to its address and
    to the client id it was issued to, so tokens and a pending re-authorization for a new client coexist."""

    def __init__(self, store: CredentialStore, key: StateKey, *, lineage: str, environment: str) -> None:
        self.store, self.key, self.lineage, self.environment = store, key, lineage, environment

    def _aad(self, address: str, client_id: str, part: str) -> bytes:
        return associated_data(self.lineage, self.environment, address, client_id) + f"\n{part}".encode()

    def record(self, address: str) -> SealedRecord | None:
        return self.store.get(address)

    def seal_tokens(self, address: str, client_id: str, tokens: TokenSet) -> Blob:
        return seal(self.key, plaintext(tokens), self._aad(address, client_id, "tokens"))

    def seal_pending(self, address: str, client_id: str, pending: PendingAuthorization) -> Blob:
        return seal(self.key, plaintext(pending), self._aad(address, client_id, "pending"))

    def seal_attempt(self, address: str, attempt: PendingAuthorization) -> Blob:
        """One opening of a sign-in link (the service's): its request, until its callback."""
        return seal(self.key, plaintext(attempt), self._aad(address, "", "attempt"))

    def open_attempt(self, address: str, blob: Blob) -> PendingAuthorization:
        opened = open_blob(self.key, blob, self._aad(address, "", "attempt"), f"sign-in attempt of {address}")
        return PendingAuthorization.model_validate_json(opened)

    def open_tokens(self, address: str, client_id: str, blob: Blob) -> TokenSet:
        opened = open_blob(self.key, blob, self._aad(address, client_id, "tokens"), f"tokens of {address}")
        return TokenSet.model_validate_json(opened)

    def open_pending(self, address: str, client_id: str, blob: Blob) -> PendingAuthorization:
        where = f"pending authorization of {address}"
        opened = open_blob(self.key, blob, self._aad(address, client_id, "pending"), where)
        return PendingAuthorization.model_validate_json(opened)

    def reseal(
        self, address: str, part: str, blob: Blob, *, client_ids: Collection[str], keys: Mapping[str, StateKey]
    ) -> Blob | None:
        """`blob` (one of `BLOB_PARTS`) under this vault's key: sealed anew from its plaintext, bound to the same
        address, client id and purpose, or as it is when already under this key. It is opened with the key of
        `keys` its key id names, for whichever of `client_ids` it was sealed for. None when none of them opens it:
        a blob no command can use (left by an interrupted step whose document write never happened). The
        plaintext exists only in memory."""
        key = keys[str(blob.get("kid"))]
        purpose = "pending" if part == "pending" else "tokens"
        for client_id in client_ids:
            aad = self._aad(address, client_id, purpose)
            try:
                opened = open_blob(key, blob, aad, f"{part} of {address}")
            except StateKeyError:
                continue
            return blob if key.key_id == self.key.key_id else seal(self.key, opened, aad)
        return None

    def current_tokens(self, address: str, client_id: str, record: SealedRecord) -> TokenSet:
        """The tokens the document's client id opens: the current blob, or new ones staged just before a crash."""
        try:
            if record.tokens is None:
                raise StateKeyError(f"tokens of {address}: none recorded")
            return self.open_tokens(address, client_id, record.tokens)
        except StateKeyError:
            if record.staged is None:
                raise
            return self.open_tokens(address, client_id, record.staged)

    def current_times_of(self, clients: Mapping[str, str]) -> dict[str, TokenTimes | ReconcilerError | None]:
        """What the tokens recorded for each address of `clients` (address -> the client id they were issued to)
        say about their lifetime, as `current_tokens` picks them, and nothing secret: its `TokenTimes`, None when
        none are recorded, or the error that reading or opening its record raised. Every record is read before any
        is opened, so that reading (system calls) and opening (parsing, decryption) each run in one stretch: at
        10,000 records, a third less time than alternating them."""
        records: dict[str, SealedRecord | ReconcilerError | None] = {}
        for address in clients:
            try:
                records[address] = self.store.get(address)
            except ReconcilerError as exc:
                records[address] = exc
        return {address: self._times(address, clients[address], record) for address, record in records.items()}

    def _times(
        self, address: str, client_id: str, record: SealedRecord | ReconcilerError | None
    ) -> TokenTimes | ReconcilerError | None:
        if record is None or isinstance(record, ReconcilerError):
            return record
        if record.tokens is None and record.staged is None:
            return None
        try:
            tokens = self.current_tokens(address, client_id, record)
        except ReconcilerError as exc:
            return exc
        return TokenTimes(_utc(tokens.expires_at), tokens.refresh_token is not None, _utc(tokens.refresh_issued_at))

    def forget(self, address: str) -> None:
        self.store.delete(address)

    def ensure_room_for_rotation(self, address: str) -> None:
        """Refuse to rotate a refresh token that could not be stored: the provider invalidates the old one, so on a
        full disk the installation would be lost, where not refreshing loses nothing."""
        free = getattr(self.store, "free_bytes", lambda: None)()
        if free is not None and free < ROOM_FOR_ROTATION:
            raise StateError(
                f"not refreshed: {free} bytes free beside the state, too little to store {address}'s rotated "
                "refresh token (its current one still works)",
                hint="free some disk space and run again",
            )


def _utc(moment: dt.datetime | None) -> dt.datetime | None:
    """The same moment in `datetime.UTC` (what reports show; cheaper to format than a parsed offset)."""
    return moment.astimezone(dt.UTC) if moment is not None and moment.tzinfo is not None else moment
