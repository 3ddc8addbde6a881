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
    out: list[str] = []
    write = out.append
    string = encode_basestring_ascii if ensure_ascii else encode_basestring

    def other(item: Any, newline: str) -> None:
        if isinstance(item, dict):
            mapping(item, newline)
        elif isinstance(item, (list, tuple)):
            sequence(item, newline)
        else:  # floats, str and int subclasses, and what json refuses
            write(json.dumps(item, ensure_ascii=ensure_ascii))

    def other_key(name: object) -> str:  # as json writes a key that is no string (or its TypeError)
        text = json.dumps({name: 0}, ensure_ascii=ensure_ascii)
        return text[1:text.rindex(":")]

    def mapping(items: dict[Any, Any], newline: str) -> None:
        if not items:
            write("{}")
            return
        inner = newline + "  "
        opening = "{" + inner
        for name, item in items.items():
            label = string(name) if type(name) is str else other_key(name)
            kind = type(item)
            if kind is str:
                write(f"{opening}{label}: {string(item)}")
            elif item is None or kind is bool:
                write(f"{opening}{label}: {_CONSTANTS[item]}")
            elif kind is int:
                write(f"{opening}{label}: {int.__repr__(item)}")
            else:
                write(f"{opening}{label}: ")
                nested(item, kind, inner)
            opening = "," + inner
        write(newline + "}")

    def sequence(items: list[Any] | tuple[Any, ...], newline: str) -> None:
        if not items:
            write("[]")
            return
        inner = newline + "  "
        opening = "[" + inner
        for item in items:
            if type(item) is str:
                write(opening + string(item))
            else:
                write(opening)
                nested(item, type(item), inner)
            opening = "," + inner
        write(newline + "]")

    def nested(item: Any, kind: type, newline: str) -> None:
        if kind is dict:
            mapping(item, newline)
        elif kind is list or kind is tuple:
            sequence(item, newline)
        elif kind is str:
            write(string(item))
        elif item is None or kind is bool:
            write(_CONSTANTS[item])
        elif kind is int:
            write(int.__repr__(item))
        else:
            other(item, newline)

    nested(value, type(value), "\n")
    return "".join(out)
