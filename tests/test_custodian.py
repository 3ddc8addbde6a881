"""The token custodian on fakes: an in-memory credential store, a fake refresh and a fake check. Each test names
one rule of the custodian: stage-then-promote, one rotate-and-store policy, one "verify fresh" trigger set,
move and forget."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from pydantic import SecretStr

from reconciler.auth.errors import ProviderError
from reconciler.auth.retry import RetryPolicy
from reconciler.crypto import StateKey
from reconciler.errors import StaleStateError, StateError
from reconciler.tokens.custodian import RefreshRejected, TokenCustodian, refresh_due
from reconciler.tokens.model import PendingAuthorization, SealedRecord, TokenSet
from reconciler.tokens.vault import Vault
from tests.fakes import MemoryStore

ADDRESS = "installation.acme.ado"
CLIENT = "client-1"
NOW = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)


def _tokens(name: str, *, expires_in: int = 3600, refresh: bool = True) -> TokenSet:
    return TokenSet(
        access_token=SecretStr(f"at-{name}"),
        refresh_token=SecretStr(f"rt-{name}") if refresh else None,
        expires_at=NOW + dt.timedelta(seconds=expires_in),
    )


class FakeProvider:
    """Issues `at-N`/`rt-N` on each refresh; `refused` refreshes fail with a rejected grant."""

    def __init__(self, *, refused: bool = False) -> None:
        self.refreshes = 0
        self.refused = refused

    def refresh(self, tokens: TokenSet) -> TokenSet:
        self.refreshes += 1
        if self.refused:
            raise ProviderError("invalid_grant", category="grant")
        return _tokens(str(self.refreshes))


def _checker(*answers: int) -> tuple[Callable[[TokenSet], str], list[str]]:
    """A check answering with each status in turn (200: passes), recording the access tokens it saw."""
    seen: list[str] = []
    queue = list(answers)

    def check(tokens: TokenSet) -> str:
        seen.append(tokens.access_token.get_secret_value())
        status = queue.pop(0) if queue else 200
        if status == 200:
            return "ok"
        category = "verify" if status in (401, 403) else "transient"
        raise ProviderError(f"HTTP {status}", category=category, status=status)  # type: ignore[arg-type]

    return check, seen


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def custodian(store: MemoryStore) -> TokenCustodian:
    vault = Vault(store, StateKey(b"k" * 32, "test"), lineage="lineage-1", environment="default")
    return TokenCustodian(vault, policy=RetryPolicy(attempts=4, backoff=0.5), sleep=lambda seconds: None)


def _recorded(custodian: TokenCustodian, tokens: TokenSet) -> None:
    custodian.record_new(ADDRESS, CLIENT, tokens, lambda: None)


def test_new_tokens_are_staged_before_the_document_and_promoted_after(custodian: TokenCustodian, store: MemoryStore) -> None:
    """record_new: the new tokens are staged beside the current ones when the document is written, then promoted."""
    _recorded(custodian, _tokens("old"))
    during: list[SealedRecord] = []
    custodian.record_new(ADDRESS, CLIENT, _tokens("new"), lambda: during.append(store.records[ADDRESS]))
    assert during[0].staged is not None and during[0].tokens is not None
    assert custodian.held(ADDRESS, CLIENT).tokens.access_token.get_secret_value() == "at-new"  # type: ignore[union-attr]
    assert store.records[ADDRESS].staged is None


def test_a_crash_in_the_document_write_leaves_the_staged_tokens_usable(custodian: TokenCustodian) -> None:
    """Tokens staged for a new client open with that client's id even when the promotion never happened."""
    def crash() -> None:
        raise StateError("disk full")

    with pytest.raises(StateError):
        custodian.record_new(ADDRESS, "client-2", _tokens("new"), crash)
    assert custodian.held(ADDRESS, "client-2").tokens.access_token.get_secret_value() == "at-new"  # type: ignore[union-attr]


def test_rotated_tokens_are_stored_at_once_keeping_the_pending_authorization(custodian: TokenCustodian) -> None:
    """rotate: the fresh tokens replace the old ones in the record, and a pending authorization stays."""
    _recorded(custodian, _tokens("old"))
    custodian.stage_pending(ADDRESS, CLIENT, _pending())
    held = custodian.held(ADDRESS, CLIENT)
    assert held is not None
    rotated = custodian.rotate(ADDRESS, CLIENT, held, FakeProvider().refresh)
    assert custodian.held(ADDRESS, CLIENT) == rotated
    assert custodian.pending(ADDRESS, CLIENT) == _pending()


def test_a_failed_write_of_rotated_tokens_is_retried(custodian: TokenCustodian, store: MemoryStore) -> None:
    """A write that fails (a full disk) is retried with the policy's back-off, then the rotation is kept."""
    _recorded(custodian, _tokens("old"))
    held = custodian.held(ADDRESS, CLIENT)
    store.failures = [StateError("disk full"), StateError("disk full")]
    rotated = custodian.rotate(ADDRESS, CLIENT, held, FakeProvider().refresh)  # type: ignore[arg-type]
    assert rotated.tokens.access_token.get_secret_value() == "at-1"
    assert custodian.held(ADDRESS, CLIENT) == rotated


def test_rotated_tokens_that_cannot_be_stored_say_so(custodian: TokenCustodian, store: MemoryStore) -> None:
    """After the policy's attempts, one clear error saying the rotated refresh token was not stored."""
    _recorded(custodian, _tokens("old"))
    held = custodian.held(ADDRESS, CLIENT)
    store.failures = [StateError("disk full")] * 4
    with pytest.raises(StateError, match=r"rotated the refresh token and it could not be stored \(disk full\)"):
        custodian.rotate(ADDRESS, CLIENT, held, FakeProvider().refresh)  # type: ignore[arg-type]


def test_a_stale_generation_is_not_retried(custodian: TokenCustodian, store: MemoryStore) -> None:
    """Another writer moved the record: raised at once (a retry against the same generation cannot succeed)."""
    _recorded(custodian, _tokens("old"))
    held = custodian.held(ADDRESS, CLIENT)
    _recorded(custodian, _tokens("other"))
    writes = store.writes
    with pytest.raises(StaleStateError):
        custodian.rotate(ADDRESS, CLIENT, held, FakeProvider().refresh)  # type: ignore[arg-type]
    assert store.writes == writes
    assert custodian.held(ADDRESS, CLIENT).tokens.access_token.get_secret_value() == "at-other"  # type: ignore[union-attr]


def test_a_refused_refresh_token_is_a_refresh_rejected(custodian: TokenCustodian) -> None:
    """A rejected grant raises RefreshRejected and stores nothing."""
    _recorded(custodian, _tokens("old"))
    held = custodian.held(ADDRESS, CLIENT)
    with pytest.raises(RefreshRejected, match="invalid_grant"):
        custodian.rotate(ADDRESS, CLIENT, held, FakeProvider(refused=True).refresh)  # type: ignore[arg-type]
    assert custodian.held(ADDRESS, CLIENT) == held


@pytest.mark.parametrize("status", [203, 401])
def test_a_sign_in_page_or_a_refusal_refreshes_once_and_checks_again(custodian: TokenCustodian, status: int) -> None:
    """verify_fresh: 203 or 401 from the check rotates the tokens once, then the check passes with the new ones."""
    _recorded(custodian, _tokens("old"))
    provider, (check, seen) = FakeProvider(), _checker(status)
    fresh = custodian.verify_fresh(ADDRESS, CLIENT, custodian.held(ADDRESS, CLIENT), provider.refresh, check, due=False)  # type: ignore[arg-type]
    assert (fresh.refreshed, provider.refreshes, seen) == (True, 1, ["at-old", "at-1"])
    assert custodian.held(ADDRESS, CLIENT).tokens == fresh.tokens  # type: ignore[union-attr]


def test_tokens_refreshed_because_due_are_not_refreshed_twice(custodian: TokenCustodian) -> None:
    """A refusal of tokens just rotated is raised as it is: never a second refresh in one check."""
    _recorded(custodian, _tokens("old"))
    provider, (check, _seen) = FakeProvider(), _checker(401)
    with pytest.raises(ProviderError, match="HTTP 401"):
        custodian.verify_fresh(ADDRESS, CLIENT, custodian.held(ADDRESS, CLIENT), provider.refresh, check, due=True)  # type: ignore[arg-type]
    assert provider.refreshes == 1


def test_a_refusal_whose_refresh_is_rejected_names_the_refusal(custodian: TokenCustodian) -> None:
    """The check refused the token and the refresh is rejected: RefreshRejected carries the refusal."""
    _recorded(custodian, _tokens("old"))
    check, _seen = _checker(401)
    with pytest.raises(RefreshRejected) as caught:
        custodian.verify_fresh(
            ADDRESS, CLIENT, custodian.held(ADDRESS, CLIENT), FakeProvider(refused=True).refresh, check, due=False  # type: ignore[arg-type]
        )
    assert caught.value.after is not None and caught.value.after.status == 401


def test_without_a_refresh_token_a_sign_in_page_is_retried_not_refreshed(custodian: TokenCustodian) -> None:
    """No refresh token: a sign-in page is a transient answer, retried; nothing is refreshed."""
    _recorded(custodian, _tokens("old", refresh=False))
    provider, (check, seen) = FakeProvider(), _checker(203)
    fresh = custodian.verify_fresh(ADDRESS, CLIENT, custodian.held(ADDRESS, CLIENT), provider.refresh, check, due=False)  # type: ignore[arg-type]
    assert (fresh.refreshed, provider.refreshes, seen) == (False, 0, ["at-old", "at-old"])


def test_refresh_is_due_within_the_window_or_without_a_known_expiry() -> None:
    """One rule for both apply and refresh: due within the window; tokens of unknown expiry always."""
    window = dt.timedelta(minutes=15)
    assert refresh_due(_tokens("a", expires_in=60), NOW, window)
    assert not refresh_due(_tokens("a", expires_in=3600), NOW, window)
    assert refresh_due(TokenSet(access_token=SecretStr("x")), NOW, window)


def test_move_reseals_for_the_new_address_and_forgets_the_old_after_the_document(
    custodian: TokenCustodian, store: MemoryStore
) -> None:
    """move: sealed anew for the new address before the document is written; the old record goes after it."""
    _recorded(custodian, _tokens("old"))
    custodian.stage_pending(ADDRESS, "client-2", _pending())
    new = "installation.acme.renamed"
    during: list[list[str]] = []
    custodian.move(ADDRESS, new, CLIENT, "client-2", lambda: during.append(store.addresses()))
    assert during == [[ADDRESS, new]] and store.addresses() == [new]
    assert custodian.held(new, CLIENT).tokens.access_token.get_secret_value() == "at-old"  # type: ignore[union-attr]
    assert custodian.pending(new, "client-2") == _pending()


def test_withdraw_and_forget(custodian: TokenCustodian, store: MemoryStore) -> None:
    """withdraw_pending keeps the tokens; forget drops the record."""
    _recorded(custodian, _tokens("old"))
    custodian.stage_pending(ADDRESS, CLIENT, _pending())
    custodian.withdraw_pending(ADDRESS)
    assert custodian.pending(ADDRESS, CLIENT) is None and custodian.held(ADDRESS, CLIENT) is not None
    custodian.forget(ADDRESS)
    assert store.addresses() == []


def _pending() -> PendingAuthorization:
    return PendingAuthorization(
        state=SecretStr("state"),
        authorize_url="https://login.example/authorize",
        redirect_uri="http://127.0.0.1:1/callback",
        client_id="client-2",
        scopes=("vso.work",),
        created_at=NOW,
        expires_at=NOW + dt.timedelta(hours=1),
    )
