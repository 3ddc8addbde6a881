"""Indented JSON text, the same as `json.dumps(value, indent=2)`, made faster for large documents.

The standard library encodes with `indent` in pure Python, one generator per container: a `status --format json`
of 10,000 installations spent more time there than in everything else it rendered. This writes the same text from
the same values (strings through the standard library's C escaping), and hands anything it does not know to
`json.dumps`, which also raises for what it cannot encode.

Owns: `dumps_indented`. Must not: differ from `json.dumps(value, indent=2, ensure_ascii=...)` in a single character.
"""

from __future__ import annotations

import json
from json.encoder import encode_basestring, encode_basestring_ascii
from typing import Any

__all__ = ["dumps_indented"]

_CONSTANTS: dict[object, str] = {None: "null", True: "true", False: "false"}


def dumps_indented(value: Any, *, ensure_ascii: bool = True) -> str:
    """`json.dumps(value, indent=2, ensure_ascii=ensure_ascii)`."""
    writer = _Writer(ensure_ascii)
    writer.nested(value, type(value), "\n")
    return "".join(writer.out)


class _Writer:
    """The text of one document, in pieces: containers written in place, scalars as `json` writes them."""

    def __init__(self, ensure_ascii: bool) -> None:
        self.out: list[str] = []
        self.ensure_ascii = ensure_ascii
        self.string = encode_basestring_ascii if ensure_ascii else encode_basestring
        self.shapes: dict[tuple[tuple[Any, ...], str], list[str]] = {}

    def nested(self, item: Any, kind: type, newline: str) -> None:
        if kind is dict:
            self.mapping(item, newline)
        elif kind is list or kind is tuple:
            self.sequence(item, newline)
        elif kind is str:
            self.out.append(self.string(item))
        elif item is None or kind is bool:
            self.out.append(_CONSTANTS[item])
        elif kind is int:
            self.out.append(int.__repr__(item))
        elif isinstance(item, dict):
            self.mapping(item, newline)
        elif isinstance(item, (list, tuple)):
            self.sequence(item, newline)
        else:  # floats, str and int subclasses, and what json refuses
            self.out.append(json.dumps(item, ensure_ascii=self.ensure_ascii))

    def key(self, name: object) -> str:
        if type(name) is str:
            return self.string(name)
        text = json.dumps({name: 0}, ensure_ascii=self.ensure_ascii)  # as json writes a key that is no string
        return text[1:text.rindex(":")]

    def mapping(self, items: dict[Any, Any], newline: str) -> None:
        write, string = self.out.append, self.string
        if not items:
            write("{}")
            return
        inner = newline + "  "
        heads = self._heads(tuple(items), newline)
        for head, item in zip(heads, items.values(), strict=True):
            kind = type(item)
            if kind is str:
                write(head + string(item))
            elif item is None or kind is bool:
                write(head + _CONSTANTS[item])
            elif kind is int:
                write(head + int.__repr__(item))
            else:
                write(head)
                self.nested(item, kind, inner)
        write(newline + "}")

    def _heads(self, names: tuple[Any, ...], newline: str) -> list[str]:
        """What comes before each value of a mapping with these keys at this depth (`{` or `,`, the line break,
        the key): made once per shape, since a document repeats its shapes. Only shapes of `str` keys are kept
        (keys of other types can be equal and still written differently: `1` and `true`)."""
        shape = (names, newline)
        heads = self.shapes.get(shape)
        if heads is None:
            inner = newline + "  "
            heads = [f"{',' if i else '{'}{inner}{self.key(name)}: " for i, name in enumerate(names)]
            if all(type(name) is str for name in names):
                self.shapes[shape] = heads
        return heads

    def sequence(self, items: list[Any] | tuple[Any, ...], newline: str) -> None:
        write = self.out.append
        if not items:
            write("[]")
            return
        inner = newline + "  "
        opening = "[" + inner
        for item in items:
            if type(item) is str:
                write(opening + self.string(item))
            else:
                write(opening)
                self.nested(item, type(item), inner)
            opening = "," + inner
        write(newline + "]")
