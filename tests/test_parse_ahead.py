"""Parsing ahead on a second core: the worker's share is used, and results never depend on it.

The worker is used only in a process without other threads, so these tests run the tool in subprocesses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from reconciler.config.ahead import MIN_FILES

ROOT = """\
version: 1
platform: {service_domain: app-h.cyclr.com}
partners:
  microsoft-azure-devops:
    auth: azure-devops-oauth
    client_id: 11111111-aaaa-4bbb-8ccc-000000000001
    client_secret: ${env:ADO_CLIENT_SECRET}
include: [tenants/*.yaml]
"""
TENANT = """\
tenants:
  {name}:
    installations:
      ado-main:
        connector: microsoft-azure-devops
        parameters: {{organization: org-{name}, project: Platform}}
        scopes: [vso.work_full, vso.project]
"""
FILES = MIN_FILES + 36


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "reconciler.yaml").write_text(ROOT)
    (tmp_path / "tenants").mkdir()
    for index in range(FILES):
        (tmp_path / "tenants" / f"t{index:03}.yaml").write_text(TENANT.format(name=f"t{index:03}"))
    return tmp_path


def _reconciler(config: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ADO_CLIENT_SECRET": "parse-ahead-secret", **extra}
    return subprocess.run(
        [sys.executable, "-m", "reconciler", "--no-cache", "-C", str(config), *args],
        check=False, capture_output=True, text=True, env=env, timeout=120,
    )


def test_the_worker_parses_a_share_and_its_results_equal_parsing_here(config: Path) -> None:
    script = textwrap.dedent(
        f"""
        import json, sys, time
        from pathlib import Path
        from reconciler.config import ahead
        from reconciler.config.includes import glob_matches
        from reconciler.yamlio import load_yaml_text

        paths = glob_matches(Path({str(config)!r}), "tenants/*.yaml")
        parse = lambda raw: load_yaml_text(raw.decode())
        worker = ahead.parse_ahead(paths, parse)
        assert worker is not None, "not started"
        deadline = time.monotonic() + 60  # on a busy machine the worker may start late: let it claim a share
        while ahead._SLOT.unpack_from(worker._shared, ahead._TAIL)[0] == len(paths) and time.monotonic() < deadline:
            time.sleep(0.01)
        from_worker = equal = 0
        for path in paths:
            raw = path.read_bytes()
            data = worker.get(path, raw)
            if data is not ahead.MISSING:
                from_worker += 1
                equal += data == parse(raw)
        worker.close()
        print(json.dumps({{"from_worker": from_worker, "equal": equal, "files": len(paths)}}))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    counts = json.loads(done.stdout)
    assert counts["files"] == FILES
    assert 0 < counts["from_worker"] <= FILES
    assert counts["equal"] == counts["from_worker"]


def test_a_plan_is_the_same_with_and_without_the_worker(config: Path) -> None:
    with_worker = _reconciler(config, "plan", "--format", "json")
    without = _reconciler(config, "plan", "--format", "json", RECONCILER_PARSE_AHEAD="0")
    assert with_worker.returncode == without.returncode == 0, with_worker.stderr
    assert with_worker.stdout == without.stdout
    assert json.loads(with_worker.stdout)["summary"]["create"] == FILES + 1  # and the partner


@pytest.mark.parametrize("where", ["first", "last"])
def test_a_broken_file_is_reported_at_its_line_whichever_side_parsed_it(config: Path, where: str) -> None:
    name = "t000.yaml" if where == "first" else f"t{FILES - 1:03}.yaml"
    broken = config / "tenants" / name
    broken.write_text(broken.read_text().replace("scopes: [vso.work_full, vso.project]", "scopes: [vso.work_full"))
    done = _reconciler(config, "plan")
    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert lines[0].startswith(f"{config / 'tenants' / name}:") or lines[0].startswith(f"error: {config}"), lines
    assert name in lines[0] and "invalid YAML" in lines[0]
    assert "Traceback" not in done.stderr


def test_no_worker_process_is_left_behind(config: Path) -> None:
    """The worker is reaped (or stopped) before the command ends: no zombie or orphan remains."""
    script = textwrap.dedent(
        f"""
        import os, sys
        from reconciler.cli import cli
        try:
            cli.main(["--no-cache", "-C", {str(config)!r}, "plan"], standalone_mode=False)
        finally:
            children = [p for p in os.listdir("/proc") if p.isdigit()
                        and open(f"/proc/{{p}}/stat").read().split(") ")[1].split()[1] == str(os.getpid())]
            print("children", len(children), file=sys.stderr)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=120,
        env={**os.environ, "ADO_CLIENT_SECRET": "parse-ahead-secret"},
    )
    assert "children 0" in done.stderr, done.stderr
