"""What every request of the service shares: the configuration loaded at start, the state backend (read again on
each request: an apply may change it meanwhile), the state key, the executor's services, and the store of
attempts and audit entries beside the state.

Owns: building that once (`ServiceContext.open`), the vault and link issuer of the current state, and the one
in-process lock that keeps this instance's completions from queueing on the state lock all at once. Must not:
speak HTTP (`reconciler.service.app` does) or decide a sign-in (`reconciler.service.signin` does).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from reconciler.app.keys import no_note, state_key
from reconciler.app.run import services_for
from reconciler.app.source import config_source
from reconciler.app.statecache import CachedState
from reconciler.app.workspace import Workspace, open_backend
from reconciler.auth.transport import Http
from reconciler.config import LoadedConfig
from reconciler.config.desired import ServiceSettings
from reconciler.crypto import StateKey
from reconciler.errors import ReconcilerError, StateLockedError, UsageError
from reconciler.links import LinkIssuer, link_issuer
from reconciler.service.observe import LOGGER
from reconciler.services import Services
from reconciler.state.backend import StateBackend
from reconciler.state.model import StateDocument
from reconciler.state.service_store import AuditEntry, ServiceStore
from reconciler.tokens.vault import Vault

__all__ = ["ServiceContext", "config_fingerprint"]

log = logging.getLogger(LOGGER)


def config_fingerprint(config_dir: Path) -> tuple[tuple[str, int, int], ...]:
    """Every YAML file under the configuration directory, with its modification time and size."""
    found = []
    for path in sorted(config_dir.rglob("*.y*ml")):
        try:
            stat = path.stat()
        except OSError:
            continue
        found.append((str(path), stat.st_mtime_ns, stat.st_size))
    return tuple(found)


@dataclass
class ServiceContext:
    ws: Workspace
    loaded: LoadedConfig
    backend: StateBackend  # read on each request, from any thread; never locked
    writer: StateBackend  # the same state: locked and written only under `completions`
    settings: ServiceSettings
    http: Http
    lock_timeout: float = 60.0  # seconds a completion waits for the state lock (a CLI apply may hold it)
    completions: threading.Lock = field(default_factory=threading.Lock)
    on_audit: Callable[[AuditEntry], None] = lambda entry: None  # after an entry is stored (metrics)
    # An event for the team's webhooks: (type, address, data); the tenant is the address's.
    on_event: Callable[[str, str, dict[str, object]], None] = lambda type_, address, data: None
    fingerprint: tuple[tuple[str, int, int], ...] = ()  # of the configuration's files when loaded
    on_reload: list[Callable[[LoadedConfig], None]] = field(default_factory=list)
    reloading: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def open(cls, ws: Workspace, *, http: Http, lock_timeout: float = 60.0) -> ServiceContext:
        """The configuration of `ws` (every secret it names resolved) with its `service:` section and its backend."""
        loaded = config_source(ws).load()
        settings = loaded.desired.service
        if settings is None:
            raise UsageError(
                "the configuration has no service: section",
                hint="declare service.public_url (the URL the service is reached at) in reconciler.yaml",
            )
        backend, writer = open_backend(ws, loaded.root), open_backend(ws, loaded.root)
        fingerprint = config_fingerprint(ws.config_dir)
        return cls(ws, loaded, backend, writer, settings, http, lock_timeout, fingerprint=fingerprint)

    @property
    def now(self) -> Callable[[], dt.datetime]:
        return self.ws.clock

    @cached_property
    def key(self) -> StateKey:
        """The state's key; never created here (a state the CLI has not written yet has no link to serve)."""
        key = state_key(self.ws, self.loaded.root, self.backend, on_key_created=no_note, create=False)
        if key is None:
            raise UsageError(
                "the service needs the state key, and there is none yet",
                hint="run `reconciler apply` first (it creates the key beside local state), or set RECONCILER_STATE_KEY",
            )
        return key

    @cached_property
    def services(self) -> Services:
        """The executor's services (consent: none here; a callback hands its code in per completion)."""
        base = services_for(
            self.ws, self.loaded.root, self.writer, http=self.http, consent=None, on_key_created=no_note,
            desired=self.loaded.desired,
        )
        return dataclasses.replace(base, vault_for=self.vault)

    @cached_property
    def cached(self) -> CachedState:
        return CachedState(self.backend)

    def peek(self, address: str) -> StateDocument | None:
        """State as a request outside the lock needs it (see `CachedState.read_for`)."""
        return self.cached.read_for(address)

    @cached_property
    def store(self) -> ServiceStore:
        store: ServiceStore = self.backend.service_store()
        return store

    def reload_config(self) -> bool:
        """Load the configuration again when its files changed since it was loaded (an apply of a changed
        configuration withdraws and reissues pending authorizations: their new links need the new configuration).
        False when nothing changed, or the new configuration does not load (the service keeps the one it has)."""
        fingerprint = config_fingerprint(self.ws.config_dir)
        if fingerprint == self.fingerprint:
            return False
        with self.reloading:
            if fingerprint == self.fingerprint:
                return True
            try:
                loaded = config_source(self.ws).load()
            except ReconcilerError as exc:
                self.fingerprint = fingerprint
                log.warning("configuration not reloaded", extra={"fields": {"error": exc.message}})
                return False
            self.fingerprint = fingerprint
            if loaded.desired.service is None:
                log.warning("configuration not reloaded: it has no service: section")
                return False
            self.loaded, self.settings = loaded, loaded.desired.service
            self.__dict__.pop("services", None)
            for listener in self.on_reload:
                listener(loaded)
            return True

    @contextmanager
    def completing(self, operation: str) -> Iterator[None]:
        """This instance's turn to write (one at a time) and the state lock, within `lock_timeout` in all;
        `StateLockedError` when either is not had in time."""
        deadline = time.monotonic() + self.lock_timeout
        if not self.completions.acquire(timeout=self.lock_timeout):
            raise StateLockedError("the service's completions are queued too long", hint="try again in a minute")
        try:
            with self.writer.lock(operation, timeout=max(0.0, deadline - time.monotonic())):
                yield
        finally:
            self.completions.release()

    def vault(self, lineage: str) -> Vault:
        return Vault(self.backend.credential_store(), self.key, lineage=lineage, environment=self.ws.environment_name)

    def issuer(self, lineage: str) -> LinkIssuer:
        return link_issuer(self.key, self.settings.public_url, lineage=lineage, environment=self.ws.environment_name)

    def audit(self, entry: AuditEntry) -> None:
        self.store.append_audit(entry)
        self.on_audit(entry)
