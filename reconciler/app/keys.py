"""The state key: found, checked against the credentials already sealed, and created for new local state.

Owns: which key a command uses (see `open_key`), the check that it is the one the sealed credentials name, and
keeping generated key files out of git. Must not: print, prompt, read the environment itself (the workspace
passes it in), or write a key anywhere but a mode-0600 key file beside local state.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Literal, overload

from reconciler.app.workspace import Workspace, key_directory
from reconciler.config.schema import RootFile
from reconciler.state.backend import StateBackend
from reconciler.tokens.store import CredentialStore

if TYPE_CHECKING:
    from reconciler.crypto import StateKey

__all__ = ["git_ignore_keys", "no_note", "open_key", "sealed_key_id", "state_key"]


def no_note(source: str) -> None:
    """For `on_key_created` where a created key needs no note (only commands that may seal announce one)."""


@overload
def state_key(
    ws: Workspace, root: RootFile, backend: StateBackend, *, on_key_created: Callable[[str], None],
    create: Literal[True] = True,
) -> StateKey: ...


@overload
def state_key(
    ws: Workspace, root: RootFile, backend: StateBackend, *, on_key_created: Callable[[str], None], create: bool
) -> StateKey | None: ...


def state_key(
    ws: Workspace, root: RootFile, backend: StateBackend, *, on_key_created: Callable[[str], None], create: bool = True
) -> StateKey | None:
    """The state key, checked against what is already sealed (see `open_key`); with `create` never None (a key
    is made, or an error says why none can be)."""
    return open_key(backend, key_directory(ws, root), ws.environ, ws.environment_name, on_key_created, create=create)


def open_key(
    backend: StateBackend,
    key_dir: Path | None,
    environ: Mapping[str, str],
    environment: str,
    on_key_created: Callable[[str], None],
    *,
    create: bool = True,
) -> StateKey | None:
    """The state key, checked against the credentials already sealed in `backend`.

    A key that is not the one the existing credentials were sealed with is refused before anything is written,
    and no key is generated for a state that already holds sealed credentials (its key file is lost)."""
    from reconciler.crypto import KeyMismatchError, StateKeyError, load_state_key

    sealed_kid = _refuse_unfinished_rotation(backend, key_dir, environment)
    key = load_state_key(
        environ,
        key_file=(key_dir or Path(".")) / f"{environment}.key",
        salt_file=(key_dir or Path(".")) / f"{environment}.kdf.json",
        create=create and sealed_kid is None,
        allow_key_file=key_dir is not None,
    )
    if key is None and not create and sealed_kid is None:
        return None
    if key is None and environ.get("RECONCILER_STATE_PASSPHRASE"):
        raise StateKeyError(
            f"{backend.describe()}: credentials are sealed with key id {sealed_kid}, not with a passphrase "
            "(there is no passphrase salt beside the state)",
            hint="use the key the state was written with; nothing was changed",
        )
    if key is None:
        raise StateKeyError(
            f"{backend.describe()} holds sealed credentials, but there is no state key",
            hint=f"set RECONCILER_STATE_KEY or RECONCILER_STATE_PASSPHRASE, or restore {key_dir}/{environment}.key",
        )
    if sealed_kid is not None and sealed_kid != key.key_id:
        raise KeyMismatchError(
            f"{backend.describe()}: credentials are sealed with key id {sealed_kid}, but the current state key "
            f"(from {key.source}) is {key.key_id}",
            hint="use the key the state was sealed with (after `reconciler state rekey`: the new one); nothing "
            "was changed",
        )
    if key.created and key_dir is not None:
        git_ignore_keys(key_dir)
        on_key_created(key.source)
    return key


def _refuse_unfinished_rotation(backend: StateBackend, key_dir: Path | None, environment: str) -> str | None:
    """The id of the one key the credentials are sealed with (None: none are sealed); an error when a key
    rotation is unfinished (its new key file waits, or records are sealed with two keys)."""
    from reconciler.crypto import KeyFiles, KeyMismatchError

    if key_dir is not None and KeyFiles(key_dir, environment).new.exists():
        raise KeyMismatchError(
            f"{backend.describe()}: a key rotation is unfinished ({KeyFiles(key_dir, environment).new} holds its "
            "new key)",
            hint="finish it: reconciler state rekey; nothing was changed",
        )
    sealed = _sealed_key_ids(backend.credential_store())
    if len(sealed) > 1:
        raise KeyMismatchError(
            f"{backend.describe()}: credentials are sealed with two keys (key ids {sealed[0]} and {sealed[1]}): "
            "a key rotation is unfinished",
            hint="finish it: run `reconciler state rekey` again with the same new-key option and the old key as "
            "the current one; nothing was changed",
        )
    return sealed[0] if sealed else None


def sealed_key_id(store: CredentialStore) -> str | None:
    """The id of the key the credentials are sealed with (None: none are sealed)."""
    sealed = _sealed_key_ids(store)
    return sealed[0] if sealed else None


def _sealed_key_ids(store: CredentialStore) -> list[str]:
    """The distinct key ids of the first and the last credential record, in the store's order: two when a key
    rotation (which re-seals records in that order) was interrupted midway. Two reads, whatever the state's size."""
    addresses = store.addresses()
    found: list[str] = []
    for address in dict.fromkeys(addresses[:1] + addresses[-1:]):
        record = store.get(address)
        blob = (record.tokens or record.pending or record.staged) if record else None
        if blob and str(blob.get("kid")) not in found:
            found.append(str(blob.get("kid")))
    return found


def git_ignore_keys(directory: Path) -> None:
    """`*.key` and `*.key.*` in the state directory's .gitignore (never written through a link planted there)."""
    import os

    from reconciler.statefiles import open_regular, read_regular

    ignore = directory / ".gitignore"
    raw = read_regular(ignore)
    lines = raw.decode(errors="replace").splitlines() if raw is not None else ["# state keys never go into git"]
    missing = [pattern for pattern in ("*.key", "*.key.*") if pattern not in lines]  # *.key.*: a rotation's keys
    if missing:
        with os.fdopen(open_regular(ignore, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), "w") as handle:
            handle.write("\n".join([*lines, *missing]) + "\n")
