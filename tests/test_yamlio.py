"""The YAML fast path builds exactly what the safe loader builds, and leaves everything unusual to it."""

from __future__ import annotations

import datetime as dt
import math

import pytest
import yaml

from reconciler.yamlio import YamlSyntaxError, _load_plain, _StrictLoader, _Unusual, load_yaml_text

SAME = [
    "a: 1\nb: -0x1F\nc: 0o17\nd: 017\ne: 1_000\nf: 190:20:30\ng: +12\n",
    "a: 1.5\nb: -.inf\nc: 6.8523015e+5\nd: 1_0.5\ne: 190:20:30.15\n",
    "a: yes\nb: No\nc: on\nd: OFF\ne: true\nf: False\ng: y\nh: n\n",
    "a: ~\nb: null\nc:\nd: Null\ne: 'null'\nf: \"~\"\n",
    "a: 2026-11-25\nb: 2026-11-25T10:00:00Z\nc: 2026-11-25 10:00:00.5 +02:00\nd: '2026-11-25'\n",
    "a: 'single ''quoted'''\nb: \"double \\u00e9 \\t\"\nc: plain text here\nd: \"123\"\n",
    "a: |\n  literal\n  block\nb: >\n  folded\n  block\nc: |-\n  strip\n",
    "a: [1, two, {three: 3}, [4]]\nb: {x: [], y: {}}\n",
    "- 1\n- - nested\n  - list\n- {k: v}\n- key: value\n  other: [a, b]\n",
    "",
    "# only a comment\n",
    "just a scalar\n",
    "---\na: 1\n...\n",
    "ünï: çødé 🚀\n'quoted key': 1\n\"another\": 2\n",
    "a: !!str 123\nb: !!str yes\n",
    "a: =x\nb: <<x\nc: '<<'\nd: '='\n",
    "deep:\n" + "".join("  " * i + f"  l{i}:\n" for i in range(40)) + "  " * 41 + "end: 1\n",
    "a: 0b1010\nb: .NaN\nc: 0.\nd: -0\ne: 1e3\n",
]


def _safe(text: str):  # type: ignore[no-untyped-def]
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a safe loader subclass


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("text", SAME, ids=range(len(SAME)))
def test_the_fast_path_builds_what_the_safe_loader_builds(text: str) -> None:
    assert _same(_load_plain(text), _safe(text))
    assert _same(load_yaml_text(text), _safe(text))


def test_the_fast_path_keeps_dates_and_key_order() -> None:
    data = _load_plain("z: 1\na: 2026-11-25\nm: 2026-11-25T10:00:00Z\n")
    assert list(data) == ["z", "a", "m"]
    assert data["a"] == dt.date(2026, 11, 25)
    assert data["m"] == dt.datetime(2026, 11, 25, 10, 0, tzinfo=dt.UTC)


UNUSUAL = {
    "alias": "a: &x [1, 2]\nb: *x\n",
    "anchor on a scalar": "a: &x 1\n",
    "merge key": "base: &b {x: 1}\nc:\n  <<: *b\n  y: 2\n",
    "bare merge key": "c:\n  <<: {x: 1}\n",
    "custom tag": "a: !secret value\n",
    "core tag on a mapping": "a: !!omap [{x: 1}]\n",
    "repeated key": "a: 1\na: 2\n",
    "number as a key": "1: a\n",
    "boolean as a key": "yes: a\n",
    "null key": "~: a\n",
    "mapping as a key": "? {a: 1}\n: b\n",
    "second document": "a: 1\n---\nb: 2\n",
}


@pytest.mark.parametrize("name", sorted(UNUSUAL))
def test_anything_unusual_is_left_to_the_full_loader(name: str) -> None:
    text = UNUSUAL[name]
    with pytest.raises((_Unusual, yaml.YAMLError)):
        _load_plain(text)
    try:
        expected: object = _safe(text)
    except (yaml.YAMLError, YamlSyntaxError):
        with pytest.raises(YamlSyntaxError):
            load_yaml_text(text)
    else:
        assert _same(load_yaml_text(text), expected)


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("a: 1\na: 2\n", (2, 1)),
        ("a: [1, 2\nb: 3\n", None),
        ("a: 2026-02-30\n", (1, 4)),
        ("yes: 1\n", (1, 1)),
    ],
)
def test_errors_keep_their_positions(text: str, where: tuple[int, int] | None) -> None:
    with pytest.raises(YamlSyntaxError) as caught:
        load_yaml_text(text)
    if where is not None:
        assert (caught.value.line, caught.value.column) == where
    else:
        assert caught.value.line is not None


@pytest.mark.parametrize("text", ["a:\n  b: !!map null\n", "a: !!map [1, 2]\n", "- !!omap x\n", "a: !!seq x\n"])
def test_a_tag_that_does_not_fit_its_node_is_a_positioned_error(text: str) -> None:
    """`!!map null` (a mapping tag on a scalar) and its kin are a YAML error with a position, not a crash."""
    with pytest.raises(YamlSyntaxError) as raised:
        load_yaml_text(text)
    assert raised.value.line is not None
