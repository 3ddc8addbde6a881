"""A catalog of bad inputs: each must fail cleanly, name the right file:line (or key), and write nothing.

The catalog is data: each `tests/cases/bad-input/<case>/` holds the files of a configuration directory exactly as
the user would have them (reconciler.yaml, included files, environments/, secrets/, state/, a plan file; bytes as
they are, non-UTF-8 ones too) and `case.yaml`, which is not copied:

    category: config | state | planfile | cli     # the kind of input broken
    args: [-C, ., validate]                       # the command, run from the configuration directory
    env: {ADO_CLIENT_ID: ..., ...}                # exactly the variables the tool may see
    where: 'reconciler.yaml:5:'                   # the error line starts with it (null: a command-line usage error)
    message: 'invalid YAML: ...'                  # ... and contains it (a usage error: stderr contains it)
    warm: false                                   # run `validate` first, so the parse cache holds the files
    setup:                                        # optional: named steps (SETUPS below) run after the copy
    - save-plan: {env: {...}}

Each case's files are copied into a fresh directory and its setup steps run there; the CLI then runs from that
directory with the case's args (`-C .`, so locations print as `reconciler.yaml:LINE:COLUMN`), and the check is:
exit code 1, one `error:` line on stderr that starts with the expected location and contains the expected message
(for command-line mistakes, click's usage error), no traceback anywhere, nothing on stdout, and the whole tree —
the configuration directory with its hidden files, state, keys and plan files, and the parse cache directory
(`RECONCILER_CACHE_DIR`) — byte-for-byte unchanged, no file or directory created or removed.

The parse cache starts empty, so a failing load that cached what it had parsed would show. Cases whose
configuration is valid (they fail on state, a saved plan or an argument) are `warm`: they run `validate` first, as
any earlier run would have; the cache then already holds the parsed files, and the failing command must add nothing.

The expectations are hand-chosen parts of the error line (a prefix and a fragment), not its whole text, so there is
no UPDATE_GOLDEN here: a new case is a new directory, written by hand and checked by eye (the files' line numbers
are the editor's).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import run

CASES = Path(__file__).resolve().parent.parent / "cases" / "bad-input"
NAMES = sorted(p.name for p in CASES.iterdir() if p.is_dir())
CATEGORIES = {"config", "state", "planfile", "cli"}

ENV = {"ADO_CLIENT_ID": "11111111-0000-4000-8000-0000000000a1", "ADO_CLIENT_SECRET": "s3cr3t-partner-value"}
VALIDATE = ["-C", ".", "validate"]
PLAN = ["-C", ".", "plan"]
PLAN_JSON = ["-C", ".", "plan", "--format", "json"]

# Lines 1-7: one Azure DevOps partner whose credentials are references.
HEADER = (
    "version: 1\n"
    "platform: {service_domain: app-h.cyclr.com}\n"
    "partners:\n"
    "  microsoft-azure-devops:\n"
    "    auth: azure-devops-oauth\n"
    "    client_id: ${env:ADO_CLIENT_ID}\n"
    "    client_secret: ${env:ADO_CLIENT_SECRET}\n"
)
# The valid base that most cases break (their reconciler.yaml is this file with one change).
VALID = HEADER + (
    "tenants:\n"
    "  acme:\n"
    "    installations:\n"
    "      ado:\n"
    "        connector: microsoft-azure-devops\n"
    "        parameters: {organization: acme, project: P}\n"
    "        scopes: [vso.work_full]\n"
)
LINEAGE = "11111111-1111-4111-8111-111111111111"
VALID_STATE = json.dumps(
    {"format_version": 1, "lineage": LINEAGE, "serial": 3, "environment": "default", "resources": {}}, indent=2
) + "\n"
PARTNER_RECORD = {
    "kind": "partner",
    "name": "microsoft-azure-devops",
    "connector": "microsoft-azure-devops",
    "auth": "azure-devops-oauth",
    "client_id": "11111111-0000-4000-8000-0000000000a1",
    "client_secret_ref": "${env:ADO_CLIENT_SECRET}",
    "redirect_uri": "https://app-h.cyclr.com/connector/callback",
    "authorize_url": "https://app.vssps.visualstudio.com/oauth2/authorize",
    "token_url": "https://app.vssps.visualstudio.com/oauth2/token",
    "api_url": "https://dev.azure.com",
}


# -- the cases ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One case's `case.yaml`: the command, the error line expected (`where` None: a command-line usage error),
    and the setup steps, each a name in SETUPS with its parameters."""

    category: str
    args: list[str]
    env: dict[str, str]
    where: str | None
    message: str
    warm: bool
    setup: list[tuple[str, dict[str, Any]]]


def load_case(name: str) -> Case:
    """The case named `name`, checked: known keys, a known category, and setup steps SETUPS knows."""
    raw = yaml.load((CASES / name / "case.yaml").read_text(encoding="utf-8"), Loader=yaml.CSafeLoader)
    assert set(raw) <= {*Case.__dataclass_fields__}, f"{name}: unknown keys {set(raw) - {*Case.__dataclass_fields__}}"
    assert raw["category"] in CATEGORIES, f"{name}: unknown category {raw['category']!r}"
    steps = [next(iter(step.items())) for step in raw.get("setup", [])]
    assert all(step in SETUPS for step, _ in steps), f"{name}: unknown setup step in {[s for s, _ in steps]}"
    return Case(raw["category"], list(raw["args"]), dict(raw["env"]), raw["where"], raw["message"],
                bool(raw["warm"]), [(step, dict(params or {})) for step, params in steps])


def copy_files(source: Path, directory: Path) -> None:
    """The case's files (all but its case.yaml) into a new `directory`, byte for byte, as freshly written files."""
    shutil.copytree(source, directory, copy_function=shutil.copyfile,
                    ignore=lambda parent, names: ["case.yaml"] if Path(parent) == source else [])


# -- setup steps: what a case lays down that is not a file to copy (named in case.yaml, parameters from it) --------


def _append(directory: Path, path: str, text: str, times: int = 1) -> None:
    """Append `text` `times` times to `path` (made if missing): a file too big or too regular to keep as is."""
    with (directory / path).open("ab") as out:
        out.write(text.encode() * times)


def _symlink(directory: Path, path: str, target: str) -> None:
    """Make `path` a symbolic link to `target` (a link out of the tree, which the repository should not hold)."""
    (directory / path).parent.mkdir(parents=True, exist_ok=True)
    (directory / path).symlink_to(target)


def _write(directory: Path, path: str, text: str) -> None:
    """Replace `path` with `text` (after a plan was saved: the state moved, ...)."""
    (directory / path).write_bytes(text.encode())


def _truncate(directory: Path, path: str, size: int) -> None:
    """Cut `path` to its first `size` bytes (a copy that stopped half-way)."""
    (directory / path).write_bytes((directory / path).read_bytes()[:size])


def _save_plan(directory: Path, env: Mapping[str, str], out: str = "plan.bin", hide: Sequence[str] = ()) -> None:
    """Save a plan (`plan --out OUT` with `env`), as a reviewer would; `hide`: paths moved away meanwhile (a plan
    made when they did not exist), put back after."""
    for path in hide:
        (directory / path).rename(directory / f"{path}.hidden")
    result = run(["-C", ".", "plan", "--out", out], env)
    assert result.exit_code == 0, result.stderr
    for path in hide:
        (directory / f"{path}.hidden").rename(directory / path)


def _edit_json(directory: Path, path: str, set: Mapping[str, Any] | None = None, delete: Sequence[str] = ()) -> None:
    """Edit a JSON file as a reviewer's or attacker's editor would: `set` values and `delete` keys, each named by
    a path of keys (`/desired/installations/installation.acme.ado/redirect_uri`); written back sorted."""
    payload = json.loads((directory / path).read_text())

    def parent(pointer: str) -> tuple[Any, str]:
        *keys, last = pointer.strip("/").split("/")
        node = payload
        for key in keys:
            node = node[key]
        return node, last

    for pointer, value in (set or {}).items():
        node, key = parent(pointer)
        node[key] = value
    for pointer in delete:
        node, key = parent(pointer)
        del node[key]
    (directory / path).write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n")


SETUPS: dict[str, Callable[..., None]] = {
    "append": _append,
    "symlink": _symlink,
    "write": _write,
    "truncate": _truncate,
    "save-plan": _save_plan,
    "edit-json": _edit_json,
}


# -- the harness ----------------------------------------------------------------------------------------------------


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under `root` — hidden ones too — with its bytes (None for a directory; a link's target)."""
    out: dict[str, bytes | None] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            key = str(path.relative_to(root))
            if path.is_symlink():
                out[key] = os.readlink(path).encode()
            elif path.is_dir():
                out[key] = None
            else:
                out[key] = path.read_bytes()
    return out


def bytes_changed(before: Mapping[str, bytes | None], after: Mapping[str, bytes | None]) -> tuple[int, list[str]]:
    """How many bytes differ between two trees (a created or removed path counts all its bytes, at least 1),
    and which paths differ."""
    changed, total = [], 0
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key, b"missing"), after.get(key, b"missing")
        if old == new:
            continue
        changed.append(key)
        if key not in before or key not in after or old is None or new is None:
            total += max(len(old or b""), len(new or b""), 1)
        else:
            total += sum(a != b for a, b in zip(old, new, strict=False)) + abs(len(old) - len(new))
    return total, changed


def _warm_args(args: list[str]) -> list[str]:
    """`validate` with the case's global options (-C, --env), to warm the parse cache as an earlier run would."""
    environment = args[args.index("--env") : args.index("--env") + 2] if "--env" in args else []
    return ["-C", ".", *environment, "validate"]


@pytest.mark.parametrize("name", NAMES)
def test_bad_input_fails_cleanly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, figures, name: str) -> None:  # type: ignore[no-untyped-def]
    """A bad input exits 1 with one located error line, no traceback, no output, and no byte written anywhere."""
    figures.goal("bad-input", failures=0, bytes_changed=0)
    bad = load_case(name)
    directory, cache = tmp_path / "config", tmp_path / "cache"
    copy_files(CASES / name, directory)
    cache.mkdir()
    monkeypatch.chdir(directory)
    env = {**bad.env, "RECONCILER_CACHE_DIR": str(cache)}
    for step, params in bad.setup:
        SETUPS[step](directory, **params)
    if bad.warm:
        warmed = run(_warm_args(bad.args), env)
        assert warmed.exit_code == 0, warmed.stderr
    before = tree(tmp_path)

    started = time.monotonic()
    result = run(bad.args, env)
    seconds = time.monotonic() - started

    changed, paths = bytes_changed(before, tree(tmp_path))
    problems = []
    if "Traceback" in result.stdout + result.stderr or "internal error" in result.stderr:
        problems.append("a traceback or internal error")
    if result.exit_code != 1:
        problems.append(f"exit code {result.exit_code}")
    if result.stdout:
        problems.append("output on stdout")
    if bad.where is None:
        if bad.message not in result.stderr:
            problems.append("the expected message is missing")
    else:
        errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
        if len(errors) != 1:  # one mistake, one error: no follow-on noise
            problems.append(f"{len(errors)} error lines")
        elif not (errors[0].startswith(f"error: {bad.where}") and bad.message in errors[0]):
            problems.append("the error line does not name the place and problem expected")
    if paths:
        problems.append(f"{changed} bytes changed in {', '.join(paths[:5])}")
    if seconds > 10:
        problems.append(f"took {seconds:.1f} s")
    figures.add("bad-input", cases=1, failures=int(bool(problems)), bytes_changed=changed)
    assert not problems, f"{problems}\nstdout: {result.stdout[:2000]}\nstderr: {result.stderr[:2000]}"


def test_catalog_covers_every_category() -> None:
    """The catalog keeps at least 140 cases (distinct by directory), each loads, and each kind of input has its
    share."""
    assert len(NAMES) >= 140
    categories = [load_case(name).category for name in NAMES]
    assert categories.count("state") >= 20 and categories.count("planfile") >= 12 and categories.count("cli") >= 20
    for needle in ("alias-bomb", "include-cycle", "huge", "utf8", "literal", "env-var", "secret-file", "duplicate",
                   "empty", "unknown-connector", "unknown-scope", "tab", "state-truncated", "state-format-version",
                   "planfile-wrong-lineage", "wrong-state-key", "state-unreadable", "planfile-tampered",
                   "planfile-other-environment"):
        assert any(needle in i for i in NAMES), needle


@pytest.mark.parametrize("args", [VALIDATE, PLAN, PLAN_JSON])
def test_the_valid_base_config_passes(
    write_config,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
) -> None:
    """The base that every case breaks is itself valid, so each failure is due to the one change made."""
    directory: Path = write_config({"reconciler.yaml": VALID})
    monkeypatch.chdir(directory)
    before = tree(directory)

    result = run(args, ENV)

    assert result.exit_code == 0, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert tree(directory) == before


def _laughs(last: str) -> str:
    """The "billion laughs": nine levels of nine aliases (9^9 strings) from 11 lines, then `last`."""
    lines = ["version: 1\n", "lol0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"]  # 1-2
    lines += [f"lol{n}: &l{n} [{', '.join([f'*l{n - 1}'] * 9)}]\n" for n in range(1, 10)]  # 3-11
    return "".join(lines) + last  # 12


def _installation_fanout(count: int) -> str:
    """`count` installations written once, then `count` tenants that all alias them: count^2 installations."""
    lines = [HEADER, "tenants:\n", "  t0:\n", "    installations: &all\n"]  # 1-7, 8, 9, 10
    lines += [
        f"      i{n}: {{connector: microsoft-azure-devops, parameters: {{organization: o, project: p}},"
        f" scopes: [vso.work_full]}}\n"
        for n in range(count)
    ]
    lines += [f"  t{n}: {{installations: *all}}\n" for n in range(1, count)]  # from line 11 + count
    return "".join(lines)


def test_alias_fanout_below_the_limit_is_accepted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Anchors and aliases used as intended (shared installations for a few tenants) still load."""
    (tmp_path / "reconciler.yaml").write_text(_installation_fanout(20))
    monkeypatch.chdir(tmp_path)
    result = run(VALIDATE, ENV)
    assert result.exit_code == 0, result.stderr
    assert "20 tenants, 400 installations" in result.stdout


def test_alias_bomb_is_refused_before_anything_is_built() -> None:
    """A billion laughs is refused from its events in well under a second, at the alias that crosses the limit."""
    from reconciler.yamlio import YamlSyntaxError, load_yaml_text

    started = time.monotonic()
    with pytest.raises(YamlSyntaxError, match="aliases expand to more than 100,000 values") as info:
        load_yaml_text(_laughs("tenants: *l9\n"))
    assert time.monotonic() - started < 1.0
    assert (info.value.line, info.value.column) == (7, 12)


def _journal(payload: Any) -> str:
    import hashlib

    body = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return json.dumps({"c": hashlib.sha256(body.encode()).hexdigest(), "p": payload}) + "\n"


@pytest.mark.parametrize(
    "line",
    [
        "[" * 100_000 + "]" * 100_000 + "\n",  # found by fuzzing: recursed past Python's limit
        _journal({"lineage": LINEAGE, "serial": 4, "set": {}, "delete": [["x"]]}),  # found by fuzzing: unhashable
        _journal({"lineage": LINEAGE, "serial": 4, "set": {"partner.other": PARTNER_RECORD}, "delete": []}),
    ],
    ids=["nested-too-deeply", "delete-not-a-name", "record-under-another-address"],
)
def test_damaged_journal_line_is_ignored_like_a_torn_tail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, line: str
) -> None:
    """A journal line that is not a well-formed record is dropped (as a torn tail is): the snapshot is read, plan
    works, nothing is written."""
    files = {"reconciler.yaml": VALID, "state/default.json": VALID_STATE, "state/default.lock": "",
             "state/default.lock-gate": "", "state/default.journal": line}
    for rel, content in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(content)
    monkeypatch.chdir(tmp_path)
    run(VALIDATE, ENV)  # warm the parse cache
    before = tree(tmp_path)
    result = run(PLAN, ENV)
    assert result.exit_code == 0, result.stderr
    assert "state state/default.json (serial 3)" in result.stdout
    assert tree(tmp_path) == before
