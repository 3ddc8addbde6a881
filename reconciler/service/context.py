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
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

from reconciler.app.keys import no_note, state_key
from reconciler.app.run import services_for
from reconciler.app.source import config_source
from reconciler.app.workspace import Workspace, open_backend
from reconciler.auth.transport import Http
from reconciler.config import LoadedConfig
from reconciler.config.desired import ServiceSettings
from reconciler.crypto import StateKey
from reconciler.errors import UsageError
from reconciler.links import LinkIssuer, link_issuer
from reconciler.services import Services
from reconciler.state.backend import StateBackend
from reconciler.state.service_store import AuditEntry, ServiceStore
from reconciler.tokens.vault import Vault

__all__ = ["ServiceContext"]


@dataclass
class ServiceContext:
    ws: Workspace
    loaded: LoadedConfig
    backend: StateBackend
    settings: ServiceSettings
    http: Http
    lock_timeout: float = 60.0  # seconds a completion waits for the state lock (a CLI apply may hold it)
    completions: threading.Lock = field(default_factory=threading.Lock)
    on_audit: Callable[[AuditEntry], None] = lambda entry: None  # after an entry is stored (metrics)
    # An event for the team's webhooks: (type, address, data); the tenant is the address's.
    on_event: Callable[[str, str, dict[str, object]], None] = lambda type_, address, data: None

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
        return cls(ws, loaded, open_backend(ws, loaded.root), settings, http, lock_timeout)

    @property
    def now(self) -> Callable[[], dt.datetime]:
        return self.ws.clock

    @cached_property
    def key(self) -> StateKey:
        return state_key(self.ws, self.loaded.root, self.backend, on_key_created=no_note)

    @cached_property
    def services(self) -> Services:
        """The executor's services (consent: none here; a callback hands its code in per completion)."""
        base = services_for(
            self.ws, self.loaded.root, self.backend, http=self.http, consent=None, on_key_created=no_note,
            desired=self.loaded.desired,
        )
        return dataclasses.replace(base, vault_for=self.vault)

    @cached_property
    def store(self) -> ServiceStore:
        store: ServiceStore = self.backend.service_store()
        return store

    def vault(self, lineage: str) -> Vault:
        return Vault(self.backend.credential_store(), self.key, lineage=lineage, environment=self.ws.environment_name)

    def issuer(self, lineage: str) -> LinkIssuer:
        return link_issuer(self.key, self.settings.public_url, lineage=lineage, environment=self.ws.environment_name)

    def audit(self, entry: AuditEntry) -> None:
        self.store.append_audit(entry)
        self.on_audit(entry)
