"""`${env:NAME}` and `${file:PATH}` references: their syntax, what they may reach, and their resolution, without
any reporting.

Owns: what a reference means — an environment variable that is set and not empty; a regular file inside the
configuration directory (or a directory listed in RECONCILER_SECRET_DIRS), read as UTF-8 without its trailing
newline, not empty, at most `MAX_SECRET_BYTES` — and what no reference may reach, whatever field it fills (a
client id is shown in plans and links, a client secret is sent to a provider): the reconciler's own variables
(`RECONCILER_*`: the state key, its passphrase, DSNs; a DSN field may read RECONCILER_* except the state key and
passphrase; a field of the reconciler's own — the service's API keys and webhook secrets — may read RECONCILER_*
except the state keys and the DSN), the state directories (state, journal, key and credential files), and version-control internals
(.git, .hg, .svn), judged on the path after resolving symlinks. Resolution returns the value or a `Problem`
(message and hint, never the value); the configuration loader turns a problem into an error at the reference's
file and line — or, where the value is not needed (validate, plan) and the problem is only that the value is not
here, into a note that the reference was not checked — and the plan memo (which re-resolves references to know
that nothing they name changed) falls back to a full load on any problem. Must not: import YAML, pydantic or the
loader.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["MAX_SECRET_BYTES", "REFERENCE", "Problem", "Reach", "path_text_problem", "reach", "refusal", "resolve"]

REFERENCE = re.compile(r"^\$\{(env|file):([^}]*)\}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_SECRET_BYTES = 64 * 1024  # a secret file larger than this is not a client id or secret
_OWN_PREFIX = "RECONCILER_"  # the reconciler's own settings: keys, passphrases, DSNs
_STATE_KEYS = frozenset({"RECONCILER_STATE_KEY", "RECONCILER_STATE_PASSPHRASE"})
# What the service's own secrets may not read: key material that decrypts state, and the database's DSN.
_NOT_OWN = _STATE_KEYS | {"RECONCILER_NEW_STATE_KEY", "RECONCILER_PG_DSN"}
_VCS = frozenset({".git", ".hg", ".svn"})
DEFAULT_STATE_DIR = "state"  # the local backend's directory when the configuration names none
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # no file system path the configuration names holds these


def path_text_problem(text: str) -> str | None:
    """Why `text` cannot name a path (a backend directory, an include pattern, a secret file), or None. A NUL
    cannot be in a path at all, and no other control character belongs in one a person typed."""
    return "must not contain control characters" if _CONTROL.search(text) else None


@dataclass(frozen=True)
class Problem:
    """Why a reference has no value. `unavailable`: only that the value is not here (the variable is not set or
    is empty, the file does not exist) — the reference itself is well-formed and may be used."""

    message: str
    hint: str | None = None
    unavailable: bool = False


@dataclass(frozen=True)
class Reach:
    """Where `${file:}` references may read (`roots`), and the directories inside them they never may: the state
    directories (`sealed`) and each root's version-control directories (`vcs`), all resolved."""

    roots: tuple[Path, ...]
    sealed: tuple[Path, ...] = field(default=())
    vcs: tuple[Path, ...] = field(default=())


def reach(config_dir: Path, environ: Mapping[str, str], state_dirs: Iterable[str | Path] = ()) -> Reach:
    """The reach of references in `config_dir`: the directory itself and RECONCILER_SECRET_DIRS, minus the state
    directories (`state_dirs`, relative to `config_dir` or absolute; the default `state` always) and each root's
    version-control directories."""
    extra = [d for d in environ.get("RECONCILER_SECRET_DIRS", "").split(os.pathsep) if d]
    roots = (config_dir.resolve(), *(Path(d).resolve() for d in extra))
    usable = [d for d in (DEFAULT_STATE_DIR, *state_dirs) if path_text_problem(str(d)) is None]
    sealed = [(config_dir / d).resolve() for d in usable]  # an unusable one is refused where it is declared
    vcs = [(root / name).resolve() for root in roots for name in sorted(_VCS)]
    return Reach(roots, tuple(dict.fromkeys(sealed)), tuple(dict.fromkeys(vcs)))


def refusal(
    kind: str, argument: str, *, config_dir: Path, within: Reach, dsn: bool = False, own: bool = False
) -> Problem | None:
    """Why `${kind:argument}` may not be used (reading no value), or None. `dsn`: it fills a backend DSN; `own`: a
    secret of the reconciler's own (the service's API keys, webhook secrets)."""
    if kind == "env":
        if own or dsn:
            refused = argument in (_NOT_OWN if own else _STATE_KEYS)
        else:
            refused = argument.startswith(_OWN_PREFIX)
        if refused:
            return Problem(
                f"a reference may not read {argument}: it holds the reconciler's own "
                + ("state key" if argument in _STATE_KEYS else "settings (keys, passphrase, DSNs)"),
                "put the value in a variable of its own",
            )
        return None
    if not argument:
        return Problem("empty file name in reference")
    if path_text_problem(argument) is not None:
        return Problem("the file name in the reference contains a control character", "name the file plainly")
    target = (config_dir / argument).resolve()
    if not any(target == root or root in target.parents for root in within.roots):
        return Problem(
            f"secret file '{argument}' is outside the configuration directory",
            "keep it inside, or list its directory in RECONCILER_SECRET_DIRS",
        )

    def inside(directory: Path) -> bool:
        return target == directory or directory in target.parents

    if _VCS.intersection(target.parts) or _VCS.intersection(Path(argument).parts) or any(map(inside, within.vcs)):
        return Problem(
            f"secret file '{argument}' is inside version-control internals (.git, .hg, .svn)",
            "they hold the checkout's credentials; keep the secret in a file of its own",
        )
    if any(map(inside, within.sealed)):
        return Problem(
            f"secret file '{argument}' is inside a state directory (state, keys, credentials)",
            "keys and state are never read by references; keep the secret in a file of its own",
        )
    return None


def resolve(kind: str, argument: str, *, config_dir: Path, environ: Mapping[str, str], within: Reach,
            dsn: bool = False, own: bool = False) -> str | Problem:
    """The value of the reference `${kind:argument}` (kind "env" or "file"), or why it has none (`dsn`, `own`: see
    `refusal`)."""
    problem = refusal(kind, argument, config_dir=config_dir, within=within, dsn=dsn, own=own)
    if problem is not None:
        return problem
    return _env(argument, environ) if kind == "env" else _file(argument, (config_dir / argument).resolve())


def _env(name: str, environ: Mapping[str, str]) -> str | Problem:
    if not _ENV_NAME.match(name):
        return Problem(f"invalid environment variable name '{name}' in reference")
    value = environ.get(name)
    if value is None:
        return Problem(f"environment variable {name} is not set", f"export {name}=... before running", True)
    if value == "":
        return Problem(f"environment variable {name} is empty", unavailable=True)
    return value


def _file(name: str, target: Path) -> str | Problem:
    try:
        raw = _read_regular(target)
    except FileNotFoundError:
        return Problem(f"secret file '{name}' does not exist", unavailable=True)
    except _NotRegular:
        return Problem(f"secret file '{name}' is not a regular file")
    except _TooLarge:
        return Problem(f"secret file '{name}' is larger than {MAX_SECRET_BYTES:,} bytes")
    except OSError as exc:
        return Problem(f"cannot read secret file '{name}': {exc.strerror or exc}")
    try:
        value = raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        return Problem(f"cannot read secret file '{name}': not readable as UTF-8")
    if not value:
        return Problem(f"secret file '{name}' is empty")
    return value


class _NotRegular(OSError):
    pass


class _TooLarge(OSError):
    pass


def _read_regular(target: Path) -> bytes:
    """A regular file's bytes, at most `MAX_SECRET_BYTES` (opened without blocking and checked before reading: a
    FIFO or device could block or never end)."""
    fd = os.open(target, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _NotRegular()
        raw = handle.read(MAX_SECRET_BYTES + 1)
    if len(raw) > MAX_SECRET_BYTES:
        raise _TooLarge()
    return raw
