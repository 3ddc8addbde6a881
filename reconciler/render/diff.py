"""Attribute-level differences between a change's `before` and `after`, shared by the text renderers.

Pure: flattens nested mappings to dotted keys; what changed is decided by DeepDiff (lists of scopes compare
without order), on a change whose shown attributes differ at all — a plain comparison first, since most do not.
Owns: which attributes a change shows, and how a value is written. Must not: decide what changed in state (the
planner does), or show a recorded-only attribute as a difference from the configuration.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from reconciler.render.document import ChangeDoc

__all__ = ["AttributeLine", "attribute_lines", "format_value"]

# Recorded-only attributes: shown when an installation is deleted, never diffed against the configuration.
RECORDED_ONLY = ("granted_scopes", "status", "authorized_at", "expires_at", "authorization_url", "link")


@dataclass(frozen=True)
class AttributeLine:
    sign: str  # "+", "-", "~"
    key: str
    old: Any = None
    new: Any = None


def _flatten(values: Mapping[str, Any] | None, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in (values or {}).items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{name}."))
        elif value is not None:
            out[name] = value
    return out


def _shown(values: dict[str, Any]) -> dict[str, Any]:
    """`values` without the recorded-only attributes (never diffed against the configuration)."""
    prefixes = tuple(f"{k}." for k in RECORDED_ONLY)
    return {k: v for k, v in values.items() if k not in RECORDED_ONLY and not k.startswith(prefixes)}


def _changed_keys(before: dict[str, Any], after: dict[str, Any]) -> set[str]:
    """The flattened keys whose values differ, lists compared without order (imported here: only a plan that
    shows an update pays for DeepDiff)."""
    from deepdiff import DeepDiff

    diff = DeepDiff(before, after, ignore_order=True, ignore_numeric_type_changes=True, view="tree")
    return {str(level.path(output_format="list")[0]) for levels in diff.values() for level in levels}


def attribute_lines(change: ChangeDoc) -> Iterator[AttributeLine]:
    """What to show under a change: everything for create/delete, only what differs otherwise."""
    before, after = _flatten(change.before), _flatten(change.after)
    if change.action == "create":
        yield from (AttributeLine("+", k, new=v) for k, v in after.items())
    elif change.action == "delete":
        yield from (AttributeLine("-", k, old=v) for k, v in before.items())
    else:
        before, after = _shown(before), _shown(after)
        if before == after:
            return
        changed = _changed_keys(before, after)
        for key in sorted(changed, key=[*after, *before].index):
            if key not in before:
                yield AttributeLine("+", key, new=after[key])
            elif key not in after:
                yield AttributeLine("-", key, old=before[key])
            else:
                yield AttributeLine("~", key, old=before[key], new=after[key])


def format_value(value: Any) -> str:
    if value == "(sensitive)":
        return "(sensitive)"
    if isinstance(value, list):
        return "[" + ", ".join(json.dumps(v) for v in value) + "]"
    return json.dumps(value)
