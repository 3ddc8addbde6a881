"""Local state backend: atomic writes with a backup, compare-and-swap on serial, the journal, and corrupt or
unknown files refused without being touched (locking is in the backend contract suite, for every backend)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reconciler.errors import StaleStateError, StateError
from reconciler.state.local import LocalBackend
from reconciler.state.model import FORMAT_VERSION, StateDocument, decode_state, encode_state
from tests.sandbox_support import PARTNER

LINEAGE = b"0f5a2c3e-1b7d-4e8f-9a6b-2c4d6e8f0a1b"


def _write(backend: LocalBackend, doc: StateDocument, expected: int | None) -> StateDocument:
    with backend.lock("test"):
        return backend.write(doc, expected_serial=expected)


def test_read_of_missing_state_creates_nothing(tmp_path: Path) -> None:
    """Reading state that does not exist returns None and leaves the directory untouched."""
    backend = LocalBackend(tmp_path / "state", "default")
    assert backend.read() is None
    assert not (tmp_path / "state").exists()


def test_first_write_sets_serial_one_and_keeps_lineage(tmp_path: Path) -> None:
    """The first write stores serial 1; the lineage is the document's and survives later writes."""
    backend = LocalBackend(tmp_path, "default")
    doc = StateDocument.new("default")
    written = _write(backend, doc, None)
    assert written.serial == 1
    again = _write(backend, written.with_resources({PARTNER.address: PARTNER}), 1)
    assert again.serial == 2
    assert backend.read() == again
    assert backend.read().lineage == doc.lineage  # type: ignore[union-attr]


def test_write_keeps_previous_version_as_backup(tmp_path: Path) -> None:
    """Each write leaves the previous document, byte for byte, in `<env>.json.backup`."""
    backend = LocalBackend(tmp_path, "default")
    first = _write(backend, StateDocument.new("default"), None)
    first_bytes = backend.path.read_bytes()
    _write(backend, first.with_resources({PARTNER.address: PARTNER}), first.serial)
    assert backend.backup_path.read_bytes() == first_bytes
    assert oct(backend.path.stat().st_mode & 0o777) == "0o600"


def test_stale_serial_is_refused_and_nothing_written(tmp_path: Path) -> None:
    """A write based on an older serial fails and leaves the file as it was (no lost update)."""
    backend = LocalBackend(tmp_path, "default")
    first = _write(backend, StateDocument.new("default"), None)
    second = _write(backend, first.with_resources({PARTNER.address: PARTNER}), first.serial)
    before = backend.path.read_bytes()
    with pytest.raises(StaleStateError, match="serial moved from 1 to 2"):
        _write(backend, first.with_resources({}), first.serial)
    assert backend.path.read_bytes() == before
    assert backend.read() == second


def test_unchanged_document_keeps_its_serial(tmp_path: Path) -> None:
    """Writing the same resources again changes nothing on disk: the serial moves only with the document."""
    backend = LocalBackend(tmp_path, "default")
    first = _write(backend, StateDocument.new("default").with_resources({PARTNER.address: PARTNER}), None)
    before = backend.path.read_bytes()
    assert _write(backend, first, first.serial).serial == first.serial
    assert backend.path.read_bytes() == before


def test_write_of_another_environment_is_refused(tmp_path: Path) -> None:
    """A document of environment 'prod' is never written into default.json."""
    with pytest.raises(StateError, match="refusing to write environment 'prod'"):
        _write(LocalBackend(tmp_path, "default"), StateDocument.new("prod"), None)
    assert not (tmp_path / "default.json").exists()


def test_write_refuses_other_lineage(tmp_path: Path) -> None:
    """A document of another lineage never replaces the stored one."""
    backend = LocalBackend(tmp_path, "default")
    first = _write(backend, StateDocument.new("default"), None)
    with pytest.raises(StaleStateError, match="lineage"):
        _write(backend, StateDocument.new("default").model_copy(update={"serial": 1}), first.serial)


def test_write_when_state_appeared_meanwhile_is_refused(tmp_path: Path) -> None:
    """A writer that saw no state must not overwrite one created meanwhile."""
    backend = LocalBackend(tmp_path, "default")
    _write(backend, StateDocument.new("default"), None)
    with pytest.raises(StaleStateError, match="created meanwhile"):
        _write(backend, StateDocument.new("default"), None)


def test_write_without_lock_is_refused(tmp_path: Path) -> None:
    """Writes require the lock."""
    with pytest.raises(StateError, match="without holding the lock"):
        LocalBackend(tmp_path, "default").write(StateDocument.new("default"), expected_serial=None)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"format_version": 1, "lineage": "x", "ser', "not valid JSON"),
        (b"\xff\xfe garbage", "not valid"),
        (b"[1, 2]", "not a reconciler state file"),
        (b'{"format_version": 99, "lineage": "x", "serial": 1}', "newer than this reconciler"),
        (b'{"format_version": 0, "lineage": "x", "serial": 1}', "not supported"),
        (b'{"format_version": 1, "lineage": "x", "serial": 1, "environment": "default"}', "invalid state at lineage"),
        (b'{"format_version": true, "lineage": "x", "serial": 1}', "not a reconciler state file"),
        (b'{"format_version": 1, "lineage": "' + LINEAGE + b'", "serial": "3", "environment": "default"}', "at serial"),
        (b"[" * 100000, "nested too deeply"),
        (
            b'{"format_version": 1, "lineage": "' + LINEAGE + b'", "serial": 1, "environment": "default", "resources": '
            b'{"partner.other": ' + PARTNER.model_dump_json().encode() + b"}}",
            "records partner.ado",
        ),
    ],
)
def test_bad_state_file_is_a_clear_error_and_never_overwritten(tmp_path: Path, content: bytes, message: str) -> None:
    """A corrupt, foreign or newer state file raises a StateError naming it, and no write can replace it."""
    backend = LocalBackend(tmp_path, "default")
    backend.path.write_bytes(content)
    with pytest.raises(StateError, match=message):
        backend.read()
    with pytest.raises(StateError):
        _write(backend, StateDocument.new("default"), None)
    assert backend.path.read_bytes() == content
    assert not backend.backup_path.exists()


def test_state_of_another_environment_is_refused(tmp_path: Path) -> None:
    """A file holding environment 'prod' is not read as 'default'."""
    doc = StateDocument.new("prod")
    (tmp_path / "default.json").write_bytes(encode_state(doc))
    with pytest.raises(StateError, match="environment 'prod'"):
        LocalBackend(tmp_path, "default").read()


def test_encoding_round_trips(tmp_path: Path) -> None:
    """encode_state/decode_state are inverse, and the encoding is stable."""
    doc = StateDocument.new("default").with_resources({PARTNER.address: PARTNER})
    raw = encode_state(doc)
    assert decode_state(raw, "x") == doc
    assert encode_state(decode_state(raw, "x")) == raw
    assert json.loads(raw)["format_version"] == FORMAT_VERSION == 6


def _many(n: int) -> dict:  # type: ignore[type-arg]
    return {f"partner.p{i}": PARTNER.model_copy(update={"name": f"p{i}"}) for i in range(n)}


def test_steps_append_to_a_journal_that_readers_replay(tmp_path: Path) -> None:
    """Writes naming what changed append journal records; another reader sees every step; releasing the lock
    folds the journal into one snapshot."""
    backend = LocalBackend(tmp_path, "default")
    with backend.lock("apply"):
        doc = backend.write(StateDocument.new("default").with_resources(_many(3)), expected_serial=None)
        snapshot = backend.path.read_bytes()
        for i in range(3):
            doc = backend.write(doc.with_record(f"partner.p{i}", None), expected_serial=doc.serial, changed={f"partner.p{i}"})
            doc = backend.write(
                doc.with_record(f"partner.q{i}", PARTNER.model_copy(update={"name": f"q{i}"})),
                expected_serial=doc.serial,
                changed={f"partner.q{i}"},
            )
        assert backend.path.read_bytes() == snapshot  # nothing rewritten per step
        seen = LocalBackend(tmp_path, "default").read()
        assert seen is not None and seen.serial == 7 and sorted(seen.resources) == ["partner.q0", "partner.q1", "partner.q2"]
    assert backend.journal_path.read_bytes() == b""
    assert LocalBackend(tmp_path, "default").read() == seen


def test_torn_journal_tail_is_dropped(tmp_path: Path) -> None:
    """A record cut short by a crash (or altered) is ignored, and so is everything after it."""
    backend = LocalBackend(tmp_path, "default")
    with backend.lock("apply"):
        doc = backend.write(StateDocument.new("default").with_resources(_many(2)), expected_serial=None)
        doc = backend.write(doc.with_record("partner.p0", None), expected_serial=doc.serial, changed={"partner.p0"})
        journal = backend.journal_path.read_bytes()
        backend._journal_bytes = 0  # as if the process died here: no fold at release
    backend.journal_path.write_bytes(journal + journal[: len(journal) // 2])
    seen = LocalBackend(tmp_path, "default").read()
    assert seen is not None and seen.serial == 2 and sorted(seen.resources) == ["partner.p1"]
    tampered = journal.replace(b"partner.p0", b"partner.p1")
    backend.journal_path.write_bytes(tampered)
    assert LocalBackend(tmp_path, "default").read().serial == 1  # type: ignore[union-attr]


def test_journal_keeps_a_step_cheap_at_scale(tmp_path: Path) -> None:
    """Persisting one step of a 5,000-resource state appends one small record, not the whole document."""
    backend = LocalBackend(tmp_path, "default")
    with backend.lock("apply"):
        doc = backend.write(StateDocument.new("default").with_resources(_many(5000)), expected_serial=None)
        size = backend.path.stat().st_size
        doc = backend.write(doc.with_record("partner.p1", None), expected_serial=doc.serial, changed={"partner.p1"})
        assert backend.journal_path.stat().st_size < size / 1000
