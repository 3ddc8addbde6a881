"""Support for the key rotation tests (tests/test_rekey.py, tests/reliability/test_crash_rekey.py): states with
three authorized installations, the key ids and tokens their records hold, and the secrets searched for."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from reconciler.crypto import StateKey
from reconciler.sandbox import SandboxServer
from reconciler.state.local import LocalBackend
from reconciler.state.model import InstallationRecord
from reconciler.tokens.model import TokenSet
from reconciler.tokens.store import LocalCredentialStore
from reconciler.tokens.vault import Vault
from tests.conftest import run
from tests.sandbox_support import APPLY, ENV, installation

OLD_KEY = base64.b64encode(b"old-team-key-0123456789abcdef012").decode()
NEW_KEY = base64.b64encode(b"new-team-key-0123456789abcdef012").decode()
OTHER_KEY = base64.b64encode(b"another-key-0123456789abcdef0123").decode()
OLD_PASSPHRASE = "correct horse battery staple old"
NEW_PASSPHRASE = "tr0ub4dor and 3 more new words"
THREE = (
    installation("acme", "ado", "legacy", "acme-org", "Platform", ["vso.work_full", "vso.project"])
    + installation("globex", "ado", "legacy", "globex", "Operations", ["vso.work_full", "vso.project"])
    + installation("initech", "ado", "entra", "acme-org", "Web", ["vso.work_full", "vso.project"])
)
REKEY = ["-C", ".", "state", "rekey"]
SECRET_VALUES = [OLD_KEY, NEW_KEY, OTHER_KEY, OLD_PASSPHRASE, NEW_PASSPHRASE]


def apply_three(sandbox_config):  # type: ignore[no-untyped-def]
    """Three authorized installations in local state keyed by a generated key file."""
    sandbox, directory, write, _ = sandbox_config
    write(THREE)
    result = run(APPLY, ENV)
    assert result.exit_code == 0, result.stderr
    return sandbox, directory, write


def apply_three_on_postgres(sandbox_config, pg_database: str):  # type: ignore[no-untyped-def]
    """Three authorized installations in PostgreSQL state, sealed with OLD_KEY."""
    sandbox, directory, write, _ = sandbox_config
    write(THREE, extra="backend:\n  type: postgres\n  dsn: ${env:RECONCILER_PG_DSN}\n")
    env = {**ENV, "RECONCILER_PG_DSN": pg_database}
    assert run(APPLY, {**env, "RECONCILER_STATE_KEY": OLD_KEY}).exit_code == 0
    return sandbox, directory, env, pg_database


def key_of(text: str) -> StateKey:
    return StateKey(base64.b64decode(text.strip()), "test")


def file_key(path: Path) -> str:
    return path.read_text().strip()


def record_kids(directory: Path) -> dict[str, set[str]]:
    """Each credential record's key ids (of every blob it holds)."""
    found = {}
    for path in sorted((directory / "state" / "default.credentials").glob("*.json")):
        record = json.loads(path.read_text())
        found[path.stem] = {record[p]["kid"] for p in ("tokens", "pending", "staged") if p in record}
    return found


def tokens_under(directory: Path, key: StateKey, only: set[str] | None = None) -> dict[str, TokenSet]:
    """The tokens every authorized installation's record (of those in `only`) opens to under `key`."""
    backend = LocalBackend(directory / "state", "default")
    doc = backend.read()
    assert doc is not None
    vault = Vault(
        LocalCredentialStore(directory / "state", "default"), key, lineage=doc.lineage, environment="default"
    )
    opened = {}
    for address, record in doc.resources.items():
        if (
            isinstance(record, InstallationRecord)
            and record.status == "authorized"
            and (only is None or address in only)
        ):
            sealed = vault.record(address)
            assert sealed is not None
            opened[address] = vault.current_tokens(address, record.client_id, sealed)
    return opened


def works(sandbox: SandboxServer, tokens: TokenSet) -> bool:
    """The sandbox still honours the refresh token (its grant is live)."""
    assert tokens.refresh_token is not None
    with sandbox.provider.lock:
        grant = sandbox.provider.by_refresh.get(tokens.refresh_token.get_secret_value())
    return grant is not None and not grant.revoked


def no_secrets(sandbox: SandboxServer, *texts: str, extra: tuple[str, ...] = ()) -> None:
    """No key, passphrase or token in `texts` (nor a token in the state files, unsealed)."""
    haystack = "\n".join(texts)
    for value in (*SECRET_VALUES, *extra, *sandbox.provider.issued):
        assert value not in haystack, f"a secret ({value[:6]}...) was printed"


def one_line_error(result, needle: str) -> None:  # type: ignore[no-untyped-def]
    assert result.exit_code == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and needle in lines[0], result.stderr
    assert len(lines) <= 2 and "Traceback" not in result.stderr


def pg_kids(dsn: str) -> dict[str, set[str]]:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT address, tokens, pending, staged FROM reconciler_credentials").fetchall()
    return {row[0]: {blob["kid"] for blob in row[1:] if blob} for row in rows}
