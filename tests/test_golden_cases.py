"""Golden planner cases: each `tests/cases/<rule>/` holds a config, an optional recorded state and the expected
plan in every format (or the expected error); `tests/cases/config/` holds the loader's cases instead
(tests/test_config_cases.py), and `tests/cases/bad-input/` the bad-input catalog
(tests/reliability/test_bad_inputs.py). Set UPDATE_GOLDEN=1 to rewrite the expected files, then review the diff."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from deepdiff import DeepDiff

from reconciler.app.planning import plan_config
from reconciler.app.workspace import Workspace
from reconciler.errors import ReconcilerError
from reconciler.render import render_json, render_markdown, render_text
from tests.conftest import UPDATE_GOLDEN, read_env_file, snapshot

CASES = Path(__file__).parent / "cases"
NOW = dt.datetime(2026, 11, 2, 9, 30, tzinfo=dt.UTC)


def _outputs(case: Path) -> dict[str, str]:
    environ = read_env_file(case / "env")
    try:
        doc = plan_config(Workspace(Path("."), environ, clock=lambda: NOW)).document
    except ReconcilerError as exc:
        return {"error.txt": "\n".join(exc.lines()) + "\n"}
    return {"plan.json": render_json(doc), "plan.txt": render_text(doc), "plan.md": render_markdown(doc)}


# Not golden cases: the loader's (tests/test_config_cases.py) and the bad-input catalog (tests/reliability/).
OTHER_SUITES = {"config", "bad-input"}


@pytest.mark.parametrize("case", sorted(p.name for p in CASES.iterdir() if p.is_dir() and p.name not in OTHER_SUITES))
def test_golden_case(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The plan for each golden case equals its expected files, byte for byte, and writes nothing."""
    directory = CASES / case
    monkeypatch.chdir(directory)
    expected_names = {"plan.json", "plan.txt", "plan.md", "error.txt"}
    before = {k: v for k, v in snapshot(directory).items() if k not in expected_names}
    outputs = _outputs(directory)
    assert {k: v for k, v in snapshot(directory).items() if k not in expected_names} == before
    if UPDATE_GOLDEN:
        for name in expected_names:
            (directory / name).unlink(missing_ok=True)
        for name, text in outputs.items():
            (directory / name).write_text(text)
    for name, text in outputs.items():
        expected = (directory / name).read_text() if (directory / name).exists() else None
        assert expected is not None, f"{case}: missing {name} (run with UPDATE_GOLDEN=1)"
        if name == "plan.json":
            assert not DeepDiff(json.loads(expected), json.loads(text)), DeepDiff(json.loads(expected), json.loads(text))
        assert text == expected, f"{case}/{name} differs"
    assert not ({n for n in expected_names if (directory / n).exists()} - outputs.keys()), "stale expected files"


def test_every_planner_rule_has_a_case() -> None:
    """The rules the planner implements each have a golden case directory."""
    required = {
        "no_state", "no_changes", "create_installation", "scopes_added", "scopes_removed",
        "scopes_reordered_duplicated", "scopes_not_granted", "partner_client_id_changed",
        "partner_secret_reference_changed", "organization_project_changed", "installation_removed",
        "partner_removed_in_use", "mixed",
        # tokens are bound to the endpoints that issued and accept them (a pending link to its authorize endpoint)
        "token_endpoint_changed", "api_endpoint_changed", "authorize_endpoint_changed",
        "pending_api_endpoint_changed", "pending_authorize_endpoint_changed",
    }
    assert required <= {p.name for p in CASES.iterdir()}
