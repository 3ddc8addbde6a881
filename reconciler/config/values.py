"""Where references meet fields: each `${env:}`/`${file:}` value resolved once, and the rules about secrets.

Owns: resolving a field's value (a literal, or a reference through `reconciler.references`), refusing a literal
secret, the backend DSN's reference (read by no other field), secret references not available here (listed as
unchecked when the command needs no secret's value), a secret value that also fills a field plans show, and the
shape of client ids. Must not: read configuration files, know the schema's other keys, or keep a secret's value
anywhere but the desired state (the manifest keeps only the values plans show).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from reconciler.config.located import KeyPath, Report, SourceFile, key_path_text
from reconciler.errors import Location
from reconciler.references import REFERENCE, Problem, Reach, refusal, resolve

__all__ = ["NOTE_LIMIT", "NO_REFERENCE", "Unchecked", "Values"]

NO_REFERENCE = "references (${env:...}, ${file:...}) are resolved only in client_id and client_secret"
# A client id is shown in plans and authorization links: Microsoft's app ids are GUIDs; another peer (a sandbox,
# a proxy) gets a conservative token shape — printable ASCII without spaces, quotes or backslashes, bounded.
_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_TOKEN_ID = re.compile(r"[!#-&(-\[\]-_a-~]{1,128}")
NOTE_LIMIT = 5  # unchecked references named in the note; the rest are counted


@dataclass(frozen=True)
class Unchecked:
    """A secret reference whose value is not available here (variable not set or empty, file missing), where it
    is first used, and how many fields use it."""

    reference: str
    location: Location
    uses: int = 1

    def __str__(self) -> str:
        return f"{self.reference} at {self.location}" + (f" (used {self.uses} times)" if self.uses > 1 else "")


class _ClientId(NamedTuple):
    src: SourceFile
    path: KeyPath
    written: str  # as in the file (a literal or a reference)
    value: str
    auth: str
    overridden: bool  # the partner's endpoints are not the connector's defaults: not necessarily Microsoft's


class Values:
    """The values of one load: each reference resolved once (its problem reported at every use), and what the
    checks across fields need (secret values, values plans show, client ids)."""

    def __init__(
        self, report: Report, config_dir: Path, environ: Mapping[str, str], within: Reach, *, unchecked_secrets: bool
    ) -> None:
        self.report, self.config_dir, self.environ, self.within = report, config_dir, environ, within
        self.unchecked_secrets = unchecked_secrets  # see `load_config`
        self.resolved: dict[str, str | None] = {}
        # Read by the reconciler's own secrets (see `references.refusal`): kept apart, so that a value one of them
        # may read never reaches a client secret or id through the cache.
        self._resolved_own: dict[str, str | None] = {}
        self.unchecked: dict[str, tuple[SourceFile, KeyPath, int]] = {}  # secret reference -> first use, uses
        self._secret_references: set[str] = set()
        self._secret_values: set[str] = set()
        self._plain_values: list[tuple[SourceFile, KeyPath, str]] = []
        self._dsn_reference: str | None = None
        self._client_ids: list[_ClientId] = []  # checked once all are read

    def value(
        self, src: SourceFile, path: KeyPath, value: str, *, secret: bool, dsn: bool = False, own: bool = False
    ) -> str | None:
        """A literal or `${env:}`/`${file:}` value, resolved. Secrets must be references; no reference reaches what
        `reconciler.references` seals, and none but `backend.dsn` reads the DSN's reference. `own`: a secret of the
        reconciler's own (the service's API keys and webhook secrets), which may read more (`references.refusal`)."""
        match = REFERENCE.match(value)
        if match is None:
            return self._literal(src, path, value, secret=secret)
        if not dsn and value == self._dsn_reference:
            self.report.issue(src, path, f"{value} is the backend's DSN; it would be sent or shown", "use a reference of its own")
            return None
        cache = self._resolved_own if own else self.resolved
        if value in cache:
            resolved = cache[value]
            if value in self.unchecked and secret:
                first_src, first_path, uses = self.unchecked[value]
                self.unchecked[value] = (first_src, first_path, uses + 1)
            elif resolved is None:
                self.report.issue(src, path, f"cannot resolve {value}")
        else:
            resolved = cache[value] = self._resolve(src, path, value, *match.groups(), secret=secret, dsn=dsn, own=own)
        if secret:
            self._secret_references.add(value)
        if resolved is not None:
            if secret:
                self._secret_values.add(resolved)
            else:
                self._plain_values.append((src, path, resolved))
        return resolved

    def _literal(self, src: SourceFile, path: KeyPath, value: str, *, secret: bool) -> str | None:
        if secret:
            env_name = re.sub(r"[^A-Z0-9]+", "_", key_path_text(path[-3:]).upper()).strip("_")
            self.report.issue(
                src,
                path,
                "a literal secret is refused: these files live in git",
                f"use ${{env:{env_name}}} or ${{file:secrets/{path[-1] if path else 'secret'}}} instead",
            )
            return None
        if "${" in value:
            self.report.issue(src, path, "malformed reference", "write ${env:NAME} or ${file:PATH}")
            return None
        return value

    def _resolve(
        self, src: SourceFile, path: KeyPath, value: str, kind: str, argument: str, *, secret: bool, dsn: bool, own: bool
    ) -> str | None:
        """A reference's value read for the first time (None after reporting why it has none)."""
        environ, within = self.environ, self.within
        outcome = resolve(kind, argument, config_dir=self.config_dir, environ=environ, within=within, dsn=dsn, own=own)
        if not isinstance(outcome, Problem):
            return outcome
        if outcome.unavailable and secret and self.unchecked_secrets and not dsn:
            self.unchecked[value] = (src, path, 1)
        elif outcome.unavailable and path[-1:] == ("client_id",):  # needed: plans and links show it
            hint = "; ".join(filter(None, [outcome.hint, "a client id is no secret: it may be written in the file"]))
            self.report.issue(src, path, outcome.message, hint)
        else:
            self.report.issue(src, path, outcome.message, outcome.hint)
        return None

    def check_dsn(self, src: SourceFile, dsn: str) -> None:
        """A DSN is a reference (a literal is refused) that reaches nothing a reference may not; no other field
        may read it (a client secret reading it would send the database password to a provider)."""
        match = REFERENCE.match(dsn)
        if match is None:
            self.value(src, ("backend", "dsn"), dsn, secret=True)  # refused: a literal
            return
        problem = refusal(*match.groups(), config_dir=self.config_dir, within=self.within, dsn=True)
        if problem is not None:
            self.report.issue(src, ("backend", "dsn"), problem.message, problem.hint)
        self._dsn_reference = dsn

    def client_id(
        self, src: SourceFile, path: KeyPath, written: str, value: str, auth: str, overridden: bool
    ) -> None:
        """Remember a resolved client id, to check its shape once every secret is known (see `check`)."""
        self._client_ids.append(_ClientId(src, path, written, value, auth, overridden))

    def check(self) -> None:
        """The checks across fields, once every field is resolved: no secret fills a field plans show, and each
        client id has the shape of one (a path reported for the first gets no second error)."""
        self._check_client_ids(self._check_secrets_stay_secret())

    def _check_secrets_stay_secret(self) -> set[KeyPath]:
        """A value that is a secret somewhere must not also fill a field that plans show (returns where it does)."""
        reported: set[KeyPath] = set()
        for src, path, value in self._plain_values:
            if value in self._secret_values:
                reported.add(path)
                self.report.issue(
                    src,
                    path,
                    f"{path[-1]} resolves to the same value as a client_secret; it would be shown in plans",
                    "point it at the client id, not the secret",
                )
        return reported

    def _check_client_ids(self, reported: set[KeyPath]) -> None:
        """Each client id has the shape of one for its auth (a GUID at Microsoft's endpoints, a token-like id at
        overridden ones); else an error that names the key and the reference, never the value."""
        for cid in self._client_ids:
            if cid.path not in reported and not (_TOKEN_ID if cid.overridden else _GUID).fullmatch(cid.value):
                origin = f" ({cid.written} resolves to something else)" if REFERENCE.match(cid.written) else ""
                if cid.overridden:
                    expected = "up to 128 printable characters without spaces, quotes or backslashes"
                else:
                    expected = f"a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx), the app id of {cid.auth}"
                message = f"{cid.path[-1]} is not a client id: expected {expected}{origin}"
                self.report.issue(cid.src, cid.path, message, "check the app registration")

    def unchecked_references(self) -> list[Unchecked]:
        """The secret references not checked, in order of first use; those the note names are located to the
        line (finding a line re-reads the file with positions: thousands would cost a reviewer's plan seconds)."""
        out = []
        for index, (reference, (src, path, uses)) in enumerate(self.unchecked.items()):
            where = self.report.location(src, path) if index < NOTE_LIMIT else Location(src.origin(path).display)
            out.append(Unchecked(reference, where, uses))
        return out

    def manifest_references(self) -> list[tuple[str, bool, str | None]]:
        """Every reference read, whether it is a secret, and its value when it is not (see `Manifest`)."""
        secret = self._secret_references
        read = {**self._resolved_own, **self.resolved}
        return [(reference, reference in secret, None if reference in secret else value) for reference, value in read.items()]
