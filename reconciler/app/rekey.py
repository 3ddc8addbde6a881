"""Key rotation: re-seal every credential record of one state under a new state key, resumably.

Owns: where the new key comes from (a variable holding a key or a passphrase — named, never given as a value — or
a fresh key file beside local state), the check that every sealed blob names the current or the new key before
anything is written, re-sealing record by record, and retiring the old key file afterwards. A blob that no client
id the state document names opens (left by an interrupted step; no command could ever use it) is dropped, and
the rotation says so.
Must not: print, prompt, read the environment itself (the workspace passes it in), or write a key anywhere but a
mode-0600 key file beside local state, or plaintext anywhere.

Crash safety. The whole rotation runs under the state lock. Each blob carries the id of the key that sealed it
(`kid`: a truncated SHA-256 of the key, never the key), and each record is replaced in one compare-and-swap write
(a local file rename, one PostgreSQL UPDATE), so at every moment each record is wholly under the old key or wholly
under the new one. The new key exists outside this process before the first record is re-sealed — in the variable
the user names (and names again to resume) or in `<env>.key.new` — so a run killed at any point leaves state that
the two keys open, and running the command again finds both and carries on where it stopped. Only when every
record is under the new key is the key file switched: the old key is first copied to `<env>.key.old`, then the
new key file replaces `<env>.key` in one rename (or, for a new key held in a variable, the old key file is
removed). Commands other than this one refuse state whose rotation is unfinished (see `reconciler.app.keys.open_key`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from reconciler.app.keys import git_ignore_keys
from reconciler.app.workspace import Workspace, key_directory, locked_state, open_backend, read_root
from reconciler.crypto import (
    KeyFiles,
    StateKey,
    StateKeyError,
    derive_key,
    generate_key_file,
    load_state_key,
    parse_key,
    read_key_file,
)
from reconciler.errors import StaleStateError, UsageError
from reconciler.state.model import InstallationRecord, StateDocument
from reconciler.statefiles import atomic_write, read_regular
from reconciler.tokens.custodian import TokenCustodian
from reconciler.tokens.model import BLOB_PARTS
from reconciler.tokens.store import CredentialStore
from reconciler.tokens.vault import Vault

__all__ = ["NewKey", "Rotation", "rekey_state"]

VARIABLE_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")


@dataclass(frozen=True)
class NewKey:
    """Where the new key comes from: the variable holding it (base64 of 32 bytes), the variable holding a passphrase
    to derive it from, or neither: a fresh random key file beside local state."""

    key_env: str | None = None
    passphrase_env: str | None = None

    def describe(self) -> str:
        if self.key_env:
            return f"--new-key-env {self.key_env}"
        if self.passphrase_env:
            return f"--new-passphrase-env {self.passphrase_env}"
        return "a generated key file"


@dataclass
class Rotation:
    """What a rotation did: the key ids (never keys) and where each key came from, the records re-sealed and those
    found already under the new key (a resumed run), blobs dropped because no command could ever open them, and
    where the old key file went. `changed` is False when there was nothing to do."""

    new_kid: str
    new_source: str
    old_kid: str | None = None
    old_source: str | None = None
    resealed: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    retired_key_file: Path | None = None
    key_file: Path | None = None  # the key file that now holds the new key (a generated one)
    waiting_for: Path | None = None  # nothing done: a new key file waits until this retired one is deleted

    @property
    def changed(self) -> bool:
        return bool(self.resealed or self.dropped or self.retired_key_file or self.key_file)


def rekey_state(ws: Workspace, new: NewKey, *, lock_timeout: float) -> Rotation:
    """Re-seal every credential record of the workspace's state under the key `new` names. Refused, with nothing
    written, when a blob is sealed with neither the current key nor the new one; a no-op when the new key is the
    current one and every record is under it. Run again after an interruption with the same `new` to finish."""
    root = read_root(ws)
    backend = open_backend(ws, root)
    key_dir = key_directory(ws, root)
    files = KeyFiles(key_dir or Path("."), ws.environment_name)
    _check_new_key_options(new, key_dir, files)
    missing = "there is no state yet: nothing to re-key"
    with locked_state(backend, "state rekey", timeout=lock_timeout, missing=missing) as doc:
        store = backend.credential_store()
        old = load_state_key(ws.environ, key_file=files.key, salt_file=files.salt, create=False,
                             allow_key_file=key_dir is not None)
        target = _new_key(new, ws.environ, files, old, create=False)
        keys = {k.key_id: k for k in (old, target) if k is not None}
        _survey(store, keys, old, target, backend.describe())
        retire = old is not None and key_dir is not None and old.source == str(files.key)
        if retire and _retired_slot_taken(files):
            if new == NewKey() and not files.new.exists():  # a finished rotation, maybe run again after a kill
                return _finished_earlier(store, old, files)  # type: ignore[arg-type]
            raise UsageError(
                f"{files.old} holds the key retired by an earlier rotation",
                hint="delete it once no copy of the state (a pulled copy, a backup) needs it, then run again",
            )
        if target is None:  # a generated key file, or a passphrase without a salt yet: made only now
            target = _new_key(new, ws.environ, files, old, create=True)
            assert target is not None
            keys[target.key_id] = target
        rotation = Rotation(target.key_id, target.source, old.key_id if old else None, old.source if old else None)
        vault = Vault(store, target, lineage=doc.lineage, environment=doc.environment)
        _reseal_all(store, doc, vault, keys, rotation)
        if retire and old is not None and old.key_id != target.key_id:  # the same key: nothing to retire
            _retire_key_file(files, promote=new == NewKey(), rotation=rotation)
        return rotation


def _check_new_key_options(new: NewKey, key_dir: Path | None, files: KeyFiles) -> None:
    """The options name one source — by a variable's name, never shown unless it looks like one (a value typed in
    its place must not be echoed) — and a generated key only where key files live (local state)."""
    for option, name in (("--new-key-env", new.key_env), ("--new-passphrase-env", new.passphrase_env)):
        if name is not None and not VARIABLE_NAME.fullmatch(name):
            raise UsageError(
                f"{option} takes the name of an environment variable (A-Z, 0-9 and _), not a value; the one given "
                "is not shown",
                hint=f"export NEW_STATE_KEY=... and pass {option} NEW_STATE_KEY",
            )
    if new.key_env and new.passphrase_env:
        raise UsageError("give one of --new-key-env and --new-passphrase-env, not both")
    if new == NewKey() and key_dir is None:
        raise UsageError(
            "shared state keeps no key file: say where the new key comes from",
            hint="put it in a variable and pass --new-key-env VAR (or --new-passphrase-env VAR)",
        )
    if new != NewKey() and files.new.exists():
        raise UsageError(
            f"{files.new} holds the new key of an unfinished rotation to a generated key file",
            hint="finish that one first: run `reconciler state rekey` without --new-key-env/--new-passphrase-env",
        )


def _new_key(
    new: NewKey, environ: Mapping[str, str], files: KeyFiles, old: StateKey | None, *, create: bool
) -> StateKey | None:
    """The new key. A generated one: the key file of an unfinished rotation (`<env>.key.new`), or — with `create`
    — a fresh one written there. A passphrase's key needs the salt, created with `create` when there is none.
    None when it cannot exist yet without writing (then no record can be sealed with it)."""
    if new.key_env:
        return parse_key(_variable(environ, new.key_env, "key"), new.key_env)
    if new.passphrase_env:
        return derive_key(
            _variable(environ, new.passphrase_env, "passphrase"),
            new.passphrase_env,
            files.salt,
            create=create,
        )
    if old is not None and old.source != str(files.key):
        raise UsageError(
            f"the current key comes from {old.source}, not from a key file: say where the new key comes from",
            hint="put it in a variable and pass --new-key-env VAR (or --new-passphrase-env VAR)",
        )
    if old is None and not files.new.exists():
        raise StateKeyError(
            f"there is no state key at {files.key} to rotate from",
            hint="set RECONCILER_STATE_KEY or RECONCILER_STATE_PASSPHRASE to the current key; nothing was changed",
        )
    found = read_key_file(files.new)
    if found is not None or not create:
        return found
    made = generate_key_file(files.new)
    if made is None:  # cannot happen under the lock; never overwrite a key
        raise StateKeyError(f"{files.new} appeared meanwhile; nothing was re-sealed", hint="run again")
    git_ignore_keys(files.directory)
    return made


def _variable(environ: Mapping[str, str], name: str, what: str) -> str:
    value = environ.get(name)
    if not value:
        raise UsageError(
            f"{name} is not set (it should hold the new {what})", hint=f"export {name}=... and run again"
        )
    return value


def _survey(
    store: CredentialStore, keys: Mapping[str, StateKey], old: StateKey | None, new: StateKey | None, where: str
) -> None:
    """Before anything is written: every sealed blob names the current or the new key (by key id), or the
    rotation is refused — a wrong current key must not leave records that nothing opens."""
    for address in store.addresses():
        record = store.get(address)
        for part in BLOB_PARTS:
            blob = getattr(record, part) if record else None
            if blob is not None and str(blob.get("kid")) not in keys:
                raise StateKeyError(
                    f"{where}: the {part} of {address} are sealed with key id {blob.get('kid')}, which is neither "
                    f"the current key ({_describe(old)}) nor the new one ({_describe(new)})",
                    hint="set the key the state was sealed with as the current key; nothing was changed",
                )


def _describe(key: StateKey | None) -> str:
    return f"key id {key.key_id} from {key.source}" if key is not None else "none found"


def _retired_slot_taken(files: KeyFiles) -> bool:
    """Whether `<env>.key.old` holds another key than the one about to retire (it is never overwritten); holding
    the same one means a run was interrupted while retiring it."""
    kept = read_regular(files.old)
    return kept is not None and kept != read_regular(files.key)


def _finished_earlier(store, current: StateKey, files: KeyFiles) -> Rotation:  # type: ignore[no-untyped-def]
    """Every record is under the key file's key (the survey checked each names a known key, and the only one known
    is the current key), and `<env>.key.old` holds the key an earlier rotation retired: nothing to do. A new
    rotation waits until that file is deleted, so that the old key is never lost unseen."""
    return Rotation(current.key_id, current.source, already=store.addresses(), waiting_for=files.old)


def _reseal_all(
    store: CredentialStore, doc: StateDocument, vault: Vault, keys: Mapping[str, StateKey], rotation: Rotation
) -> None:
    """Each record under the vault's key, one compare-and-swap write each, in the store's order."""
    for address in store.addresses():
        for _ in range(3):  # nothing else writes under the lock; a moved generation is decided again
            try:
                _reseal_record(store, doc, vault, keys, address, rotation)
                break
            except StaleStateError:
                continue
        else:
            raise StaleStateError(
                f"credentials of {address} keep changing while being re-sealed", hint="run again"
            )


def _reseal_record(
    store: CredentialStore,
    doc: StateDocument,
    vault: Vault,
    keys: Mapping[str, StateKey],
    address: str,
    rotation: Rotation,
) -> None:
    resealed = TokenCustodian(vault).reseal(address, _client_ids(doc, address), keys)
    if resealed is None:
        return
    rotation.dropped.extend(f"{address} ({part})" for part in resealed.dropped)
    {"already": rotation.already, "resealed": rotation.resealed}.get(resealed.outcome, []).append(address)


def _client_ids(doc: StateDocument, address: str) -> list[str]:
    """The client ids the document names for `address`: those its blobs may be sealed for."""
    record = doc.resources.get(address)
    if not isinstance(record, InstallationRecord):
        return []
    ids = [record.client_id]
    if record.pending is not None and record.pending.client_id not in ids:
        ids.append(record.pending.client_id)
    return ids


def _retire_key_file(files: KeyFiles, *, promote: bool, rotation: Rotation) -> None:
    """Every record is under the new key: keep the old key file as `<env>.key.old`, then put the generated new key
    in its place with one rename (`promote`) or remove it (the new key is held elsewhere). A crash in between
    leaves `<env>.key` and `<env>.key.old` equal: the next run sees an unfinished rotation and finishes it."""
    current = read_regular(files.key)
    if current is not None and read_regular(files.old) != current:
        atomic_write(files.old, current)
    if promote:
        os.replace(files.new, files.key)
        rotation.key_file = files.key
    else:
        files.key.unlink(missing_ok=True)
    _fsync_directory(files.directory)
    rotation.retired_key_file = files.old


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
