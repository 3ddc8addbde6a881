"""README's "Cyclr" section, as printed: its YAML (the platform and partner, with the sandbox's endpoints) and every
`reconciler` command of its first real-world run, in order, on a terminal against the sandbox's Cyclr API — with
what the prose asks for in between (the include line import prints, a new tenant, drift in the console, a tenant
removed) — exits as the section says, and no secret is ever shown."""

from __future__ import annotations

import json
import os
import re
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from reconciler.sandbox import SandboxServer, load_seed
from tests.terminal import run_in_terminal

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "cyclr"
ENV = {"CYCLR_CLIENT_ID": "readme-partner", "CYCLR_CLIENT_SECRET": "readme-cyclr-secret-4f1e9d-UNIQUE",
       "CYCLR_LIBRARY_CLIENT_ID": "readme-library-app", "CYCLR_LIBRARY_CLIENT_SECRET": "readme-library-secret-8b2c7a-UNIQUE"}
APPLY_PROMPT = {"Apply these changes? [y/N]: ": "yes"}

# How each command of the section exits, in its order (test_the_step_list_is_the_sections keeps them in sync).
STEPS = {
    "reconciler validate": 0,
    "reconciler import --dry-run": 0,
    "reconciler import --write tenants": 0,
    "reconciler plan --detailed-exitcode": 0,
    "reconciler apply --auto-approve --auth-mode defer": 3,
    "reconciler authorize": 0,
    "reconciler plan --refresh": 0,
    "reconciler apply --refresh": 0,
    "reconciler apply --allow-delete account.globex": 0,
}


def _section() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    return readme.split("\n## Cyclr\n", 1)[1].split("\n## ", 1)[0]


def _blocks(kind: str) -> list[str]:
    """The section's fenced blocks of one kind, list-item indentation removed."""
    found = re.findall(rf"^( *)```{kind}\n(.*?)^\1```", _section(), re.MULTILINE | re.DOTALL)
    return [textwrap.dedent(body) for _, body in found]


def _commands() -> list[str]:
    """The `reconciler` commands of the section's ```sh blocks, in order, without their comments."""
    lines = [line.strip() for block in _blocks("sh") for line in block.splitlines()]
    return [line.split("  #", 1)[0].strip() for line in lines if line.startswith("reconciler ")]


def _config(url: str) -> str:
    """The section's YAML up to its tenants (the first run starts with none), its commented endpoints line
    pointed at the sandbox."""
    text = _blocks("yaml")[0].split("\ntenants:", 1)[0] + "\n"
    endpoints = re.compile(r"^  # endpoints: \{api_url: (\S+), service_url: (\S+)\}.*$", re.MULTILINE)
    assert endpoints.search(text), text
    return "version: 1\n" + endpoints.sub(f'  endpoints: {{api_url: "{url}", service_url: "{url}"}}', text)


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SandboxServer]:
    """The sandbox seeded with examples/cyclr's seed (the partner, the library app, the account globex)."""
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    with SandboxServer() as server:
        seed = tmp_path / "seed.yaml"
        seed.write_text((EXAMPLE / "sandbox.yaml").read_text().replace("http://127.0.0.1:8765", server.url))
        load_seed(server.provider, seed, server.cyclr)
        yield server


def _between(command: str, workdir: Path, server: SandboxServer, before: str) -> None:
    """What the section's prose asks for before `command`."""
    if command == "reconciler plan --detailed-exitcode":  # add the include: line import printed
        assert "- tenants/*.yaml" in before
        with (workdir / "reconciler.yaml").open("a") as root:
            root.write("include: [tenants/*.yaml]\n")
    elif command == "reconciler apply --auto-approve --auth-mode defer":  # a new tenant
        (workdir / "tenants" / "acme.yaml").write_text((EXAMPLE / "tenants" / "acme.yaml").read_text())
    elif command == "reconciler plan --refresh":  # signed out in the console
        state = json.loads((workdir / "state" / "default.json").read_text())["resources"]
        connector = state["installation.acme.ado-main"]["account_connector"]["account_connector_id"]
        answer = httpx.post(f"{server.url}/_sandbox/cyclr/account-connectors/{connector}/deauthenticate", json={})
        assert answer.status_code == 200, answer.text
    elif command == "reconciler apply --allow-delete account.globex":  # the tenant removed from the configuration
        (workdir / "tenants" / "globex.yaml").unlink()


def test_the_step_list_is_the_sections() -> None:
    """The section's commands are exactly the ones the next test runs, in the section's order."""
    assert _commands() == list(STEPS)


def test_the_first_real_world_run_works_as_printed(sandbox: SandboxServer, tmp_path: Path) -> None:
    """Import first ("No changes" after), a tenant created and deferred in CI then signed in by `authorize`, a sign-out
    in the console planned back and applied by a refresh, an account deleted only when named; no secret shown."""
    workdir = tmp_path / "partner"
    workdir.mkdir()
    (workdir / "reconciler.yaml").write_text(_config(sandbox.url))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ADO_", "ENTRA_", "RECONCILER_", "BROWSER"))}
    env |= {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}", "BROWSER": "reconciler sandbox approve %s",
            "RECONCILER_CACHE_DIR": os.environ["RECONCILER_CACHE_DIR"]}
    outputs: dict[str, str] = {}
    before = ""
    for command in _commands():
        _between(command, workdir, sandbox, before)
        code, before = run_in_terminal(command, workdir, env, APPLY_PROMPT)
        outputs[command] = before
        assert code == STEPS[command], f"$ {command}\n{before}"
    assert "No changes. 3 resources match the configuration." in outputs["reconciler plan --detailed-exitcode"]
    assert "sign-in due" in outputs["reconciler apply --auto-approve --auth-mode defer"]
    assert "signed in through the platform (authenticated)" in outputs["reconciler authorize"]
    assert "installation.acme.ado-main must be re-authorized" in outputs["reconciler plan --refresh"]
    assert "Apply complete: 1 completed." in outputs["reconciler apply --refresh"]
    assert "account.globex: deleted" in outputs["reconciler apply --allow-delete account.globex"]
    assert set(sandbox.cyclr.accounts) == {"acme"}
    issued = httpx.get(f"{sandbox.url}/_sandbox/cyclr/issued").json()["issued"]
    secrets = [ENV["CYCLR_CLIENT_SECRET"], ENV["CYCLR_LIBRARY_CLIENT_SECRET"], *issued]
    shown = "".join(outputs.values())
    assert issued and [s for s in secrets if s in shown] == []
