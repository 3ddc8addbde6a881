"""A newcomer's first hour, from the top of README.md: `make demo` runs cleanly or fails clearly, `make sandbox`
says how to follow the tour, and every command of README's tour works as shown against the quickstart."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.sandbox import SandboxServer, load_seed
from tests.sandbox_support import all_text_under, free_port
from tests.terminal import LIMIT, run_in_terminal

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "examples" / "quickstart"
CYCLR = ROOT / "examples" / "cyclr"
SERVICE = ROOT / "examples" / "service"
BIN = Path(sys.executable).parent
API_PORT, CALLBACK_PORT = 8765, 8766  # what the quickstart's reconciler.yaml and sandbox.yaml name
PROMPT = "? [y/N]: "

# How each command of README's tour exits, in README's order (test_the_tour_list_is_readmes keeps them in sync).
TOUR_EXITS = {
    "reconciler -C examples/quickstart validate": 0,
    "env -u ADO_CLIENT_SECRET reconciler -C examples/quickstart validate": 0,
    "reconciler -C examples/quickstart plan": 0,
    "reconciler -C examples/quickstart apply": 0,
    "reconciler -C examples/quickstart apply --auto-approve --auth-mode defer --replace installation.globex.ado-main": 3,
    "reconciler -C examples/quickstart authorize": 0,
    "reconciler -C examples/quickstart state list": 0,
    "reconciler -C examples/quickstart state show installation.acme.ado-main": 0,
    "reconciler -C examples/quickstart plan --detailed-exitcode": 0,
}


def _exported(script: Path, prefix: str) -> dict[str, str]:
    """The variables starting with `prefix` that a script exports, with the defaults it gives them."""
    return dict(re.findall(rf'export ({prefix}\w+)="\$\{{\1:-([^}}]+)\}}"', script.read_text()))


def _quickstart_env() -> dict[str, str]:
    """The credentials examples/quickstart/env.sh exports (and `make sandbox` prints)."""
    return _exported(QUICKSTART / "env.sh", "ADO_CLIENT_")


def _clean_env(**extra: str) -> dict[str, str]:
    """This environment without the tool's own variables, the project's .venv first on PATH, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ADO_", "ENTRA_", "CYCLR_", "RECONCILER_", "BROWSER"))}
    env["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    env["RECONCILER_CACHE_DIR"] = os.environ["RECONCILER_CACHE_DIR"]
    return {**env, **extra}


def _tour() -> list[tuple[str, list[str]]]:
    """README's tour as (command, the output lines shown after it), from its ```console blocks."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    tour = readme.split("## A five-minute tour", 1)[1].split("\n## ", 1)[0]
    commands: list[tuple[str, list[str]]] = []
    for block in re.findall(r"^```console\n(.*?)^```", tour, re.MULTILINE | re.DOTALL):
        for line in block.splitlines():
            if line.startswith("$ "):
                commands.append((line[2:].split("  #", 1)[0].strip(), []))
            elif commands:
                commands[-1][1].append(line)
    return commands


def _normal(line: str) -> str:
    return " ".join(line.split())


def _shown_in_order(shown: list[str], output: str) -> list[str]:
    """The shown lines missing from `output`, in order: `...` alone skips lines, a line ending in `...` is a
    prefix, blank lines are ignored, runs of whitespace compare equal."""
    actual = [_normal(line) for line in output.splitlines()]
    missing, at = [], 0
    for line in (_normal(s) for s in shown):
        if line in ("", "..."):
            continue
        matches = (lambda a, p=line[:-3]: a.startswith(p)) if line.endswith("...") else (lambda a, w=line: a == w)
        found = next((i for i in range(at, len(actual)) if matches(actual[i])), None)
        if found is None:
            missing.append(line)
        else:
            at = found + 1
    return missing


def _copy_example(example: Path, root: Path, ports: dict[int, int]) -> Path:
    """An example (without what runs leave behind) under `root`'s examples/, the ports its configuration and seed
    name moved as `ports` says."""
    target = root / "examples" / example.name
    shutil.copytree(example, target, ignore=shutil.ignore_patterns("state", ".reconciler", "globex.yaml"))
    for name in ("reconciler.yaml", "sandbox.yaml"):
        path = target / name
        text = path.read_text()
        for old, new in ports.items():
            text = text.replace(f"127.0.0.1:{old}", f"127.0.0.1:{new}")
        path.write_text(text)
    return target


def _copy_quickstart(root: Path, api_port: int = API_PORT, callback_port: int = CALLBACK_PORT) -> Path:
    """examples/quickstart (no state) under `root`, its ports moved to the given ones."""
    return _copy_example(QUICKSTART, root, {API_PORT: api_port, CALLBACK_PORT: callback_port})


@pytest.fixture
def tour_sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[SandboxServer, int]]:
    """A sandbox seeded like `make sandbox`, on a free port, and the quickstart copied under tmp_path to use it."""
    for key, value in _quickstart_env().items():
        monkeypatch.setenv(key, value)
    with SandboxServer() as server:
        callback_port = free_port()
        copy = _copy_quickstart(tmp_path, server.port, callback_port)
        load_seed(server.provider, copy / "sandbox.yaml")
        yield server, callback_port


def _demo(root: Path, api_port: int, callback_port: int) -> subprocess.CompletedProcess[str]:
    """`make demo`'s script, from a copy of the quickstart under `root` whose endpoints name the given ports (the
    repository's own state is untouched, and the test needs no fixed port free)."""
    _copy_quickstart(root, api_port, callback_port)
    return subprocess.run(["bash", "examples/quickstart/demo.sh"], cwd=root, env=_clean_env(), capture_output=True,
                          text=True, timeout=LIMIT, check=False)


def test_the_tour_list_is_readmes() -> None:
    """The commands of README's tour are exactly the ones this file runs, in README's order."""
    assert [command for command, _ in _tour()] == list(TOUR_EXITS)


def test_the_readme_shows_what_make_sandbox_exports() -> None:
    """README's lines to paste name the credentials the quickstart's sandbox app is seeded with."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    credentials = _quickstart_env()
    assert set(credentials) == {"ADO_CLIENT_ID", "ADO_CLIENT_SECRET"}
    exports = " ".join(f"{key}={value}" for key, value in credentials.items())
    assert f"export {exports}\n" in readme
    assert 'export BROWSER="reconciler sandbox approve %s"' in readme
    assert ". .venv/bin/activate" in readme


def test_every_tour_command_works_as_shown(tour_sandbox: tuple[SandboxServer, int], tmp_path: Path) -> None:
    """Each command of README's tour, run in a terminal in order, exits as documented and prints what is shown."""
    server, callback_port = tour_sandbox
    env = _clean_env(**_quickstart_env(), BROWSER="reconciler sandbox approve %s")
    for command, shown in _tour():
        answers = {line.split(PROMPT)[0] + PROMPT: line.split(PROMPT)[1] for line in shown if PROMPT in line}
        code, output = run_in_terminal(command, tmp_path, env, answers)
        output = output.replace(f"127.0.0.1:{server.port}", f"127.0.0.1:{API_PORT}")
        output = output.replace(f"127.0.0.1:{callback_port}", f"127.0.0.1:{CALLBACK_PORT}")
        assert code == TOUR_EXITS[command], f"$ {command}\n{output}"
        assert _shown_in_order(shown, output) == [], f"$ {command}\n{output}"
        warned = [line for line in output.splitlines() if "warning" in line.lower() and line.strip() != "Warnings:"]
        assert [line for line in warned if not _foresight(line)] == [], f"$ {command}\n{output}"


# What plan foresees for the quickstart's Azure DevOps OAuth partner: the flavour's removal, its 60-day secrets.
FORESIGHT = ("Microsoft removes Azure DevOps OAuth in 2026", "client secrets expire 60 days after they are created")


def _foresight(line: str) -> bool:
    return any(words in line for words in FORESIGHT)


def test_the_line_matcher_notices_a_difference() -> None:
    """A shown line that the output lacks, or shows out of order, is reported."""
    output = "a\nb  c\nhttp://x/y?z\n"
    assert _shown_in_order(["a", "...", "b c", "http://x/...", ""], output) == []
    assert _shown_in_order(["b c", "a"], output) == ["a"]
    assert _shown_in_order(["http://w/..."], output) == ["http://w/..."]


def test_the_demo_runs_cleanly(tmp_path: Path) -> None:
    """`make demo` applies the quickstart against its own sandbox, reports every installation healthy, and warns
    of nothing but the foresight its Azure DevOps OAuth partner calls for (the flavour's removal, its 60-day
    client secrets)."""
    result = _demo(tmp_path, free_port(), free_port())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Apply complete: 3 completed." in result.stdout
    assert "No changes. 3 resources match the configuration." in result.stdout
    assert "2 installations: 2 healthy" in result.stdout
    output = (result.stdout + result.stderr).splitlines()
    assert any(FORESIGHT[0] in line for line in output)
    warned = [line for line in output if "warning" in line.lower() and line.strip() != "Warnings:"]
    assert [line for line in warned if not _foresight(line)] == []


def test_the_demo_fails_clearly_when_its_port_is_taken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With another sandbox (seeded alike) on the demo's port, the demo stops with an error and talks to no one."""
    port, callback_port = free_port(), free_port()
    intruder = SandboxServer(port=port).start()
    for key, value in _quickstart_env().items():
        monkeypatch.setenv(key, value)
    load_seed(intruder.provider, _copy_quickstart(tmp_path / "seed", port, callback_port) / "sandbox.yaml")
    try:
        result = _demo(tmp_path, port, callback_port)
    finally:
        contacts = [*intruder.provider.consents, *intruder.provider.grants]
        intruder.stop()
    assert result.returncode == 1
    assert "Apply complete" not in result.stdout
    assert f"error: the sandbox provider could not start on 127.0.0.1:{port}" in result.stderr
    assert "Address already in use" in result.stderr
    assert contacts == []
    assert not (tmp_path / "examples" / "quickstart" / "state").exists()


@pytest.mark.parametrize("target", ["demo", "sandbox"])
def test_make_demo_and_sandbox_install_only_the_product(target: str) -> None:
    """`make demo` and `make sandbox` install the project without its test extras; `make test` with them."""
    def recipe(name: str) -> str:
        return subprocess.run(["make", "-n", "-B", name], cwd=ROOT, capture_output=True, text=True, check=True).stdout

    installs = [line for line in recipe(target).splitlines() if "pip install" in line and "--upgrade pip" not in line]
    assert installs and all(line.rstrip().endswith(" -e .") for line in installs), installs
    assert "pytest" not in recipe(target) and "[test]" not in recipe(target)
    assert "-e '.[test]'" in recipe("test")


def test_make_sandbox_prints_lines_that_work_when_pasted(tmp_path: Path) -> None:
    """`make sandbox`'s script serves the quickstart from no state and prints lines that, pasted, make it work."""
    port = free_port()
    stale = _copy_quickstart(tmp_path, port, free_port()) / "state"  # an earlier sandbox's grants: the tour must start without them
    stale.mkdir()
    (stale / "default.json").write_text("{}")
    (tmp_path / ".venv").symlink_to(BIN.parent)
    env = {k: v for k, v in _clean_env().items() if k != "PATH"} | {"PATH": "/usr/bin:/bin"}
    with subprocess.Popen(["bash", "examples/quickstart/sandbox.sh"], cwd=tmp_path, env=env, text=True,
                          stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        try:
            printed = []
            for line in proc.stdout:
                printed.append(line)
                if line.startswith("then follow"):
                    break
            pasted = "\n".join(line.strip() for line in printed if line.startswith(("  cd ", "  export ")))
            apply = "reconciler -C examples/quickstart apply --auto-approve --auth-mode browser"
            check = subprocess.run(["bash", "-c", f"{pasted}\n{apply}"],
                                   cwd="/", env=env, capture_output=True, text=True, timeout=LIMIT, check=False)
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=LIMIT)
    assert printed[0].startswith(f"Sandbox provider listening on http://127.0.0.1:{port} ")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "Apply complete: 3 completed." in check.stdout
    assert code == 143
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0  # the sandbox is gone with the script


def test_the_cyclr_demo_imports_applies_and_ends_with_no_changes(tmp_path: Path) -> None:
    """`make demo`'s Cyclr run, from what an earlier run left: the existing account adopted (its tenant file
    written), the new tenant's account created and signed in through the platform, then a refresh finds no change;
    neither the partner's nor the library app's secret is printed or stored, and nothing says warning."""
    _copy_quickstart(tmp_path, free_port(), free_port())  # its env.sh starts the sandbox
    example = _copy_example(CYCLR, tmp_path, {API_PORT: free_port()})
    (example / "state").mkdir()  # an earlier run's state: the new sandbox knows nothing of it
    (example / "state" / "default.json").write_text("{}")
    result = subprocess.run(["bash", "examples/cyclr/demo.sh"], cwd=tmp_path, env=_clean_env(), capture_output=True,
                            text=True, timeout=LIMIT, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Import complete: 2 adopted." in output
    assert "id: globex" in (example / "tenants" / "globex.yaml").read_text()
    assert "installation.acme.ado-main: signed in through the platform (authenticated)" in output
    assert "Apply complete: 2 completed." in output
    assert "No changes. 5 resources match the configuration." in result.stdout.rsplit("--refresh", 1)[1]
    secrets = [v for k, v in _exported(CYCLR / "demo.sh", "CYCLR_").items() if k.endswith("SECRET")]
    written = "".join(all_text_under(example / d) for d in ("state", "tenants", ".reconciler"))  # not the scripts
    assert len(secrets) == 2 and not any(s in output + written for s in secrets)
    assert [line for line in output.splitlines() if "warning" in line.lower()] == []


def test_make_demo_runs_the_quickstart_then_the_cyclr_and_service_examples() -> None:
    """`make demo` runs every demo script, the quickstart's first (README's opening command covers them all)."""
    recipe = subprocess.run(["make", "-n", "demo"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    runs = [line.strip() for line in recipe.splitlines() if line.strip().startswith("bash examples/")]
    assert runs == ["bash examples/quickstart/demo.sh", "bash examples/cyclr/demo.sh", "bash examples/service/demo.sh"]


def test_the_service_demo_signs_tenants_in_through_links_and_stops_cleanly(tmp_path: Path) -> None:
    """`make demo`'s service run: apply defers, `reconciler serve` completes both tenants' sign-ins through their
    links, the plan converges, the token API answers, SIGTERM stops the service with exit 0; its log is JSON lines
    and nothing prints a secret."""
    _copy_quickstart(tmp_path, free_port(), free_port())  # its env.sh starts the sandbox
    example = _copy_example(SERVICE, tmp_path, {API_PORT: free_port(), 8767: free_port()})
    result = subprocess.run(["bash", "examples/service/demo.sh"], cwd=tmp_path, env=_clean_env(), capture_output=True,
                            text=True, timeout=LIMIT, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "No changes. 3 resources match the configuration." in output
    assert '"scopes": ["vso.project", "vso.work_full"]' in output and "the service stopped (exit 0)" in output
    log = (example / "state" / "serve.log").read_text().splitlines()
    assert log and all(json.loads(line)["message"] for line in log)
    secrets = [_quickstart_env()["ADO_CLIENT_SECRET"], _exported(SERVICE / "demo.sh", "DEMO_")["DEMO_API_KEY"]]
    assert not any(secret in output + "\n".join(log) for secret in secrets)
