"""Shared fixtures: a CLI runner with separate stdout/stderr, directory snapshots, golden-file updating."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from reconciler.cli import cli
from reconciler.sandbox import SandboxServer

pytest_plugins = ("tests.cyclr_support", "tests.service_support")  # Cyclr: cyclr_sandbox, cyclr_dir; service: service_world

UPDATE_GOLDEN = os.environ.get("UPDATE_GOLDEN") == "1"
# The parse cache of every CLI run in the tests (in-process and subprocesses) stays in a throwaway directory.
os.environ["RECONCILER_CACHE_DIR"] = tempfile.mkdtemp(prefix="reconciler-test-cache-")


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under `root` with its bytes, to prove a command wrote nothing."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def run(args: list[str], env: Mapping[str, str] | None = None, stdin: str | None = None) -> Result:
    """Run the CLI in-process with exactly `env` as the environment variables the tool may see."""
    runner = CliRunner()
    clean = {
        key: None for key in os.environ if key.startswith(("ADO_", "RECONCILER_", "ENTRA_")) and key != "RECONCILER_CACHE_DIR"
    }
    return runner.invoke(cli, args, env={**clean, **(env or {})}, input=stdin, catch_exceptions=False)


def read_env_file(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if line and not line.startswith("#"))
    return dict(pairs)


@pytest.fixture
def write_config(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Write files (relative path -> text) into a fresh config directory and return it."""

    def write(files: Mapping[str, str | bytes]) -> Path:
        for rel, content in files.items():
            target = tmp_path / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                target.write_bytes(content)
            else:
                target.write_text(content)
        return tmp_path

    return write


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    """A sandbox provider serving on a free 127.0.0.1 port for the test's duration."""
    with SandboxServer() as server:
        yield server


@pytest.fixture
def sandbox_config(sandbox: SandboxServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """A config directory (the working directory) for the sandbox, its apps registered, a scripted browser
    answering consent pages, and `write(installations, extra="")` for reconciler.yaml."""
    import webbrowser

    from tests.sandbox_support import ScriptedBrowser, config_text, free_port, register

    port = free_port()
    register(sandbox, port)
    browser = ScriptedBrowser()
    monkeypatch.setattr(webbrowser, "open", browser)
    monkeypatch.chdir(tmp_path)

    def write(installations: str, extra: str = "") -> None:
        (tmp_path / "reconciler.yaml").write_text(config_text(sandbox.url, port, installations) + extra)

    return sandbox, tmp_path, write, browser


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """A real PostgreSQL 15 started for this test session on a free 127.0.0.1 port, stopped afterwards."""
    from tests.postgres_server import PostgresServer
    from tests.sandbox_support import free_port

    server = PostgresServer(free_port()).start()
    try:
        yield server.dsn
    finally:
        server.stop()


@pytest.fixture
def pg_database(postgres_dsn: str) -> Iterator[str]:
    """A fresh, empty database on the session's server; its DSN."""
    import uuid

    import psycopg

    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield postgres_dsn.replace("dbname=postgres", f"dbname={name}")
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")
