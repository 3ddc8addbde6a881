"""The plan memo: `reconciler plan`'s output, reused while nothing it was computed from has changed.

A plan is a pure function of the configuration files, the references they resolve, the state, the catalog, the
options, the working directory (paths are shown relative to it), the date (secret-expiry warnings) and the clock
(a pending authorization expires). The memo keeps one entry per configuration directory, environment, options
and output format, holding the output and a record of every input — each file read with the SHA-256 of its
bytes, each include pattern with its matches, files whose absence mattered, each reference with its value where
plans show it, the state files' digests as read, the date, and the first instant a pending authorization expires.
An entry is used only when every one of those still holds, re-checked on each run (file contents are hashed, not
trusted by date); otherwise the plan is computed as usual and the entry replaced. References are resolved again
on every use, so a missing variable or secret file is still an error (reported by the full load).

Trusted only as the parse cache is (see `reconciler.config.cache`): a directory or entry another user owns or
may write is not used (one warning line), and an entry whose record of inputs lacks the root configuration file
or the state is incomplete, never "nothing changed": the plan is computed again.

Lives in the cache directory beside the parse cache (`--no-cache` and RECONCILER_NO_CACHE turn both off), safe
to delete; any problem reading or writing it costs speed only. Holds no secret value: the output is redacted
before it is stored, and secret references are kept as references. Used only for local state (a shared backend
changes without touching local files) and never for `--refresh`, `--out` or `--split-dir`.
Must not: import pydantic, YAML or the loader — its hit path runs in the time of a few file reads.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import marshal
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from reconciler import __version__
from reconciler.config.cache import (
    default_cache_dir,
    make_private_directories,
    read_private_entry,
    untrusted,
    warn_untrusted,
)
from reconciler.config.includes import CONFIG_FILE, TooManyMatches, glob_matches
from reconciler.references import REFERENCE, Problem, reach, resolve

__all__ = ["Hit", "PlanMemo", "StateFiles", "file_digest"]

_FORMAT = "reconciler-plan-memo-2"
_PACKAGE = Path(__file__).resolve().parent
MAX_OUTPUT = 64 * 1024 * 1024  # larger outputs are not kept


def file_digest(path: str | Path) -> str | None:
    """SHA-256 of a file's bytes, or None when it does not exist (or cannot be read)."""
    try:
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError:
        return None


@runtime_checkable
class StateFiles(Protocol):
    """State kept in local files, as the memo asks it: what it read (a shared backend offers no such thing:
    other writers change it unseen, and nothing local tells that it is unchanged)."""

    def read_digests(self) -> list[tuple[str, str | None]] | None:
        """The SHA-256 of each file the last `read` used, as read (None: absent); None when nothing was read."""


@dataclass(frozen=True)
class Hit:
    output: str
    has_changes: bool
    secret_values: frozenset[str]  # resolved now, for the redaction backstop


class PlanMemo:
    """The entry for one (configuration, environment, options, format) in `cache_dir`/plan."""

    def __init__(
        self,
        *,
        config_dir: Path,
        environment: str | None,
        environ: Mapping[str, str],
        options: Sequence[Sequence[str]],
        output_format: str,
        color: bool,
    ) -> None:
        self.config_dir = Path(config_dir)
        self.environ = environ
        slot = [
            _FORMAT,
            __version__,
            _code_fingerprint(),
            os.path.abspath(config_dir),
            os.getcwd(),
            environment or "",
            [sorted(values) for values in options],
            output_format,
            color,
        ]
        digest = hashlib.sha256(marshal.dumps(slot)).hexdigest()
        self.root = default_cache_dir(environ)
        self.path = self.root / "plan" / f"{digest}.marshal"
        self._root_file = os.path.abspath(self.config_dir / CONFIG_FILE)

    def lookup(self, now: dt.datetime) -> Hit | None:
        """The stored output if every input it was computed from is unchanged at `now`; None otherwise."""
        problem = untrusted(self.root, "plan")
        if problem is None:
            blob, problem = read_private_entry(self.path, MAX_OUTPUT * 2)
        if problem is not None:
            warn_untrusted(self.root, problem)
            return None
        try:
            entry = marshal.loads(blob) if blob is not None else None  # noqa: S302 - our own private file
            return self._check(entry, now) if isinstance(entry, dict) else None
        except (KeyError, TypeError, ValueError, AttributeError, EOFError, TooManyMatches):
            return None  # an entry of another shape, or a pattern now over its limit: recompute

    def _check(self, entry: dict[str, Any], now: dt.datetime) -> Hit | None:
        if entry.get("format") != _FORMAT or entry["today"] not in (None, now.date().isoformat()):
            return None
        if not entry["state"] or self._root_file not in {path for path, _ in entry["files"]}:
            return None  # a record without the state or the root file is incomplete, not "nothing changed"
        if entry["valid_until"] is not None and now.timestamp() >= entry["valid_until"]:
            return None
        for path, digest in entry["state"]:
            if file_digest(path) != digest:
                return None
        for path, digest in entry["files"]:
            if file_digest(path) != digest:
                return None
        for base, pattern, matches in entry["globs"]:
            if [os.path.abspath(m) for m in glob_matches(Path(base), pattern)] != matches:
                return None
        if any(os.path.isfile(path) for path in entry["absent"]):
            return None
        secrets = self._references(entry["references"], entry["sealed"])
        if secrets is None:
            return None
        return Hit(entry["output"], entry["has_changes"], secrets)

    def _references(self, references: list[tuple[str, bool, str | None]], sealed: list[str]) -> frozenset[str] | None:
        """The secret values, when every reference resolves as before (shown values unchanged, no secret reused
        in a shown field); None sends the run through the full load, which reports any problem properly."""
        within = reach(self.config_dir, self.environ, sealed)
        secrets: set[str] = set()
        shown: set[str] = set()
        for reference, secret, value in references:
            match = REFERENCE.match(reference)
            if match is None:
                return None
            # A secret as the widest secret field may read it (the service's own: `references.refusal`): the load
            # that stored the entry judged each field, and the files it read are unchanged.
            environ = self.environ
            resolved = resolve(*match.groups(), config_dir=self.config_dir, environ=environ, within=within, own=secret)
            if isinstance(resolved, Problem) or (not secret and resolved != value):
                return None
            (secrets if secret else shown).add(resolved)
        return None if secrets & shown else frozenset(secrets)

    def store(
        self,
        *,
        manifest: Any,
        state: list[tuple[str, str | None]],
        valid_until: dt.datetime | None,
        output: str,
        has_changes: bool,
    ) -> None:
        """Keep `output` for the inputs described (`manifest`: the loader's; `state`: the digests of the state
        files as read). Failing to write only costs speed next time."""
        if len(output) > MAX_OUTPUT:
            return
        entry = {
            "format": _FORMAT,
            "today": manifest.today,
            "valid_until": valid_until.timestamp() if valid_until is not None else None,
            "state": state,
            "files": manifest.files,
            "globs": manifest.globs,
            "absent": manifest.absent,
            "references": manifest.references,
            "sealed": manifest.sealed,
            "output": output,
            "has_changes": has_changes,
        }
        if not state or self._root_file not in {path for path, _ in manifest.files}:
            return  # never answered (see `_check`): not worth writing
        if not make_private_directories(self.root, "plan"):
            return
        try:
            blob = marshal.dumps(entry)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".tmp-")
            with os.fdopen(fd, "wb") as handle:
                handle.write(blob)
            os.replace(tmp, self.path)
        except (OSError, ValueError):
            return


def _code_fingerprint() -> str:
    """The reconciler code and catalog this process runs (sizes and modification times): an entry written by
    other code — an upgrade, or a working copy being edited — never answers."""
    parts = []
    for directory, _, names in os.walk(_PACKAGE):
        for name in names:
            if name.endswith((".py", ".yaml")):
                info = os.stat(os.path.join(directory, name))
                parts.append(f"{directory}/{name}:{info.st_size}:{info.st_mtime_ns}")
    return hashlib.sha256("\n".join(sorted(parts)).encode()).hexdigest()
