"""Support for the crash, concurrency and provider-fault suites (tests/reliability/test_crash.py,
test_concurrency.py, test_faults.py).

`figures.add(area, **counts)` adds to one area's counts; at the end of the test session each area prints one line,
`reliability: <area>: k1 v1, k2 v2`, so that `make reliability` shows what was tried and what was found.
"""

from __future__ import annotations

import atexit
import sys
import threading


class Figures:
    """Counts per area, summed over the tests that ran, printed once when the session ends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._areas: dict[str, dict[str, int]] = {}
        self._registered = False

    def add(self, area: str, **counts: int) -> None:
        with self._lock:
            totals = self._areas.setdefault(area, {})
            for key, value in counts.items():
                totals[key] = totals.get(key, 0) + int(value)
            if not self._registered:
                atexit.register(self.report)
                self._registered = True

    def get(self, area: str) -> dict[str, int]:
        with self._lock:
            return dict(self._areas.get(area, {}))

    def lines(self) -> list[str]:
        with self._lock:
            return [
                f"reliability: {area}: " + ", ".join(f"{key.replace('_', ' ')} {value}" for key, value in counts.items())
                for area, counts in sorted(self._areas.items())
            ]

    def report(self) -> None:
        out = sys.__stdout__
        if out is None:
            return
        for line in self.lines():
            out.write(line + "\n")
        out.flush()


figures = Figures()


def recorded_tokens(state_dir, environ):  # type: ignore[no-untyped-def]
    """Every installation state records as authorized, with the tokens its sealed credentials open to under the
    state key (key file beside the state, or RECONCILER_STATE_KEY in `environ`) — or the error opening them."""
    from reconciler.errors import ReconcilerError
    from reconciler.state import LocalBackend
    from reconciler.state.credentials import Vault
    from reconciler.state.model import InstallationRecord
    from reconciler.workflow import open_key

    backend = LocalBackend(state_dir, "default")
    doc = backend.read()
    if doc is None:
        return {}
    authorized = {
        address: record
        for address, record in doc.resources.items()
        if isinstance(record, InstallationRecord) and record.status == "authorized"
    }
    if not authorized:
        return {}
    key = open_key(backend, state_dir, environ, "default", lambda source: None, create=False)
    vault = Vault(backend.credential_store(), key, lineage=doc.lineage, environment="default")
    found = {}
    for address, record in authorized.items():
        try:
            sealed = vault.record(address)
            if sealed is None:
                raise ReconcilerError("no sealed credentials")
            found[address] = vault.current_tokens(address, record.client_id, sealed)
        except ReconcilerError as exc:
            found[address] = exc
    return found


def works_at(provider, tokens) -> bool:  # type: ignore[no-untyped-def]
    """Whether the sandbox still honours these tokens: the refresh token of a live grant (or, without one, the
    access token)."""
    from reconciler.state.credentials import TokenSet

    if not isinstance(tokens, TokenSet):
        return False
    with provider.lock:
        if tokens.refresh_token is not None:
            grant = provider.by_refresh.get(tokens.refresh_token.get_secret_value())
        else:
            grant = provider.by_access.get(tokens.access_token.get_secret_value())
        return grant is not None and not grant.revoked
