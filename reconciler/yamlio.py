"""YAML reading: a fast strict loader, and lazy location of key paths for error messages.

Owns: turning bytes into plain Python data (libyaml's C parser when present), refusing duplicate keys, alias
bombs (anchors whose aliases would expand a small file into millions of values) and nesting deeper than
`MAX_DEPTH` on every path (fast or full), and finding the line/column of a
key path by re-composing one file with marks — only when an error is reported. Must not: know the configuration
schema.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.constructor import SafeConstructor as _SafeConstructor
from yaml.events import (
    AliasEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)
from yaml.resolver import Resolver as _Resolver

_BaseLoader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MERGE_TAG = "tag:yaml.org,2002:merge"

__all__ = ["YamlSyntaxError", "compose", "load_yaml_text", "locate"]


@dataclass
class YamlSyntaxError(Exception):
    """The text is not valid YAML (or repeats a key). Line and column are 1-based; `hint` says how to fix it
    when the cause is known."""

    message: str
    line: int | None
    column: int | None
    hint: str | None = None


_STR_TAG = "tag:yaml.org,2002:str"
# Aliases may expand a document to at most this many values, or ten times the values it writes, whichever is more:
# generous for anchors used to share a scope list, far below what a "billion laughs" expands to.
MAX_EXPANDED_VALUES = 100_000
# Mappings and lists nest at most this deep: a configuration needs about six levels; deeper documents would only
# drive the recursive steps after parsing (validation, overlay merging, locating) towards a RecursionError.
MAX_DEPTH = 64


def _error_at(message: str, mark: Any) -> YamlSyntaxError:
    return YamlSyntaxError(message, mark.line + 1, mark.column + 1)


class _StrictLoader(_BaseLoader):  # type: ignore[misc]  # a base chosen at import (libyaml or not)
    """Safe loader that refuses what YAML would silently accept: a key repeated in one mapping (the last would
    win), and keys that are not strings (`yes:`, `null:` or `1:` become a boolean, null or number)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if not isinstance(node, yaml.MappingNode):  # e.g. `!!map null`: a tag that does not fit its node
            raise _error_at(f"a value tagged {node.tag.rsplit(':', 1)[-1]} must be a mapping", node.start_mark)
        seen: set[str] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                if key_node.tag == _MERGE_TAG:
                    continue
                if key_node.tag != _STR_TAG:
                    kind = key_node.tag.rsplit(":", 1)[-1]
                    message = f"key '{key_node.value}' is read as a {kind}, not a name; quote it"
                    raise _error_at(message, key_node.start_mark)
                if key_node.value in seen:
                    raise _error_at(f"duplicate key '{key_node.value}'", key_node.start_mark)
                seen.add(key_node.value)
            elif not isinstance(key_node, yaml.ScalarNode):
                raise _error_at("a key must be a plain name, not a list or mapping", key_node.start_mark)
        return super().construct_mapping(node, deep)  # type: ignore[no-any-return]


class _LocatingLoader(_StrictLoader):
    """The strict loader that also names the node whose value cannot be built (slower: used only after the fast
    load failed that way)."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as exc:  # e.g. 2026-02-30, or an integer of 5,000 digits
            raise _error_at(f"invalid value: {str(exc).splitlines()[0]}", node.start_mark) from None


_StrictLoader.add_constructor("tag:yaml.org,2002:map", _StrictLoader.construct_yaml_map)
_LocatingLoader.add_constructor("tag:yaml.org,2002:map", _LocatingLoader.construct_yaml_map)


def load_yaml_text(text: str) -> Any:
    """Parse one YAML document; raise `YamlSyntaxError` with a position on any problem."""
    if "\t" in text:
        _refuse_tab_indentation(text)
    if _CParser is not None:
        try:
            return _load_plain(text)
        except (_Unusual, yaml.YAMLError, ValueError, OverflowError, TypeError):
            pass  # the full loader below gives the same data, or the error with its position
    try:
        _check_events(text, aliases="&" in text and "*" in text)  # an alias needs an anchor to expand anything
        try:
            return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a safe loader subclass
        except (ValueError, OverflowError):  # a value that cannot be built (2026-02-30): find which, with marks
            return yaml.load(text, Loader=_LocatingLoader)  # noqa: S506 - a safe loader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.problem:
            problem = f"{problem} ({exc.context})"
        if problem == "found undefined alias" and mark is not None:  # libyaml does not say which
            name = re.match(r"\*([^\s,\[\]{}]+)", text[mark.index :])
            problem += f" '{name.group(1)}'" if name else ""
        line = mark.line + 1 if mark else None
        column = mark.column + 1 if mark else None
        hint = REFERENCE_IN_FLOW if mark is not None and _reference_in_flow(text, mark.index, problem) else None
        raise YamlSyntaxError(f"invalid YAML: {problem}", line, column, hint) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        what = "control character" if exc.character < 32 else "character"
        raise YamlSyntaxError(f"invalid YAML: {what} #x{exc.character:04x} is not allowed", line, column) from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(f"invalid YAML: {str(exc).splitlines()[0]}", None, None) from None
    except RecursionError:
        raise YamlSyntaxError("invalid YAML: nested too deeply", None, None) from None


REFERENCE_IN_FLOW = 'quote the reference ("${env:NAME}") or use block style (one key per line)'


def _reference_in_flow(text: str, index: int, problem: str) -> bool:
    """Whether a flow-collection error (`{a: b}`, `[a, b]`) comes from an unquoted `${...}` reference in it: in
    flow context `{` and `}` are syntax, so `{dsn: ${env:X}}` stops at the reference's brace."""
    if "flow mapping" not in problem and "flow sequence" not in problem:
        return False
    if text[max(index - 1, 0) : index + 1] == "${":
        return True
    start = text.rfind("\n", 0, index) + 1
    return "${" in text[start : index + 1]


def _deeper_than_allowed(mark: Any) -> YamlSyntaxError:
    return _error_at(f"invalid YAML: nested more than {MAX_DEPTH} levels deep", mark)


def _check_events(text: str, *, aliases: bool) -> None:
    """From the document's events (nothing is built): refuse nesting deeper than `MAX_DEPTH` at the collection
    that goes too deep, and with `aliases`, count the values the document stands for with every alias expanded
    and refuse it at the alias that takes the count past the limit, or at an alias inside its own anchor's value
    (a loop no consumer of plain data could walk)."""
    if not aliases:
        depth = 0
        for event in yaml.parse(text, Loader=_BaseLoader):
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    raise _deeper_than_allowed(event.start_mark)
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
        return
    written = expanded = 0
    sizes: dict[str | None, int] = {}  # anchor -> values it stands for
    open_collections: list[tuple[str | None, int]] = []  # (anchor, expanded count when it opened)
    limit = MAX_EXPANDED_VALUES
    for event in yaml.parse(text, Loader=_BaseLoader):
        if isinstance(event, (yaml.ScalarEvent, yaml.CollectionStartEvent)):
            written += 1
            expanded += 1
            limit = max(MAX_EXPANDED_VALUES, 10 * written)
            if isinstance(event, yaml.ScalarEvent):
                if event.anchor:
                    sizes[event.anchor] = 1
            else:
                open_collections.append((event.anchor, expanded - 1))
                if len(open_collections) > MAX_DEPTH:
                    raise _deeper_than_allowed(event.start_mark)
        elif isinstance(event, yaml.CollectionEndEvent):
            anchor, start = open_collections.pop()
            if anchor:
                sizes[anchor] = expanded - start
        elif isinstance(event, yaml.AliasEvent):
            if any(anchor == event.anchor for anchor, _ in open_collections):
                message = f"invalid YAML: alias *{event.anchor} is inside the value it names (a loop)"
                raise _error_at(message, event.start_mark)
            expanded += sizes.get(event.anchor, 1)
            if expanded > limit:
                raise _error_at(
                    f"invalid YAML: aliases expand to more than {limit:,} values (from {written:,} written): "
                    "refused as an alias bomb; write the values out instead",
                    event.start_mark,
                )


# -- the fast path: libyaml's events straight into dicts and lists -----------------------------------------------

def _libyaml_parser() -> type[Any] | None:
    """libyaml's event parser, or None for PyYAML without libyaml (the full loader only)."""
    try:
        from yaml._yaml import CParser
    except ImportError:
        return None
    return CParser


_CParser = _libyaml_parser()


class _Unusual(Exception):
    """Something the fast path leaves to the full loader: an alias, a merge key, a tag other than the core
    ones, a key that is not a string or is repeated, a second document."""


_CONSTRUCTOR = _SafeConstructor()
_BUILD = {  # how the safe loader builds each implicitly resolved scalar type (str is the value itself)
    "tag:yaml.org,2002:null": _CONSTRUCTOR.construct_yaml_null,
    "tag:yaml.org,2002:bool": _CONSTRUCTOR.construct_yaml_bool,
    "tag:yaml.org,2002:int": _CONSTRUCTOR.construct_yaml_int,
    "tag:yaml.org,2002:float": _CONSTRUCTOR.construct_yaml_float,
    "tag:yaml.org,2002:timestamp": _CONSTRUCTOR.construct_yaml_timestamp,
}
_IMPLICIT = _Resolver.yaml_implicit_resolvers
_ANY_FIRST = _IMPLICIT.get(None, [])
_PLAIN_TAGS = (None, "!")


def _plain_scalar(value: str) -> Any:
    """A plain (unquoted) scalar resolved exactly as the safe loader's resolver does (by its first character)."""
    for tag, regexp in (*_IMPLICIT.get(value[0] if value else "", ()), *_ANY_FIRST):
        if regexp.match(value):
            build = _BUILD.get(tag)
            if build is None:
                raise _Unusual(tag)  # e.g. the merge key "<<" or the value key "="
            return build(yaml.ScalarNode(tag, value))
    return value


def _load_plain(text: str) -> Any:
    """The safe loader's data for `text`, built from libyaml's event stream without node objects and without
    a Python frame per node: about twice as fast. Raises `_Unusual` (or a YAML error) for anything it leaves to
    the full loader, which then produces the same data or the positioned error."""
    assert _CParser is not None, "the fast path needs libyaml (load_yaml_text checks)"
    next_event = _CParser(text).get_event
    containers: list[Any] = []  # open mappings and sequences, innermost last
    keys: list[Any] = []  # per open container: the mapping's pending key (_NO_KEY: none yet)
    root: Any = None
    documents = 0
    while True:
        event: Any = next_event()  # compared by exact type below (the hot loop), which mypy does not narrow
        kind = type(event)
        if kind is ScalarEvent:
            tag = event.tag
            if tag in _PLAIN_TAGS:
                value = _plain_scalar(event.value) if event.implicit[0] else event.value
            elif tag == _STR_TAG:
                value = event.value
            else:
                raise _Unusual(tag)
            if event.anchor is not None:
                raise _Unusual("anchor")
        elif kind is MappingStartEvent or kind is SequenceStartEvent:
            if event.anchor is not None or event.tag not in _PLAIN_TAGS:
                raise _Unusual("anchor or tag")
            value = {} if kind is MappingStartEvent else []
        elif kind is MappingEndEvent or kind is SequenceEndEvent:
            containers.pop()
            keys.pop()
            continue
        elif kind is AliasEvent:
            raise _Unusual("alias")
        elif kind is DocumentStartEvent:
            documents += 1
            if documents > 1:
                raise _Unusual("a second document")
            continue
        elif kind is StreamEndEvent:
            return root
        else:
            continue  # stream start, document end
        if containers:
            top = containers[-1]
            if type(top) is list:
                top.append(value)
            elif keys[-1] is _NO_KEY:
                if type(value) is not str or value in top:
                    raise _Unusual("key")  # not a name, or repeated: the full loader says which and where
                keys[-1] = value
            else:
                top[keys[-1]] = value
                keys[-1] = _NO_KEY
        else:
            root = value
        if kind is not ScalarEvent:
            containers.append(value)
            keys.append(_NO_KEY)
            if len(containers) > MAX_DEPTH:
                raise _deeper_than_allowed(event.start_mark)


_NO_KEY = object()


def _refuse_tab_indentation(text: str) -> None:
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.lstrip(" ")
        if stripped.startswith("\t"):
            column = len(line) - len(stripped) + 1
            raise YamlSyntaxError("tab used for indentation; YAML allows spaces only", number, column)


def compose(text: str) -> yaml.Node | None:
    """The node tree of `text`, with positions (slow: only for files that have a problem)."""
    try:
        return yaml.compose(text, Loader=_BaseLoader)
    except (yaml.YAMLError, RecursionError):
        return None


def locate(tree: yaml.Node | None, key_path: Sequence[str | int], *, at_key: bool = False) -> tuple[int, int] | None:
    """Line and column (1-based) of `key_path` in a composed tree, or of the deepest part of it that exists.

    With `at_key`, point at the last key itself rather than its value (for "unknown key" errors).
    """
    node = tree
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
        # A problem with a whole block is shown on its key's line, a problem with a value on the value.
        point_at_key = at_key or isinstance(child, (yaml.MappingNode, yaml.SequenceNode))
        mark = key_mark if (last and point_at_key and key_mark is not None) else child.start_mark
        node = child
    return mark.line + 1, mark.column + 1
