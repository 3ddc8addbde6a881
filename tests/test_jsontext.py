"""`dumps_indented` writes exactly what `json.dumps(value, indent=2)` writes, or refuses what it refuses."""

from __future__ import annotations

import enum
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.jsontext import dumps_indented

SCALARS = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True)
    | st.text() | st.sampled_from(["", "é", "\u2028", "\x00\x1f\"\\/", "\U0001f511", "\ud800"])
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner)
    | st.dictionaries(st.text(max_size=6) | st.integers() | st.booleans() | st.none(), inner, max_size=4),
    max_leaves=30,
)


class Word(str, enum.Enum):
    HEALTHY = "healthy"


@settings(max_examples=300, derandomize=True, deadline=None)
@given(VALUES, st.booleans())
def test_same_text_as_json_dumps(value: Any, ensure_ascii: bool) -> None:
    """Any JSON value, nested lists, tuples and dicts with any keys json takes: character for character."""
    assert dumps_indented(value, ensure_ascii=ensure_ascii) == json.dumps(value, indent=2, ensure_ascii=ensure_ascii)


@pytest.mark.parametrize("value", [
    {}, [], (), {"a": {}, "b": [], "c": [{}]}, [[[]]], Word.HEALTHY, {"w": [Word.HEALTHY]}, {1.5: True, None: 1},
    {"status": {"installations": [{"address": "installation.acme.ado", "scopes": {"granted": None}}]}},
    [{1: "a"}, {True: "b"}, {1.0: "c"}, {1: "d"}],  # equal keys of other types, written differently
    [{"a": 1, "b": [{"a": 2}]}, {"a": 3, "b": [{"a": {"a": 4}}]}],  # a shape repeated at several depths
])
def test_same_text_for_documents_and_edges(value: Any) -> None:
    """Empty containers, str enums, keys that are not strings, and a status-like document."""
    for ensure_ascii in (True, False):
        assert dumps_indented(value, ensure_ascii=ensure_ascii) == json.dumps(value, indent=2, ensure_ascii=ensure_ascii)


@pytest.mark.parametrize("value", [{(1, 2): 0}, {"a": object()}, [b"bytes"]])
def test_refuses_what_json_refuses(value: Any) -> None:
    """What json cannot encode is a TypeError here too."""
    with pytest.raises(TypeError):
        json.dumps(value, indent=2)
    with pytest.raises(TypeError):
        dumps_indented(value)
