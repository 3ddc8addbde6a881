"""The attribute lines under a planned change: what differs, shown once per flattened key."""

from __future__ import annotations

from typing import Any

from reconciler.render.diff import AttributeLine, attribute_lines
from reconciler.render.document import ChangeDoc


def _change(action: str, before: dict[str, Any] | None, after: dict[str, Any] | None) -> ChangeDoc:
    return ChangeDoc(address="installation.acme.ado", kind="installation", tenant="acme", action=action, reasons=[],
                     warnings=[], pending=False, before=before, after=after)


def test_an_update_shows_only_what_differs_by_flattened_key() -> None:
    before = {"scopes": ["vso.code", "vso.work_full"], "parameters": {"organization": "acme", "project": "P"},
              "partner": "ado"}
    after = {"scopes": ["vso.work_full", "vso.code", "vso.project"], "parameters": {"organization": "acme",
             "project": "Q"}, "partner": "ado", "protect": True}
    assert list(attribute_lines(_change("update", before, after))) == [
        AttributeLine("~", "scopes", old=["vso.code", "vso.work_full"], new=["vso.work_full", "vso.code", "vso.project"]),
        AttributeLine("~", "parameters.project", old="P", new="Q"),
        AttributeLine("+", "protect", new=True),
    ]


def test_order_of_a_list_and_the_type_of_a_number_are_no_difference() -> None:
    before = {"scopes": ["b", "a"], "lifetime": 1}
    after = {"scopes": ["a", "b"], "lifetime": 1.0}
    assert list(attribute_lines(_change("reauthorize", before, after))) == []


def test_recorded_only_attributes_are_never_diffed_but_shown_on_delete() -> None:
    before = {"status": "authorized", "granted_scopes": ["a"], "scopes": ["a"]}
    after = {"scopes": ["a"]}
    assert list(attribute_lines(_change("update", before, after))) == []
    removed = list(attribute_lines(_change("delete", before, None)))
    assert [line.key for line in removed] == ["status", "granted_scopes", "scopes"]
    assert {line.sign for line in removed} == {"-"}


def test_a_removed_attribute_is_shown_with_its_old_value() -> None:
    lines = list(attribute_lines(_change("update", {"project": "P", "x": 1}, {"x": 2})))
    assert lines == [AttributeLine("~", "x", old=1, new=2), AttributeLine("-", "project", old="P")]
