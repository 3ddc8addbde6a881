"""Indented JSON text, the same as `json.dumps(value, indent=2)`, made faster for large documents.

The standard library encodes with `indent` in pure Python, one generator per container: a `status --format json`
of 10,000 installations spent more time there than in everything else it rendered. This writes the same text from
the same values (strings through the standard library's C escaping), and hands anything it does not know to
`json.dumps`, which also raises for what it cannot encode.

Owns: `dumps_indented`. Must not: differ from `json.dumps(value, indent=2, ensure_ascii=...)` in a single character.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from json.encoder import encode_basestring, encode_basestring_ascii
from typing import Any

__all__ = ["dumps_indented"]

_INDENT = "  "
_CONSTANTS: dict[object, str] = {None: "null", True: "true", False: "false"}


def dumps_indented(value: Any, *, ensure_ascii: bool = True) -> str:
    """`json.dumps(value, indent=2, ensure_ascii=ensure_ascii)`."""
    out: list[str] = []
    _Writer(out, encode_basestring_ascii if ensure_ascii else encode_basestring, ensure_ascii).value(value, "\n")
    return "".join(out)


class _Writer:
    def __init__(self, out: list[str], string: Callable[[str], str], ensure_ascii: bool) -> None:
        self.out, self.string, self.ensure_ascii = out, string, ensure_ascii

    def value(self, value: Any, newline: str) -> None:
        kind = type(value)
        if kind is str:
            self.out.append(self.string(value))
        elif kind is dict:
            self.mapping(value, newline)
        elif kind is list or kind is tuple:
            self.sequence(value, newline)
        elif value is None or kind is bool:
            self.out.append(_CONSTANTS[value])
        elif kind is int:
            self.out.append(int.__repr__(value))
        elif isinstance(value, dict):
            self.mapping(value, newline)
        elif isinstance(value, (list, tuple)):
            self.sequence(value, newline)
        else:  # floats, str and int subclasses, and what json refuses
            self.out.append(json.dumps(value, ensure_ascii=self.ensure_ascii))

    def mapping(self, value: dict[Any, Any], newline: str) -> None:
        if not value:
            self.out.append("{}")
            return
        inner = newline + _INDENT
        opening = "{" + inner
        string, out = self.string, self.out
        for key, item in value.items():
            name = string(key) if type(key) is str else self.key(key)
            if type(item) is str:
                out.append(f"{opening}{name}: {string(item)}")
            elif item is None:
                out.append(f"{opening}{name}: null")
            else:
                out.append(f"{opening}{name}: ")
                self.value(item, inner)
            opening = "," + inner
        out.append(newline + "}")

    def sequence(self, value: list[Any] | tuple[Any, ...], newline: str) -> None:
        if not value:
            self.out.append("[]")
            return
        inner = newline + _INDENT
        opening = "[" + inner
        string, out = self.string, self.out
        for item in value:
            if type(item) is str:
                out.append(opening + string(item))
            else:
                out.append(opening)
                self.value(item, inner)
            opening = "," + inner
        out.append(newline + "]")

    def key(self, key: object) -> str:
        """A key that is not a string, as json writes it (or its TypeError)."""
        text = json.dumps({key: 0}, ensure_ascii=self.ensure_ascii)
        return text[1:text.rindex(":")]
