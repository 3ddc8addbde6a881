"""Attribute-level differences between a change's `before` and `after`, shared by the text renderers.

Pure: flattens nested mappings to dotted keys and compares values; lists of scopes compare as sets.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from reconciler.render.document import ChangeDoc

__all__ = ["AttributeLine", "attribute_lines", "format_value"]

# Recorded-only attributes: shown when an installation is deleted, never diffed against the configuration.
RECORDED_ONLY = ("granted_scopes", "status", "authorized_at", "expires_at", "authorization_url")


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


def _same(old: Any, new: Any) -> bool:
    if isinstance(old, list) and isinstance(new, list):
        return sorted(map(str, old)) == sorted(map(str, new))
    return bool(old == new)


def attribute_lines(change: ChangeDoc) -> Iterator[AttributeLine]:
    """What to show under a change: everything for create/delete, only what differs otherwise."""
    before, after = _flatten(change.before), _flatten(change.after)
    if change.action == "create":
        yield from (AttributeLine("+", k, new=v) for k, v in after.items())
    elif change.action == "delete":
        yield from (AttributeLine("-", k, old=v) for k, v in before.items())
    else:
        for key in sorted(before.keys() | after.keys(), key=[*after, *before].index):
            if key in RECORDED_ONLY or key.startswith(tuple(f"{k}." for k in RECORDED_ONLY)):
                continue
            if key not in before:
                yield AttributeLine("+", key, new=after[key])
            elif key not in after:
                yield AttributeLine("-", key, old=before[key])
            elif not _same(before[key], after[key]):
                yield AttributeLine("~", key, old=before[key], new=after[key])


def format_value(value: Any) -> str:
    if value == "(sensitive)":
        return "(sensitive)"
    if isinstance(value, list):
        return "[" + ", ".join(json.dumps(v) for v in value) + "]"
    return json.dumps(value)
