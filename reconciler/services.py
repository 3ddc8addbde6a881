"""What the executor is given and gives back: the side effects it may use (`Services`), how it reports
(`ApplyHooks`), what a run achieved (`ApplyResult`) and the error a step raises (`ApplyError`).

Owns: those types. Must not: carry out anything (`reconciler.apply` does).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import httpx

from reconciler.auth.consent import ConsentStep
from reconciler.auth.retry import RetryPolicy
from reconciler.catalog import Catalog
from reconciler.errors import ReconcilerError
from reconciler.pending import PENDING_LIFETIME
from reconciler.state.backend import StateBackend
from reconciler.state.model import StateDocument
from reconciler.tokens.vault import Vault

if TYPE_CHECKING:
    from reconciler.links import LinkIssuer
    from reconciler.platform_apply import PlatformServices

__all__ = ["ApplyError", "ApplyHooks", "ApplyResult", "Services"]


class ApplyError(ReconcilerError):
    """A step failed; everything before it is persisted. Raised inside a step without the address, which the
    run puts in front of the message once."""


class ApplyHooks(Protocol):
    def step(self, address: str, message: str) -> None:
        """Progress of one address."""

    def link(self, address: str, url: str) -> None:
        """An authorization link for a user to open (deferred mode)."""

    def warning(self, address: str, message: str) -> None:
        """Something the user should know; not a failure."""


@dataclass(frozen=True)
class Services:
    """The side effects the executor may use, chosen by the caller."""

    backend: StateBackend
    vault_for: Callable[[str], Vault]  # lineage -> vault
    http: httpx.Client
    consent: ConsentStep | None  # None: defer every authorization
    now: Callable[[], dt.datetime]
    catalog: Catalog
    retry: RetryPolicy = RetryPolicy()  # provider calls that failed transiently (429, 5xx, timeouts) are retried
    # A sign-in that timed out or was abandoned (ConsentError category "missed"): True leaves that installation
    # pending (as `--auth-mode defer` would) and carries on with the others; None or False stops the run.
    on_missed: Callable[[str, ReconcilerError], bool] | None = None
    sleep: Callable[[float], None] = time.sleep
    platform: PlatformServices | None = None  # the configuration's platform (accounts, account connectors)
    # With `service:` configured: the issuer of the service's sign-in links for a state (lineage -> issuer), and how
    # long a deferred authorization (and its link) is offered.
    links: Callable[[str], LinkIssuer] | None = None
    link_lifetime: dt.timedelta = PENDING_LIFETIME


@dataclass
class ApplyResult:
    state: StateDocument | None
    completed: list[str] = field(default_factory=list)
    pending: list[tuple[str, str]] = field(default_factory=list)  # (address, authorization URL)
    warnings: list[tuple[str, str]] = field(default_factory=list)
    error: ReconcilerError | None = None
