"""Configuration loading and its caches under attack: references that reach keys, a cache directory another user
can write, include globs through symlink loops, the parse-ahead worker and oversized files, deep include chains.

Each test runs the real CLI (in-process through `tests.conftest.run`, or in a subprocess with a timeout where a
regression would hang or where the parse-ahead worker must be used) and checks the exit code, the one-line error
and that no secret value reached any output or file.
"""

from __future__ import annotations

import base64
import json
import marshal
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.config.cache import ParseCache, catalog_digest
from reconciler.memo import PlanMemo
from tests.conftest import run
from tests.sandbox_support import ENV as SANDBOX_ENV
from tests.sandbox_support import installation

CASES = Path(__file__).parent.parent / "cases"
STATE_KEY = base64.b64encode(b"state-key-value-32-bytes-long-!!").decode()
GIT_TOKEN = "Z2l0LXRva2VuLWZyb20tdGhlLWNpLWNoZWNrb3V0"
PASSPHRASE = "passphrase-of-the-state-0b7e"
PG_DSN = "postgresql://reconciler:pg-password-5d1c@127.0.0.1/state"
GUID = "11111111-aaaa-4bbb-8ccc-000000000001"
SECRETS = (STATE_KEY, GIT_TOKEN, PASSPHRASE, "pg-password-5d1c")


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) >= 1 and lines[0].startswith("error: "), stderr
    assert not any(line.startswith("error: ") for line in lines[1:]), stderr
    assert "Traceback" not in stderr
    return lines[0]


def _text_under(root: Path) -> str:
    return "\n".join(p.read_bytes().decode("utf-8", "replace") for p in root.rglob("*") if p.is_file())


# -- finding 5: references in any field never reach keys, DSNs or VCS internals -----------------------------------

PARTNER = """\
version: 1
platform: {{service_domain: app-h.cyclr.com}}
partners:
  microsoft-azure-devops:
    auth: azure-devops-oauth
    client_id: {client_id}
    client_secret: {client_secret}
{endpoints}tenants:
  acme:
    installations:
      ado:
        connector: microsoft-azure-devops
        parameters: {{organization: acme, project: P}}
        scopes: [vso.work_full]
"""
SANDBOX_ENDPOINTS = """\
    redirect_uri: http://127.0.0.1:8765/callback
    endpoints:
      authorize_url: http://127.0.0.1:8765/oauth2/authorize
      token_url: http://127.0.0.1:8765/oauth2/token
      api_url: http://127.0.0.1:8765
"""


@pytest.fixture
def keyed_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A configuration directory (the working directory) holding a state key file and a CI checkout's .git."""
    directory = tmp_path / "config"
    (directory / "state").mkdir(parents=True)
    (directory / "state" / "default.key").write_text(STATE_KEY + "\n")
    (directory / ".git").mkdir()
    (directory / ".git" / "config").write_text(f"[http]\n\textraheader = AUTHORIZATION: basic {GIT_TOKEN}\n")
    (directory / "secrets").mkdir()
    (directory / "secrets" / "ado").write_text("the-real-client-secret\n")
    monkeypatch.chdir(directory)
    return directory


REFERENCE_ENV = {
    "RECONCILER_STATE_KEY": STATE_KEY,
    "RECONCILER_STATE_PASSPHRASE": PASSPHRASE,
    "RECONCILER_PG_DSN": PG_DSN,
    "ADO_CLIENT_SECRET": "the-real-client-secret",
}


@pytest.mark.finding(5)
@pytest.mark.parametrize(
    ("client_id", "client_secret", "link"),
    [
        ("${file:state/default.key}", "${env:ADO_CLIENT_SECRET}", None),
        ("${env:RECONCILER_STATE_KEY}", "${env:ADO_CLIENT_SECRET}", None),
        ("${file:.git/config}", "${env:ADO_CLIENT_SECRET}", None),
        ("${env:RECONCILER_STATE_PASSPHRASE}", "${env:ADO_CLIENT_SECRET}", None),
        ("${file:secrets/link}", "${env:ADO_CLIENT_SECRET}", "../state/default.key"),
        ("${file:secrets/link}", "${env:ADO_CLIENT_SECRET}", "../.git/config"),
        ("${file:./state/../state/default.key}", "${env:ADO_CLIENT_SECRET}", None),
        # a client secret is sent to the provider: it must not read them either
        ("app-1", "${file:state/default.key}", None),
        ("app-1", "${env:RECONCILER_STATE_KEY}", None),
        ("app-1", "${env:RECONCILER_PG_DSN}", None),
        ("app-1", "${file:.git/config}", None),
        ("app-1", "${file:secrets/link}", "../.git/config"),
    ],
)
def test_no_reference_reaches_the_state_key_dsn_or_vcs_internals(
    keyed_dir: Path, client_id: str, client_secret: str, link: str | None
) -> None:
    """A reference to the state key (file or variable), the passphrase, the DSN or .git is refused, naming the key."""
    if link is not None:
        (keyed_dir / "secrets" / "link").symlink_to(link)
    config = PARTNER.format(client_id=client_id, client_secret=client_secret, endpoints=SANDBOX_ENDPOINTS)
    (keyed_dir / "reconciler.yaml").write_text(config)
    before = _text_under(keyed_dir)
    result = run(["-C", ".", "plan", "--format", "json"], REFERENCE_ENV)
    assert result.exit_code == 1, result.stdout
    line = _one_error_line(result.stderr)
    key = "client_id" if client_secret.endswith("ADO_CLIENT_SECRET}") else "client_secret"
    assert line.startswith("error: reconciler.yaml:"), line
    assert f"partners.microsoft-azure-devops.{key}" in line
    assert result.stdout == ""
    for secret in SECRETS:
        assert secret not in result.stderr
    assert _text_under(keyed_dir) == before  # nothing written: no state, no plan


@pytest.mark.finding(5)
def test_an_installation_client_id_cannot_read_the_key_file(keyed_dir: Path) -> None:
    """The installation's own credentials obey the same rules as the partner's."""
    config = PARTNER.format(client_id="app-1", client_secret="${env:ADO_CLIENT_SECRET}", endpoints=SANDBOX_ENDPOINTS)
    config += "        credentials: {client_id: '${file:state/default.key}', client_secret: '${file:secrets/ado}'}\n"
    (keyed_dir / "reconciler.yaml").write_text(config)
    result = run(["-C", ".", "plan"], REFERENCE_ENV)
    assert result.exit_code == 1
    line = _one_error_line(result.stderr)
    assert "tenants.acme.installations.ado.credentials.client_id" in line
    assert STATE_KEY not in result.stdout + result.stderr


@pytest.mark.finding(5)
def test_the_dsn_cannot_read_the_state_key(keyed_dir: Path) -> None:
    """backend.dsn may read RECONCILER_PG_DSN, never the state key or passphrase."""
    config = PARTNER.format(client_id=GUID, client_secret="${env:ADO_CLIENT_SECRET}", endpoints="")
    config += "backend: {type: postgres, dsn: '${env:RECONCILER_STATE_KEY}'}\n"
    (keyed_dir / "reconciler.yaml").write_text(config)
    result = run(["-C", ".", "plan"], REFERENCE_ENV)
    assert result.exit_code == 1
    line = _one_error_line(result.stderr)
    assert "backend.dsn" in line and "RECONCILER_STATE_KEY" in line
    assert STATE_KEY not in result.stdout + result.stderr


@pytest.mark.finding(5)
def test_no_reference_reads_another_environments_state_directory(keyed_dir: Path) -> None:
    """prod keeps its state in prod-state/: a reference of the base configuration cannot read its key there."""
    (keyed_dir / "prod-state").mkdir()
    (keyed_dir / "prod-state" / "prod.key").write_text(STATE_KEY + "\n")
    (keyed_dir / "environments").mkdir()
    (keyed_dir / "environments" / "prod.yaml").write_text("backend: {path: prod-state}\n")
    config = PARTNER.format(client_id="app-1", client_secret="${file:prod-state/prod.key}", endpoints=SANDBOX_ENDPOINTS)
    (keyed_dir / "reconciler.yaml").write_text(config)
    result = run(["-C", ".", "plan"], REFERENCE_ENV)
    assert result.exit_code == 1
    line = _one_error_line(result.stderr)
    assert "partners.microsoft-azure-devops.client_secret" in line and "state directory" in line
    assert STATE_KEY not in result.stdout + result.stderr


@pytest.mark.finding(5)
def test_no_reference_reads_a_git_directory_kept_elsewhere(keyed_dir: Path) -> None:
    """.git as a symlink (a worktree layout): the directory it points to is sealed under any name."""
    shutil.move(keyed_dir / ".git", keyed_dir / "checkout-meta")
    (keyed_dir / ".git").symlink_to("checkout-meta")
    config = PARTNER.format(client_id="app-1", client_secret="${file:checkout-meta/config}", endpoints=SANDBOX_ENDPOINTS)
    (keyed_dir / "reconciler.yaml").write_text(config)
    result = run(["-C", ".", "plan"], REFERENCE_ENV)
    assert result.exit_code == 1
    line = _one_error_line(result.stderr)
    assert "client_secret" in line and "version-control" in line
    assert GIT_TOKEN not in result.stdout + result.stderr


@pytest.mark.finding(5)
def test_a_client_secret_cannot_read_the_dsn_reference(keyed_dir: Path) -> None:
    """The variable backend.dsn reads holds the database password: a client secret reading it is refused."""
    config = PARTNER.format(client_id=GUID, client_secret="${env:PG_DSN}", endpoints="")
    config += "backend: {type: postgres, dsn: '${env:PG_DSN}'}\n"
    (keyed_dir / "reconciler.yaml").write_text(config)
    result = run(["-C", ".", "validate"], {**REFERENCE_ENV, "PG_DSN": PG_DSN})
    assert result.exit_code == 1
    line = _one_error_line(result.stderr)
    assert "partners.microsoft-azure-devops.client_secret" in line and "DSN" in line
    assert "pg-password-5d1c" not in result.stdout + result.stderr


@pytest.mark.finding(5)
@pytest.mark.parametrize(
    ("value", "endpoints"),
    [
        ("app-1", ""),  # Microsoft's endpoints: an app id is a GUID
        ("my app id with spaces", SANDBOX_ENDPOINTS),  # whitespace
        ("-----BEGIN PRIVATE KEY-----\nMIIEv", SANDBOX_ENDPOINTS),  # a line break
        ("x" * 300, SANDBOX_ENDPOINTS),  # too long to be an id
        ('quote"d', SANDBOX_ENDPOINTS),
    ],
)
def test_a_client_id_must_look_like_one_and_is_never_echoed(keyed_dir: Path, value: str, endpoints: str) -> None:
    """A client id (here from a file, so it could be anything) of the wrong format is refused without its value."""
    (keyed_dir / "secrets" / "id").write_text(value)
    config = PARTNER.format(client_id="${file:secrets/id}", client_secret="${env:ADO_CLIENT_SECRET}", endpoints=endpoints)
    (keyed_dir / "reconciler.yaml").write_text(config)
    result = run(["-C", ".", "plan"], REFERENCE_ENV)
    assert result.exit_code == 1, result.stdout
    line = _one_error_line(result.stderr)
    assert line.startswith("error: reconciler.yaml:6:") and "partners.microsoft-azure-devops.client_id" in line
    assert value not in result.stdout + result.stderr
    assert value[:12] not in result.stderr.replace("${file:secrets/id}", "")


@pytest.mark.parametrize(
    ("value", "endpoints"), [(GUID, ""), (GUID.upper(), ""), ("11111111-2222-4333-8444-legacyapp001", SANDBOX_ENDPOINTS)]
)
def test_client_ids_of_each_flavour_are_accepted(keyed_dir: Path, value: str, endpoints: str) -> None:
    """A GUID for Microsoft's endpoints, a token-like id for a sandbox or proxy."""
    config = PARTNER.format(client_id=value, client_secret="${env:ADO_CLIENT_SECRET}", endpoints=endpoints)
    (keyed_dir / "reconciler.yaml").write_text(config)
    result = run(["-C", ".", "validate"], REFERENCE_ENV)
    assert result.exit_code == 0, result.stderr


# -- finding 6: a cache directory another local user can write ----------------------------------------------------

def _as_another_user(path: Path, how: str = "owner") -> None:
    """Make `path` look planted by, or open to, another local user: owned by nobody (when we may chown, as CI
    does), or writable by the group."""
    if how == "owner" and os.geteuid() == 0:
        os.chown(path, 65534, 65534)
    else:
        path.chmod(path.stat().st_mode | 0o020)


def _parse_entries(cache_dir: Path) -> list[Path]:
    return [p for p in (cache_dir / "parse").rglob("*") if p.is_file()]


@pytest.mark.finding(6)
@pytest.mark.parametrize("how", ["entry-owner", "directory-writable"])
def test_a_planted_parse_cache_entry_cannot_delete_installations(  # type: ignore[no-untyped-def]
    sandbox_config, tmp_path_factory: pytest.TempPathFactory, how: str
) -> None:
    """apply --auto-approve with a foreign `tenants: {}` entry for reconciler.yaml's bytes deletes nothing."""
    _, directory, write, _ = sandbox_config
    cache_dir = tmp_path_factory.mktemp("shared") / "cache"
    env = {**SANDBOX_ENV, "RECONCILER_CACHE_DIR": str(cache_dir)}
    write(installation("acme", "ado", "legacy", "acme-org", "Platform", ["vso.work_full"]))
    apply = ["-C", ".", "apply", "--auto-approve", "--auth-mode", "browser", "--auth-timeout", "20"]
    first = run(apply, env)
    assert first.exit_code == 0, first.stderr
    assert "installation.acme.ado" in json.loads((directory / "state" / "default.json").read_text())["resources"]
    assert _parse_entries(cache_dir), "the first run filled the parse cache"

    raw = (directory / "reconciler.yaml").read_bytes()
    planted = ParseCache(cache_dir, catalog_digest())
    from reconciler.yamlio import load_yaml_text

    data = load_yaml_text(raw.decode())
    data["tenants"] = {}
    planted.remember(raw, data)
    planted.commit()
    if how == "entry-owner":
        for entry in _parse_entries(cache_dir):
            _as_another_user(entry)
    else:
        _as_another_user(cache_dir, "writable")

    second = run(apply, env)
    assert second.exit_code == 0, second.stderr
    assert "installation.acme.ado" in json.loads((directory / "state" / "default.json").read_text())["resources"]
    assert "destroy" not in second.stdout.lower() and "delete" not in second.stdout.lower()
    warnings = [line for line in second.stderr.splitlines() if "cache" in line]
    assert len(warnings) == 1 and "not used" in warnings[0], second.stderr


@pytest.fixture
def golden(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """A copy of the create_installation golden case (3 installations to create) as the working directory."""
    directory = tmp_path / "case"
    shutil.copytree(CASES / "create_installation", directory)
    monkeypatch.chdir(directory)
    env = dict(line.split("=", 1) for line in (directory / "env").read_text().splitlines() if "=" in line)
    env["RECONCILER_CACHE_DIR"] = str(tmp_path / "shared-cache")
    return directory, env


def _memo_path(env: dict[str, str]) -> Path:
    memo = PlanMemo(
        config_dir=Path("."), environment=None, environ=env, options=((), (), (), ()), output_format="text", color=False
    )
    return memo.path


def _plant_memo(path: Path, **changes: object) -> None:
    """Rewrite the memo entry our own run stored: 'No changes', and whatever `changes` say."""
    entry = marshal.loads(path.read_bytes())  # noqa: S302 - the memo our own run wrote
    entry.update({"output": "No changes. Your installations match the configuration.\n", "has_changes": False})
    entry.update(changes)
    path.write_bytes(marshal.dumps(entry))


@pytest.mark.finding(6)
@pytest.mark.parametrize("how", ["entry-owner", "entry-writable", "directory-owner", "directory-writable"])
def test_a_planted_plan_memo_entry_by_another_user_is_not_used(golden, how: str) -> None:  # type: ignore[no-untyped-def]
    """plan --detailed-exitcode still reports the changes when another user wrote the memo entry."""
    _, env = golden
    first = run(["plan", "--detailed-exitcode"], env)
    assert first.exit_code == 2, first.stderr
    path = _memo_path(env)
    assert path.is_file()
    _plant_memo(path)
    where, mode = how.split("-")
    _as_another_user(path if where == "entry" else Path(env["RECONCILER_CACHE_DIR"]), mode)
    second = run(["plan", "--detailed-exitcode"], env)
    assert second.exit_code == 2, second.stdout
    assert second.stdout == first.stdout
    assert "No changes" not in second.stdout
    assert sum("cache" in line for line in second.stderr.splitlines()) == 1, second.stderr


@pytest.mark.finding(6)
@pytest.mark.parametrize(
    "changes",
    [
        {"files": [], "state": [], "globs": [], "absent": [], "references": []},
        {"state": []},
        {"files": []},
    ],
)
def test_a_memo_entry_with_missing_dependencies_is_not_used(golden, changes: dict[str, list[object]]) -> None:  # type: ignore[no-untyped-def]
    """An empty (or incomplete) dependency list is not 'nothing changed': the plan is computed again."""
    _, env = golden
    first = run(["plan", "--detailed-exitcode"], env)
    assert first.exit_code == 2
    _plant_memo(_memo_path(env), **changes)
    second = run(["plan", "--detailed-exitcode"], env)
    assert second.exit_code == 2 and second.stdout == first.stdout


@pytest.mark.finding(6)
def test_the_cache_directory_is_created_private(golden) -> None:  # type: ignore[no-untyped-def]
    """A new cache directory (and each directory in it) is 0700."""
    _, env = golden
    assert run(["plan"], env).exit_code == 0
    cache_dir = Path(env["RECONCILER_CACHE_DIR"])
    for path in [cache_dir, *(p for p in cache_dir.rglob("*") if p.is_dir())]:
        assert path.stat().st_mode & 0o077 == 0, path


# -- finding 7: include globs through symlink loops ----------------------------------------------------------------

ROOT = """\
version: 1
platform: {{service_domain: app-h.cyclr.com}}
partners:
  microsoft-azure-devops:
    auth: azure-devops-oauth
    client_id: {guid}
    client_secret: ${{env:ADO_CLIENT_SECRET}}
include: [{pattern}]
"""
TENANT = """\
tenants:
  {name}:
    installations:
      ado:
        connector: microsoft-azure-devops
        parameters: {{organization: org-{name}, project: P}}
        scopes: [vso.work_full]
"""


def _cli(config: Path, *args: str, timeout: float = 120, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ADO_", "RECONCILER_"))}
    env.update({"ADO_CLIENT_SECRET": "review-secret", "RECONCILER_CACHE_DIR": str(config.parent / "cache"), **extra})
    return subprocess.run(
        [sys.executable, "-m", "reconciler", "-C", str(config), *args],
        capture_output=True, text=True, env=env, timeout=timeout, cwd=config, check=False,
    )


@pytest.mark.finding(7)
def test_recursive_include_globs_do_not_follow_directory_symlink_loops(tmp_path: Path) -> None:
    """Two symlinks to `.` under tenants/ and tenants/**/*.yaml: validate ends, each file loaded once."""
    config = tmp_path / "config"
    (config / "tenants" / "eu").mkdir(parents=True)
    (config / "reconciler.yaml").write_text(ROOT.format(guid=GUID, pattern="tenants/**/*.yaml"))
    (config / "tenants" / "acme.yaml").write_text(TENANT.format(name="acme"))
    (config / "tenants" / "eu" / "globex.yaml").write_text(TENANT.format(name="globex"))
    (config / "tenants" / "loop1").symlink_to(".")
    (config / "tenants" / "loop2").symlink_to(".")
    try:
        result = _cli(config, "plan", "--format", "json", timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("validate did not end: the glob follows the symlink loop")
    assert result.returncode == 0, result.stderr
    addresses = sorted(change["address"] for change in json.loads(result.stdout)["changes"])
    assert addresses == ["installation.acme.ado", "installation.globex.ado", "partner.microsoft-azure-devops"]


@pytest.mark.finding(7)
def test_a_pattern_matching_too_many_files_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the match limit, the error names the pattern and its file:line."""
    from reconciler.config import includes

    monkeypatch.setattr(includes, "MAX_MATCHES", 5)
    config = tmp_path / "config"
    (config / "tenants").mkdir(parents=True)
    (config / "reconciler.yaml").write_text(ROOT.format(guid=GUID, pattern="tenants/**/*.yaml"))
    for index in range(6):
        (config / "tenants" / f"t{index}.yaml").write_text(TENANT.format(name=f"t{index}"))
    monkeypatch.chdir(config)
    result = run(["-C", ".", "validate"], {"ADO_CLIENT_SECRET": "review-secret"})
    assert result.exit_code == 1
    line = _one_error_line(result.stderr)
    assert line.startswith("error: reconciler.yaml:8:") and "tenants/**/*.yaml" in line and "5" in line, line


@pytest.mark.finding(7)
def test_recursive_globs_keep_their_meaning(tmp_path: Path) -> None:
    """`**` matches zero or more directories, skips hidden ones, and names each file once, sorted."""
    from reconciler.config.includes import glob_matches

    for rel in ["a.yaml", "x/b.yaml", "x/y/c.yaml", ".hidden/d.yaml", "x/.e.yaml", "x/f.yml"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("tenants: {}\n")
    (tmp_path / "x" / "up").symlink_to("..")
    found = [str(p.relative_to(tmp_path)) for p in glob_matches(tmp_path, "**/*.yaml")]
    assert found == ["a.yaml", "x/b.yaml", "x/y/c.yaml"]
    assert [str(p.relative_to(tmp_path)) for p in glob_matches(tmp_path, "x/**/*.yaml")] == ["x/b.yaml", "x/y/c.yaml"]
    assert [str(p.relative_to(tmp_path)) for p in glob_matches(tmp_path, "x/*.yaml")] == ["x/b.yaml"]


# -- finding 8: the parse-ahead worker applies every limit ---------------------------------------------------------

@pytest.mark.finding(8)
def test_the_parse_ahead_worker_does_not_parse_an_oversized_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the worker forced on, a file over the size limit is never parsed (by either side) nor cached, and
    the load fails with the same error as without the worker."""
    from reconciler.config import ahead, includes
    from reconciler.config.ahead import MIN_FILES

    config = tmp_path / "config"
    (config / "tenants").mkdir(parents=True)
    (config / "reconciler.yaml").write_text(ROOT.format(guid=GUID, pattern="tenants/*.yaml"))
    for index in range(MIN_FILES + 8):
        (config / "tenants" / f"t{index:03}.yaml").write_text(TENANT.format(name=f"t{index:03}"))
    limit = includes.MAX_FILE_BYTES
    big = config / "tenants" / "zzz-big.yaml"  # last: the worker starts from the end of the list
    with big.open("w") as handle:
        handle.write("tenants:\n  big:\n    installations: {}\n")
        handle.write("# padding\n" * (limit // 10 + 1))
    assert big.stat().st_size > limit
    log = tmp_path / "parsed.log"
    real = ahead.load_yaml_text

    def logged(text: str):  # type: ignore[no-untyped-def]
        with open(log, "a") as out:  # appended from the forked worker too
            out.write(f"{os.getpid()} {len(text)}\n")
        return real(text)

    monkeypatch.setattr(ahead, "load_yaml_text", logged)
    monkeypatch.setattr(ahead, "_cpus", lambda: 2)
    cache = ParseCache(tmp_path / "cache", catalog_digest())
    worker = ahead.parse_includes_ahead(config, cache, {})
    assert worker is not None, "the worker was not started"
    try:
        assert worker.get(big, big.read_bytes()) is ahead.MISSING
    finally:
        worker.close()
    sizes = [int(line.split()[1]) for line in log.read_text().splitlines()]
    assert len(sizes) >= 1, "the worker parsed nothing"
    assert max(sizes) <= limit, "the worker parsed the oversized file"
    cache.commit()
    assert all(p.stat().st_size < limit for p in (tmp_path / "cache").rglob("*") if p.is_file())


@pytest.mark.finding(8)
def test_the_parse_cache_never_stores_an_oversized_file(tmp_path: Path) -> None:
    """remember/load of bytes over the limit store nothing."""
    from reconciler.config.includes import MAX_FILE_BYTES

    cache = ParseCache(tmp_path / "cache", catalog_digest())
    raw = b"tenants: {}\n" + b"#" * MAX_FILE_BYTES
    cache.remember(raw, {"tenants": {}})
    assert cache.load(raw, lambda: {"tenants": {}}) == {"tenants": {}}
    cache.commit()
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]


def test_an_oversized_include_fails_cleanly_with_the_worker(tmp_path: Path) -> None:
    """End to end with the worker on (enough files): the size error, exit 1, nothing cached."""
    from reconciler.config.ahead import MIN_FILES
    from reconciler.config.includes import MAX_FILE_BYTES

    config = tmp_path / "config"
    (config / "tenants").mkdir(parents=True)
    (config / "reconciler.yaml").write_text(ROOT.format(guid=GUID, pattern="tenants/*.yaml"))
    for index in range(MIN_FILES + 8):
        (config / "tenants" / f"t{index:03}.yaml").write_text(TENANT.format(name=f"t{index:03}"))
    big = config / "tenants" / "zzz-big.yaml"
    big.write_bytes(b"tenants: {}\n" + b"#" * MAX_FILE_BYTES)
    result = _cli(config, "plan")
    assert result.returncode == 1
    line = _one_error_line(result.stderr)
    assert "zzz-big.yaml" in line and "the limit is" in line


@pytest.mark.finding(10)
def test_nesting_too_deep_is_refused_with_a_position(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tenant file nested hundreds of levels deep is a one-line YAML error at its line."""
    config = tmp_path / "config"
    (config / "tenants").mkdir(parents=True)
    (config / "reconciler.yaml").write_text(ROOT.format(guid=GUID, pattern="tenants/*.yaml"))
    (config / "tenants" / "deep.yaml").write_text("tenants:\n  x: " + "[" * 500 + "]" * 500 + "\n")
    monkeypatch.chdir(config)
    result = run(["-C", ".", "validate"], {"ADO_CLIENT_SECRET": "review-secret"})
    assert result.exit_code == 1
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    line = _one_error_line(result.stderr)
    assert line.startswith("error: tenants/deep.yaml:2:") and "nested" in line, line


@pytest.mark.finding(8)
def test_a_fifo_as_the_root_file_does_not_hang_plan(tmp_path: Path) -> None:
    """`plan` reads reconciler.yaml first for the parse-ahead worker: a FIFO there is refused, not waited on."""
    config = tmp_path / "config"
    config.mkdir()
    os.mkfifo(config / "reconciler.yaml")
    try:
        result = _cli(config, "plan", timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("plan blocked opening a FIFO")
    assert result.returncode == 1
    assert "reconciler.yaml" in _one_error_line(result.stderr)


@pytest.mark.finding(8)
@pytest.mark.parametrize("kind", ["fifo", "oversized"])
def test_a_secret_file_that_is_a_fifo_or_huge_is_refused(tmp_path: Path, kind: str) -> None:
    """`${file:}` reads only a regular file of bounded size: a FIFO does not hang, a huge file is not read."""
    config = tmp_path / "config"
    (config / "secrets").mkdir(parents=True)
    (config / "reconciler.yaml").write_text(ROOT.format(guid=GUID, pattern="t.yaml").replace(
        "${env:ADO_CLIENT_SECRET}", "${file:secrets/ado}"))
    (config / "t.yaml").write_text(TENANT.format(name="acme"))
    if kind == "fifo":
        os.mkfifo(config / "secrets" / "ado")
    else:
        (config / "secrets" / "ado").write_bytes(b"x" * (4 * 1024 * 1024))
    try:
        result = _cli(config, "validate", timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("validate blocked reading the secret file")
    assert result.returncode == 1
    line = _one_error_line(result.stderr)
    assert line.startswith("error: reconciler.yaml:7:") and "secrets/ado" in line, line


# -- finding 10: include chains and other recursion on user data ---------------------------------------------------

def _chain(config: Path, depth: int) -> None:
    (config / "chain").mkdir(parents=True)
    (config / "reconciler.yaml").write_text(ROOT.format(guid=GUID, pattern="chain/f0000.yaml"))
    for index in range(depth):
        nxt = f"include: [f{index + 1:04}.yaml]\n" if index + 1 < depth else TENANT.format(name="deep")
        (config / "chain" / f"f{index:04}.yaml").write_text(nxt)


@pytest.mark.finding(10)
def test_an_include_chain_1500_deep_is_a_clear_error(tmp_path: Path) -> None:
    """No RecursionError: a one-line error at the include that goes too deep, naming the chain (abbreviated)."""
    config = tmp_path / "config"
    _chain(config, 1500)
    result = _cli(config, "validate")
    assert result.returncode == 1
    assert "internal error" not in result.stderr and "RecursionError" not in result.stderr
    line = _one_error_line(result.stderr)
    assert "include" in line and "deep" in line
    assert "reconciler.yaml -> chain/f0000.yaml" in line and "..." in line
    assert len(line) < 600


def test_a_moderate_include_chain_still_loads(tmp_path: Path) -> None:
    """Chains well within the limit load as before."""
    config = tmp_path / "config"
    _chain(config, 10)
    result = _cli(config, "validate")
    assert result.returncode == 0, result.stderr


def test_an_include_cycle_is_an_error_naming_it(tmp_path: Path) -> None:
    """a.yaml includes b.yaml includes a.yaml: one line naming the cycle."""
    config = tmp_path / "config"
    config.mkdir()
    (config / "reconciler.yaml").write_text(ROOT.format(guid=GUID, pattern="a.yaml"))
    (config / "a.yaml").write_text("include: [b.yaml]\n")
    (config / "b.yaml").write_text("include: [a.yaml]\n")
    result = _cli(config, "validate")
    assert result.returncode == 1
    line = _one_error_line(result.stderr)
    assert "include cycle" in line and "a.yaml -> b.yaml -> a.yaml" in line


@pytest.mark.finding(10)
def test_a_deep_environment_overlay_is_a_clear_error(tmp_path: Path) -> None:
    """An overlay nested deeper than the YAML limit fails at its line (the overlay merge never recurses that far)."""
    config = tmp_path / "config"
    (config / "environments").mkdir(parents=True)
    (config / "reconciler.yaml").write_text(ROOT.format(guid=GUID, pattern="t.yaml"))
    (config / "t.yaml").write_text(TENANT.format(name="acme"))
    deep = "tenants:\n  acme:\n" + "".join("  " * (i + 2) + f"k{i}:\n" for i in range(996)) + "  " * 998 + "v: 1\n"
    (config / "environments" / "prod.yaml").write_text(deep)
    result = _cli(config, "--env", "prod", "validate")
    assert result.returncode == 1
    assert "internal error" not in result.stderr
    line = _one_error_line(result.stderr)
    assert "environments/prod.yaml:" in line and "nested" in line

