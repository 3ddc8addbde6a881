"""Encryption at rest: the state key, and AES-256-GCM sealing bound to where a blob belongs.

Owns: finding the key (RECONCILER_STATE_KEY, RECONCILER_STATE_PASSPHRASE with scrypt and a stored salt, or a
generated key file for local single-user state), key ids, seal/open. Associated data binds each blob to its
lineage, environment, address and client id, so a blob copied elsewhere does not open.
Must not: log, print, or put key or plaintext material in exception messages.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from reconciler.errors import ReconcilerError
from reconciler.statefiles import read_regular

__all__ = [
    "KeyFiles",
    "KeyMismatchError",
    "StateKey",
    "StateKeyError",
    "derive_key",
    "generate_key_file",
    "load_state_key",
    "open_blob",
    "parse_key",
    "read_key_file",
    "seal",
]

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1


class StateKeyError(ReconcilerError):
    """The state key is missing, malformed, or not the key the state was sealed with."""


class KeyMismatchError(StateKeyError):
    """A key is at hand, but the credentials are sealed with another (or, mid-rotation, with two)."""


@dataclass(frozen=True)
class StateKey:
    key: bytes = field(repr=False)
    source: str  # "RECONCILER_STATE_KEY", "RECONCILER_STATE_PASSPHRASE" or the key file's path
    created: bool = False

    # Both computed once per key, not once per blob: a status opens one blob per installation.
    @cached_property
    def key_id(self) -> str:
        return hashlib.sha256(b"reconciler-key-id" + self.key).hexdigest()[:16]

    @cached_property
    def _cipher(self) -> AESGCM:
        return AESGCM(self.key)


@dataclass(frozen=True)
class KeyFiles:
    """Where one environment's key material lives beside local state: the key file and the passphrase salt, and
    for a key rotation the new key (until it replaces the key file) and the retired one (kept until removed)."""

    directory: Path
    environment: str

    @property
    def key(self) -> Path:
        return self.directory / f"{self.environment}.key"

    @property
    def new(self) -> Path:
        return self.directory / f"{self.environment}.key.new"

    @property
    def old(self) -> Path:
        return self.directory / f"{self.environment}.key.old"

    @property
    def salt(self) -> Path:
        return self.directory / f"{self.environment}.kdf.json"


def load_state_key(
    environ: Mapping[str, str], *, key_file: Path, salt_file: Path, create: bool, allow_key_file: bool = True
) -> StateKey | None:
    """The key to seal and open credentials. None when no key exists and `create` is False."""
    if environ.get("RECONCILER_STATE_KEY"):
        return parse_key(environ["RECONCILER_STATE_KEY"], "RECONCILER_STATE_KEY")
    if environ.get("RECONCILER_STATE_PASSPHRASE"):
        return derive_key(environ["RECONCILER_STATE_PASSPHRASE"], "RECONCILER_STATE_PASSPHRASE", salt_file, create=create)
    if not allow_key_file:
        raise StateKeyError(
            "this backend needs an explicit key", hint="set RECONCILER_STATE_KEY or RECONCILER_STATE_PASSPHRASE"
        )
    found = read_key_file(key_file)
    if found is not None or not create:
        return found
    # None: another process created it meanwhile, and that one is the key
    return generate_key_file(key_file) or read_key_file(key_file)


def parse_key(value: str, source: str) -> StateKey:
    """A key given as base64 of 32 bytes (`source` names the variable; the value is never quoted)."""
    try:
        key = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise StateKeyError(f"{source} is not valid base64", hint="generate one: openssl rand -base64 32") from None
    if len(key) != 32:
        raise StateKeyError(f"{source} must decode to 32 bytes, not {len(key)}", hint="generate one: openssl rand -base64 32")
    return StateKey(key, source)


def derive_key(passphrase: str, source: str, salt_file: Path, *, create: bool) -> StateKey | None:
    """The key scrypt derives from `passphrase` with the salt stored in `salt_file` (created when `create`; None
    when there is no salt and `create` is False)."""
    salt = _salt(salt_file, create)
    if salt is None:
        return None
    kdf = Scrypt(salt=salt, length=32, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P)
    return StateKey(kdf.derive(passphrase.encode()), source)


def generate_key_file(path: Path) -> StateKey | None:
    """A fresh random key written to `path` whole (mode 0600), or None when `path` exists already."""
    key = AESGCM.generate_key(bit_length=256)
    if not _create_whole(path, (base64.b64encode(key).decode() + "\n").encode()):
        return None
    return StateKey(key, str(path), created=True)


def read_key_file(path: Path) -> StateKey | None:
    """The key in the key file `path` (None: no such file)."""
    try:
        text = read_regular(path)
        key = base64.b64decode(text.strip(), validate=True) if text is not None else b""
    except (OSError, binascii.Error, ValueError):
        raise StateKeyError(f"{path}: not a readable state key file") from None
    if text is None:
        return None
    if len(key) != 32:
        raise StateKeyError(f"{path}: a state key must be 32 bytes")
    return StateKey(key, str(path))


def _create_whole(path: Path, data: bytes) -> bool:
    """Create `path` holding `data` (mode 0600) so that it never exists half-written — a crash mid-way leaves no
    file, never an empty key that wedges every later run. False when `path` exists already (another process)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.{secrets.token_hex(4)}.tmp{path.suffix}")  # *.key stays ignored
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.link(tmp, path)  # atomic, and refuses to replace an existing file
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return True


def _salt(salt_file: Path, create: bool) -> bytes | None:
    try:
        raw = read_regular(salt_file)
        if raw is not None:
            return base64.b64decode(json.loads(raw)["salt"])
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        raise StateKeyError(f"{salt_file}: unreadable passphrase salt") from None
    if not create:
        return None
    salt = secrets.token_bytes(16)
    payload = {"kdf": "scrypt", "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P, "salt": base64.b64encode(salt).decode()}
    if not _create_whole(salt_file, (json.dumps(payload) + "\n").encode()):
        return _salt(salt_file, create=False)  # another process won
    return salt


def associated_data(lineage: str, environment: str, address: str, client_id: str) -> bytes:
    return "\n".join(("reconciler/v1", lineage, environment, address, client_id)).encode()


def seal(key: StateKey, plaintext: bytes, aad: bytes) -> dict[str, str]:
    nonce = secrets.token_bytes(12)
    ciphertext = key._cipher.encrypt(nonce, plaintext, aad)
    return {
        "alg": "AES-256-GCM",
        "kid": key.key_id,
        "nonce": base64.b64encode(nonce).decode(),
        "ciphertext": base64.b64encode(ciphertext).decode(),
    }


def open_blob(key: StateKey, blob: Mapping[str, str], aad: bytes, where: str) -> bytes:
    if blob.get("kid") != key.key_id:
        raise KeyMismatchError(
            f"{where}: sealed with key id {blob.get('kid')}, but the current state key is {key.key_id}",
            hint=f"use the key the state was sealed with, not the one from {key.source} (after `reconciler state "
            "rekey`: the new one); nothing was changed",
        )
    try:
        nonce = binascii.a2b_base64(blob["nonce"])  # what base64.b64decode does, without its checks of type
        ciphertext = binascii.a2b_base64(blob["ciphertext"])
        return key._cipher.decrypt(nonce, ciphertext, aad)
    except (InvalidTag, KeyError, ValueError, binascii.Error):
        raise StateKeyError(
            f"{where}: sealed credentials do not open here (copied from another address, or tampered with)"
        ) from None
