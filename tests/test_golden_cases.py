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


# -- status cases ------------------------------------------------------------------------------------------------
# Each `tests/status_cases/<situation>/` holds a recorded state (`state.json`), what the sealed tokens say of
# themselves (`tokens.json`: expiry, whether a refresh token exists and when it was issued — an address left out
# was not opened), the latest checks kept beside the state (`checks.json`: at, outcome, message), and `case.json`: what
# the case is about, the word each installation must get (not rewritten by UPDATE_GOLDEN) and an optional window.
# Expected: status.json, status.txt (piped, not a terminal) and status.md, at the fixed clock NOW.

STATUS_CASES = Path(__file__).parent / "status_cases"
STATUS_OUTPUTS = ("status.json", "status.txt", "status.md")


def _read_json(path: Path) -> dict:  # type: ignore[type-arg]
    return json.loads(path.read_text()) if path.exists() else {}


def _status_document(case: Path) -> dict:  # type: ignore[type-arg]
    """The status document of a case, derived as `reconciler status` derives it, without a vault."""
    from reconciler.app.status import partner_facts
    from reconciler.durations import parse_duration
    from reconciler.render.status import status_document
    from reconciler.state.model import InstallationRecord, decode_state
    from reconciler.state.service_store import CheckResult
    from reconciler.status import StatusReport, StatusRow, TokenFacts, installation_status, migration_of

    spec = _read_json(case / "case.json")
    doc = decode_state((case / "state.json").read_bytes(), "state.json")
    tokens, checks = _read_json(case / "tokens.json"), _read_json(case / "checks.json")
    window = parse_duration(spec.get("window", "14d"))
    facts = partner_facts(doc)
    records = {a: r for a, r in doc.resources.items() if isinstance(r, InstallationRecord)}
    rows = []
    for address, record in sorted(records.items(), key=lambda item: (item[1].tenant, item[0])):
        kept = checks.get(address)
        check = None if kept is None else CheckResult(
            address, dt.datetime.fromisoformat(kept["at"]), kept["outcome"], kept["message"]
        )
        held = tokens.get(address)
        token_facts = None if held is None else TokenFacts(**{
            k: dt.datetime.fromisoformat(v) if k.endswith("_at") else v for k, v in held.items()
        })
        status = installation_status(
            record, token_facts, now=NOW, partner=facts.get(record.partner), window=window, check=check
        )
        rows.append(StatusRow(address, record, status, facts.get(record.partner), migration_of(record, status, facts, NOW)))
    return status_document(StatusReport(NOW, doc.environment, window, rows, total=len(records)))


def _status_outputs(case: Path) -> dict[str, str]:
    from reconciler.render.status import render_status_json, render_status_markdown_parts, render_status_text

    document = _status_document(case)
    [markdown] = render_status_markdown_parts(document)
    return {
        "status.json": render_status_json(document),
        "status.txt": render_status_text(document, terminal=False),
        "status.md": markdown,
    }


@pytest.mark.parametrize("case", sorted(p.name for p in STATUS_CASES.iterdir() if p.is_dir()))
def test_status_case(case: str) -> None:
    """Each status situation renders to its expected JSON, text and Markdown, byte for byte, and every
    installation gets the word its case declares."""
    directory = STATUS_CASES / case
    outputs = _status_outputs(directory)
    words = {e["address"]: e["status"] for e in json.loads(outputs["status.json"])["installations"]}
    assert words == _read_json(directory / "case.json")["words"], words
    if UPDATE_GOLDEN:
        for name, text in outputs.items():
            (directory / name).write_text(text)
    for name, text in outputs.items():
        expected = (directory / name).read_text() if (directory / name).exists() else None
        assert expected is not None, f"{case}: missing {name} (run with UPDATE_GOLDEN=1)"
        assert text == expected, f"{case}/{name} differs"


def test_every_status_situation_has_a_case() -> None:
    """Every status word, and each way to reach it, has a golden status case."""
    required = {
        "healthy", "stale_check",
        "expiring_client_secret", "expiring_client_secret_wide_window", "expiring_refresh_token_unused",
        "expiring_no_refresh_token", "expiring_spa",
        "needs_reauthorization_revoked", "needs_reauthorization_rejected", "needs_reauthorization_spa_lapsed",
        "needs_reauthorization_platform", "needs_reauthorization_no_tokens",
        "needs_reauthorization_no_refresh_token_expired",
        "pending_new", "pending_reauthorization",
        "error_partner_fault", "error_provider_unreachable", "error_client_secret_expired", "error_tokens_unreadable",
    }
    present = {p.name for p in STATUS_CASES.iterdir() if p.is_dir()}
    assert required <= present, required - present
    from reconciler.status import STATUS_WORDS

    declared = {w for name in present for w in _read_json(STATUS_CASES / name / "case.json")["words"].values()}
    assert declared == set(STATUS_WORDS)
