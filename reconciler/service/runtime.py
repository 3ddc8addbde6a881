"""The service's work beside its requests: the token reader behind the token API, webhook deliveries, and the
background loop that refreshes tokens ahead of expiry, keeps idle refresh tokens alive and tells the team what
broke, recovered or expired.

Owns: which event each outcome sends (a rejected refresh token: `installation.needs_reauthorization` with a new
link, minted as `apply --auth-mode defer` would; a partner fault or a passing failure: `refresh.failed`, never a
re-authorization; a refresh that works again: `installation.recovered`; a link that expired while the service
ran: `link.expired`), and the token API's statuses for the reader's errors. Must not: speak HTTP.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading
from typing import Any

from reconciler.addresses import tenant_of
from reconciler.app.tokens import (
    NotAvailable,
    RefreshFailed,
    TokenReader,
    UnknownInstallation,
    WouldBlock,
    refresh_ahead,
)
from reconciler.app.workspace import open_backend
from reconciler.apply import Run
from reconciler.config import LoadedConfig
from reconciler.errors import ReconcilerError
from reconciler.service.context import ServiceContext
from reconciler.service.events import Deliverer, EventType, new_event
from reconciler.service.observe import LOGGER, Metrics
from reconciler.service.signin import QuietHooks
from reconciler.state.model import InstallationRecord
from reconciler.state.service_store import AuditEntry

__all__ = ["RefreshSettings", "Runtime"]

log = logging.getLogger(LOGGER)


@dataclasses.dataclass(frozen=True)
class RefreshSettings:
    interval: float = 60.0  # seconds between background passes
    window: dt.timedelta = dt.timedelta(minutes=10)  # refresh tokens expiring within this
    keepalive: dt.timedelta = dt.timedelta(days=7)  # refresh tokens unused for this long (Entra's lapse after 90 days)


class Runtime:
    """Started before the server listens, stopped after it drained."""

    def __init__(self, ctx: ServiceContext, metrics: Metrics, settings: RefreshSettings | None = None) -> None:
        self.ctx, self.metrics, self.settings = ctx, metrics, settings or RefreshSettings()
        reader_backend = open_backend(ctx.ws, ctx.loaded.root)  # never locked by the service's completions
        self.reader = TokenReader(ctx.ws, ctx.loaded, reader_backend, on_read=self._audit_read, lock_timeout=10.0)
        self.deliverer = Deliverer(ctx.settings.webhooks, on_outcome=lambda outcome: metrics.webhooks.labels(outcome).inc())
        ctx.on_event = self.publish
        ctx.on_reload.append(self._reloaded)
        self.failing: dict[str, str] = {}  # address -> the failure last announced (one event per change)
        self.started_at = ctx.now()
        self.announced: set[str] = set()
        self.guard = threading.Lock()
        self.to_mint: set[str] = set()  # installations a token read found rejected: their link is issued in the loop
        self.stopping = threading.Event()
        self.wake = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="reconciler-refresh", daemon=True)

    def start(self) -> Runtime:
        self.deliverer.start()
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()
        self.thread.join(1.0)
        self.deliverer.stop(timeout=1.0)
        self.reader.close()

    def _reloaded(self, loaded: LoadedConfig) -> None:
        self.reader.loaded = loaded

    # -- events ------------------------------------------------------------------------------------------------

    def publish(self, type_: str, address: str, data: dict[str, object]) -> None:
        if type_ == "authorization.completed":
            with self.guard:
                self.failing.pop(address, None)  # signed in again: its recovery is the completion's to announce
        event = new_event(EventType(type_), tenant=tenant_of(address), address=address, data=data, now=self.ctx.now())
        self.deliverer.publish(event)

    # -- the token API -----------------------------------------------------------------------------------------

    def _audit_read(self, actor: str, address: str) -> None:
        self.ctx.audit(AuditEntry(self.ctx.now(), "token.read", actor, address))
        self.metrics.token_reads.inc()

    def token(self, address: str, actor: str, *, block: bool = True) -> dict[str, Any]:
        """The token API's body for `address`; with `block` False, `WouldBlock` when it cannot be answered from
        local files without a refresh (the event loop then asks again from a worker thread)."""
        try:
            try:
                fresh = self.reader.fresh(address, actor=actor, block=block)
            except (UnknownInstallation, NotAvailable):
                if not block:
                    raise WouldBlock from None  # the configuration is looked at again from a worker thread
                if not self.ctx.reload_config():  # declared since the service started?
                    raise
                fresh = self.reader.fresh(address, actor=actor)
        except RefreshFailed as exc:
            if exc.category == "rejected":  # its link is issued by the loop: a read never waits for the state lock
                with self.guard:
                    self.to_mint.add(address)
                self.wake.set()
            else:
                self._failed(address, exc.category, exc.reason)
            raise
        expires = fresh.expires_at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z") if fresh.expires_at else None
        return {"access_token": fresh.access_token.get_secret_value(), "expires_at": expires, "scopes": list(fresh.scopes)}

    def token_at_once(self, address: str, actor: str) -> dict[str, Any]:
        return self.token(address, actor, block=False)

    @staticmethod
    def status_of(exc: ReconcilerError) -> int:
        if isinstance(exc, UnknownInstallation):
            return 404
        if isinstance(exc, NotAvailable) or (isinstance(exc, RefreshFailed) and exc.category == "rejected"):
            return 409
        return 503

    # -- the background loop -----------------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self.stopping.is_set():
            try:
                self.ctx.reload_config()
                self.sweep()
            except Exception:  # a pass that fails is logged and tried again at the next interval
                log.exception("background refresh pass failed")
            self.wake.wait(self.settings.interval)
            self.wake.clear()

    def sweep(self) -> None:
        """One pass: links for installations a token read found rejected, then refresh what is due, send what
        changed, announce links that expired."""
        with self.guard:
            rejected, self.to_mint = self.to_mint, set()
        for address in sorted(rejected):
            self._failed(address, "rejected", "the refresh token was rejected")
        now = self.ctx.now()
        for outcome in refresh_ahead(self.reader, now=now, window=self.settings.window, keepalive=self.settings.keepalive):
            self.metrics.refresh.labels(outcome.outcome).inc()
            if outcome.outcome == "refreshed" and self.failing.pop(outcome.address, None) is not None:
                self.publish("installation.recovered", outcome.address, {})
            elif outcome.outcome in ("rejected", "partner_fault", "transient"):
                self._failed(outcome.address, outcome.outcome, outcome.reason)
        self._expired_links(now)

    def _failed(self, address: str, category: str, reason: str) -> None:
        """One event per change of what fails: a passing failure seen by 50 readers is announced once."""
        with self.guard:
            if self.failing.get(address) == category:
                return
            self.failing[address] = category
        if category == "rejected":
            self.publish("installation.needs_reauthorization", address, {"reason": reason, "link": self.mint_link(address)})
        else:
            self.publish("refresh.failed", address, {"reason": reason, "category": category})

    def mint_link(self, address: str) -> str | None:
        """A link for an installation that must sign in again: its pending one, or a new pending authorization (as
        `apply --auth-mode defer` records it). None when it cannot be issued here (logged)."""
        ctx = self.ctx
        try:
            with ctx.completing(f"serve: link for {address}"):
                doc = ctx.writer.read()
                record = doc.resources.get(address) if doc is not None else None
                want = ctx.loaded.desired.installations.get(address)
                if doc is None or not isinstance(record, InstallationRecord) or want is None:
                    return None
                pending = record.pending
                if pending is not None and ctx.now() < pending.expires_at and pending.link == ctx.issuer(doc.lineage).link(address, pending):
                    return pending.link  # still what this service would sign (not after a rekey or a new public URL)
                run = Run(ctx.loaded.desired, dataclasses.replace(ctx.services, consent=None), QuietHooks(), doc, False)
                run.defer(want.declared)
                return run.result.pending[-1][1] if run.result.pending else None
        except ReconcilerError as exc:
            log.warning("no link issued", extra={"fields": {"address": address, "error": exc.message}})
            return None

    def _expired_links(self, now: dt.datetime) -> None:
        """`link.expired` once for each link that expired while this service ran."""
        doc = self.reader.document()
        for address, record in (doc.resources.items() if doc is not None else ()):
            pending = record.pending if isinstance(record, InstallationRecord) else None
            if pending is None or not pending.link or not self.started_at <= pending.expires_at <= now:
                continue
            if pending.link not in self.announced:
                self.announced.add(pending.link)
                self.publish("link.expired", address, {})

