"""State format 1 -> 2 against a real format-1 document (tests/cases/state-v1/, written by the format-1 release):
read without writing, planned as that release planned it, its pending authorization still matching, and the
first write storing format 2 that plans the same."""

from __future__ import annotations

import base64
import datetime as dt
import json
import shutil
from pathlib import Path

import pytest

from reconciler.app.planning import plan_config
from reconciler.app.workspace import Workspace
from reconciler.declared import target_digest
from reconciler.render import render_json
from reconciler.state.local import LocalBackend
from reconciler.state.model import Drift, InstallationRecord, decode_state, upgrade_record
from tests.conftest import read_env_file, run, snapshot

CASE = Path(__file__).parent / "cases" / "state-v1"
NOW = dt.datetime(2026, 11, 2, 9, 30, tzinfo=dt.UTC)  # as tests/test_golden_cases.py plans every case
EXTRA_PARTNER = """\
  extra:
    connector: microsoft-azure-devops
    auth: azure-devops-oauth
    client_id: 33333333-4444-4555-8666-777777777777
    client_secret: ${env:LEGACY_SECRET}
"""


@pytest.fixture
def v1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the format-1 case as the working directory."""
    directory = tmp_path / "state-v1"
    shutil.copytree(CASE, directory)
    monkeypatch.chdir(directory)
    return directory


def _changes(directory: Path) -> list[dict]:  # type: ignore[type-arg]
    doc = plan_config(Workspace(Path("."), read_env_file(directory / "env"), clock=lambda: NOW)).document
    return json.loads(render_json(doc))["changes"]  # type: ignore[no-any-return]


def test_the_golden_file_is_format_1() -> None:
    """The case holds what the format-1 release wrote (upgrading it is what is tested here)."""
    assert json.loads((CASE / "state" / "default.json").read_text())["format_version"] == 1


def test_reading_format_1_upgrades_in_memory_and_writes_nothing(v1: Path) -> None:
    """Through the local backend: drift words become the finding, declared scopes stay the declared scopes, and
    nothing on disk changes."""
    before = snapshot(v1)
    doc = LocalBackend(v1 / "state", "default").read()
    assert doc is not None and doc.format_version == 6 and doc.serial == 7
    initech = doc.resources["installation.initech.ado"]
    assert isinstance(initech, InstallationRecord) and initech.drift is Drift.REVOKED
    assert initech.drift.words == "token revoked"
    assert initech.scopes == ("vso.project", "vso.work_full")
    assert snapshot(v1) == before


def test_a_pending_authorization_of_format_1_still_matches(v1: Path) -> None:
    """The digest a format-1 pending record holds is the one the declaration gives today (so it is not reissued)."""
    loaded = plan_config(Workspace(Path("."), read_env_file(v1 / "env"), clock=lambda: NOW)).loaded
    doc = LocalBackend(v1 / "state", "default").read()
    assert doc is not None
    hooli = doc.resources["installation.hooli.ado"]
    assert isinstance(hooli, InstallationRecord) and hooli.pending is not None
    assert hooli.pending.target_digest == target_digest(loaded.desired.installations[hooli.address].declared)


def test_first_write_stores_format_2_and_plans_the_same(v1: Path) -> None:
    """Planned as the format-1 release planned it; an apply (a new partner) writes format 2, which plans the same
    for everything that was there."""
    expected = json.loads((CASE / "plan.json").read_text())["changes"]
    assert _changes(v1) == expected
    config = (v1 / "reconciler.yaml").read_text()
    (v1 / "reconciler.yaml").write_text(config.replace("tenants:\n", EXTRA_PARTNER + "tenants:\n"))
    key = base64.b64encode(b"upgrade-key-0123456789abcdef0123").decode()
    env = {**read_env_file(v1 / "env"), "RECONCILER_STATE_KEY": key}
    result = run(["-C", ".", "apply", "--auto-approve", "--target", "partner.extra"], env)
    assert result.exit_code == 0, result.stdout + result.stderr
    stored = json.loads((v1 / "state" / "default.json").read_text())
    assert stored["format_version"] == 6 and stored["serial"] == 8
    assert not any("requested_scopes" in r for r in stored["resources"].values())
    assert stored["resources"]["installation.initech.ado"]["drift"] == "revoked"
    after = [c for c in _changes(v1) if c["address"] != "partner.extra"]
    assert after == expected


@pytest.mark.parametrize(
    "record",
    [
        {"kind": "installation", "requested_scopes": ["a"], "drift": "token revoked"},
        {"kind": "installation", "scopes": ["a"], "drift": "revoked"},
        {"kind": "partner", "scopes": None},
    ],
)
def test_the_record_upgrade_is_idempotent(record: dict) -> None:  # type: ignore[type-arg]
    """Stores that keep records one by one may hold both formats: upgrading an upgraded record changes nothing."""
    once = upgrade_record(record)
    assert upgrade_record(once) == once
    assert "requested_scopes" not in once


def test_a_format_2_document_reads_as_written() -> None:
    """Decoding what the current format encodes gives the same document (the upgrade is not applied again)."""
    raw = (CASE / "state" / "default.json").read_bytes()
    doc = decode_state(raw, "v1")
    from reconciler.state.model import encode_state

    assert decode_state(encode_state(doc), "v2") == doc


def test_a_saved_plan_carries_what_each_change_moves_to(v1: Path) -> None:
    """`plan --out` stores the declaration of every change apply carries out (secrets by reference only), and
    reading the file gives the plan those targets."""
    from reconciler.crypto import StateKey
    from reconciler.planfile import read_plan_file

    raw_key = b"upgrade-key-0123456789abcdef0123"
    env = {**read_env_file(v1 / "env"), "RECONCILER_STATE_KEY": base64.b64encode(raw_key).decode()}
    assert run(["-C", ".", "plan", "--out", "plan.bin"], env).exit_code == 0
    text = (v1 / "plan.bin").read_text()
    assert not [value for value in env.values() if value in text]
    stored = json.loads(text)["targets"]
    assert sorted(stored) == ["installation.initech.ado"]  # the one change; no-ops are not carried out
    saved = read_plan_file(
        v1 / "plan.bin", key=StateKey(raw_key, "test"), environment="default", resolve_secret=lambda ref: "x"
    )
    fresh = plan_config(Workspace(Path("."), read_env_file(v1 / "env"), clock=lambda: NOW)).plan
    [change] = [c for c in saved.plan.changes if c.target is not None]
    assert change.address == "installation.initech.ado"
    assert change.target == next(c.target for c in fresh.changes if c.address == change.address)


def test_a_malformed_format_5_record_is_a_state_error_not_a_crash() -> None:
    """The format 5 -> 6 upgrade reads partner names only where they are strings: anything else is left for
    validation to report, naming the file."""
    from reconciler.errors import StateError

    for partner, installation in (({"migrate_to": ["entra"]}, {"partner": "entra"}), ({"migrate_to": "entra"}, {"partner": []})):
        raw = {"format_version": 5, "lineage": "11111111-1111-4111-8111-111111111111", "serial": 3,
               "environment": "default", "resources": {
                   "partner.legacy": {"kind": "partner", "name": "legacy", **partner},
                   "installation.acme.ado": {"kind": "installation", "tenant": "acme", "name": "ado", **installation}}}
        with pytest.raises(StateError, match=r"state/default\.json"):
            decode_state(json.dumps(raw).encode(), "state/default.json")
