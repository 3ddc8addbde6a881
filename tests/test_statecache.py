"""The state document kept between reads: a write (a snapshot, or a journal record) is seen at the next read."""

from __future__ import annotations

from pathlib import Path

from reconciler.app.statecache import MAX_AGE, CachedState
from reconciler.state.local import LocalBackend
from reconciler.state.model import StateDocument
from tests.sandbox_support import PARTNER


def test_kept_until_the_state_changes_or_ages(tmp_path: Path) -> None:
    """No state: None. Unchanged: the same document, unparsed. A snapshot write, a journal append by another
    backend, or `MAX_AGE` passing: read again."""
    now = [0.0]
    writer, reader = LocalBackend(tmp_path, "default"), LocalBackend(tmp_path, "default")
    cached = CachedState(reader, clock=lambda: now[0])
    assert cached.read() is None
    with writer.lock("test"):
        first = writer.write(StateDocument.new("default"), expected_serial=None)
    seen = cached.read()
    assert seen is not None and seen.serial == first.serial
    assert cached.read() is seen
    with writer.lock("test"):
        second = writer.write(first.with_record("partner.ado", PARTNER), expected_serial=first.serial,
                              changed={"partner.ado"})
    changed = cached.read()
    assert changed is not None and changed.serial == second.serial and "partner.ado" in changed.resources
    assert cached.read() is changed
    now[0] += MAX_AGE
    assert cached.read() is not changed
