"""YAML reading: a fast strict loader, and lazy location of key paths for error messages.

Owns: turning bytes into plain Python data (libyaml's C parser when present), refusing duplicate keys, and
finding the line/column of a key path by re-composing one file with marks — only when an error is reported.
Must not: know the configuration schema.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

_BaseLoader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MERGE_TAG = "tag:yaml.org,2002:merge"

__all__ = ["YamlSyntaxError", "load_yaml_text", "locate"]


@dataclass
class YamlSyntaxError(Exception):
    """The text is not valid YAML (or repeats a key). Line and column are 1-based."""

    message: str
    line: int | None
    column: int | None


class _StrictLoader(_BaseLoader):  # type: ignore[misc, valid-type]
    """Safe loader that refuses a key repeated in one mapping (YAML would silently keep the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != _MERGE_TAG:
                if key_node.value in seen:
                    mark = key_node.start_mark
                    raise YamlSyntaxError(f"duplicate key '{key_node.value}'", mark.line + 1, mark.column + 1)
                seen.add(key_node.value)
        return super().construct_mapping(node, deep)  # type: ignore[no-any-return]


_StrictLoader.add_constructor("tag:yaml.org,2002:map", _StrictLoader.construct_yaml_map)


def load_yaml_text(text: str) -> Any:
    """Parse one YAML document; raise `YamlSyntaxError` with a position on any problem."""
    if "\t" in text:
        _refuse_tab_indentation(text)
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a safe loader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.problem:
            problem = f"{problem} ({exc.context})"
        line = mark.line + 1 if mark else None
        column = mark.column + 1 if mark else None
        raise YamlSyntaxError(f"invalid YAML: {problem}", line, column) from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(f"invalid YAML: {exc}", None, None) from None
    except RecursionError:
        raise YamlSyntaxError("invalid YAML: nested too deeply", None, None) from None


def _refuse_tab_indentation(text: str) -> None:
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.lstrip(" ")
        if stripped.startswith("\t"):
            column = len(line) - len(stripped) + 1
            raise YamlSyntaxError("tab used for indentation; YAML allows spaces only", number, column)


def locate(text: str, key_path: Sequence[str | int], *, at_key: bool = False) -> tuple[int, int] | None:
    """Line and column (1-based) of `key_path` in `text`, or of the deepest part of it that exists.

    With `at_key`, point at the last key itself rather than its value (for "unknown key" errors).
    """
    try:
        node: yaml.Node | None = yaml.compose(text, Loader=_BaseLoader)
    except (yaml.YAMLError, RecursionError):
        return None
    if node is None:
        return None
    mark = node.start_mark
    for index, part in enumerate(key_path):
        last = index == len(key_path) - 1
        child: yaml.Node | None = None
        key_mark = None
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.value == str(part):
                    child, key_mark = value_node, key_node.start_mark
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            child = node.value[part]
        if child is None:
            break
        mark = key_mark if (last and at_key and key_mark is not None) else child.start_mark
        node = child
    return mark.line + 1, mark.column + 1
