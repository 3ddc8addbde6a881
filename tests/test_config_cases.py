"""Configuration rules proven by data: each `tests/cases/config/<module>-<rule>/` holds a configuration
(`reconciler.yaml`, maybe more files, an `env` file of variables, an `environment` file naming the overlay) and
`expected.txt`: the exact error lines, or `valid: ...` with the warnings. Set UPDATE_GOLDEN=1 to rewrite the
expected files, then review the diff."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from reconciler.config import load_config
from reconciler.errors import ConfigError
from tests.conftest import UPDATE_GOLDEN, read_env_file, snapshot

CASES = Path(__file__).parent / "cases" / "config"
TODAY = dt.date(2026, 11, 2)


def _outcome(case: Path) -> str:
    environment = (case / "environment").read_text().strip() if (case / "environment").exists() else None
    try:
        loaded = load_config(Path("."), environ=read_env_file(case / "env"), today=TODAY, environment=environment)
    except ConfigError as exc:
        return "\n".join(exc.lines()) + "\n"
    desired = loaded.desired
    lines = [f"valid: {len(desired.partners)} partners, {len(desired.installations)} installations"]
    lines += [f"warning: {warning}" for warning in loaded.warnings]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("case", sorted(p.name for p in CASES.iterdir() if p.is_dir()))
def test_config_case(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading each case gives exactly its expected lines, and writes nothing."""
    directory = CASES / case
    monkeypatch.chdir(directory)
    before = {k: v for k, v in snapshot(directory).items() if k != "expected.txt"}
    outcome = _outcome(directory)
    assert {k: v for k, v in snapshot(directory).items() if k != "expected.txt"} == before
    if UPDATE_GOLDEN:
        (directory / "expected.txt").write_text(outcome)
    assert (directory / "expected.txt").exists(), f"{case}: missing expected.txt (run with UPDATE_GOLDEN=1)"
    assert outcome == (directory / "expected.txt").read_text()


RULE_MODULES = {
    "documents",
    "overlay",
    "translate",
    "values",
    "platform",
    "service",
    "partners",
    "placements",
    "installations",
}


def test_every_rule_module_has_a_case() -> None:
    """Each case is named after the module whose rule it proves, and each rule module has cases."""
    package = Path(__file__).resolve().parent.parent / "reconciler" / "config"
    assert all((package / f"{name}.py").is_file() for name in RULE_MODULES)
    prefixes = {p.name.split("-", 1)[0] for p in CASES.iterdir() if p.is_dir()}
    assert prefixes == RULE_MODULES
