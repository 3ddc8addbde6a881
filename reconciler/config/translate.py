"""Schema validation of one file, its errors translated into positioned one-line issues.

Owns: running the pydantic models of `schema` over a file's data, and turning each pydantic error into the
message users read (unknown key with did-you-mean, missing key, wrong type with what was found, invalid name) at
the key's position. Must not: check anything the schema does not (the catalog, other files, references), or let
a pydantic message or exception reach the user untranslated.
"""

from __future__ import annotations

import datetime as dt
import re
import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from reconciler.config.located import KeyPath, Report, SourceFile, did_you_mean
from reconciler.config.schema import IncludedFile
from reconciler.names import NAME_PATTERN

__all__ = ["kind_of", "validated"]


def validated(
    report: Report, src: SourceFile, data: dict[str, Any], model: type[IncludedFile], context: dict[str, str]
) -> IncludedFile | None:
    """`data` as `model` in `context` (see `schema.validation_context`), or None after reporting every schema error
    in it."""
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            _translate(report, src, model, error)
        return None


def _translate(report: Report, src: SourceFile, model: type[BaseModel], error: Any) -> None:
    loc: KeyPath = tuple(error["loc"])
    if loc[:1] == ("backend",) and loc[1:2] in (("local",), ("postgres",)):
        loc = loc[:1] + loc[2:]  # the tag pydantic adds for the backend type is not a key in the file
    at_key = False
    kind = error["type"]
    if loc and loc[-1] == "[key]":
        loc, at_key = loc[:-1], True
    if at_key:
        name = loc[-1] if loc else "?"
        message = f"invalid name '{name}': use letters, digits, '-' and '_' (at most 63, not starting with '-')"
        report.issue(src, loc, message, at_key=True)
    elif kind == "extra_forbidden":
        allowed = _fields_at(model, loc[:-1])
        hint = did_you_mean(str(loc[-1]), allowed) if allowed else None
        if hint is None and allowed:
            hint = "expected one of: " + ", ".join(allowed)
        report.issue(src, loc, f"unknown key '{loc[-1]}'", hint, at_key=True)
    elif kind == "missing":
        report.issue(src, src.missing_at(loc[:-1], str(loc[-1])), f"missing required key '{loc[-1]}'")
    elif kind == "value_error":
        report.issue(src, loc, str(error.get("ctx", {}).get("error", error["msg"])))
    elif kind == "too_short":
        report.issue(src, loc, "must list at least 1 item")
    elif kind == "string_pattern_mismatch" and loc[-1:] in (("service_domain",), ("api_domain",)):
        example = "app-h.cyclr.com" if loc[-1] == "service_domain" else "api.eu.cyclr.com"
        report.issue(src, loc, f"expected a host name such as {example} (no https://, no path)")
    elif kind == "string_pattern_mismatch" and loc[-2:-1] == ("account",):
        hint = "the account's API id as the platform has it; it defaults to the tenant key"
        report.issue(src, loc, "invalid account id: 1-128 characters, no '/', '\\', control characters or spaces around it", hint)
    elif kind == "literal_error" and (loc == ("platform", "type") or loc[-1:] == ("auth_via",)):
        hint = _LITERAL_HINTS[str(loc[-1])]
        report.issue(src, loc, _plain_message(error)[0], hint)
    elif kind == "string_pattern_mismatch" and NAME_PATTERN in str(error.get("ctx", {}).get("pattern", "")):
        report.issue(src, loc, "invalid name: use letters, digits, '-' and '_'")
    else:
        report.issue(src, loc, *_plain_message(error))


_LITERAL_HINTS = {
    "type": "local, the default, keeps the tokens in our state; cyclr reconciles accounts through the Cyclr API",
    "auth_via": "platform, the default: Cyclr runs the sign-in; reconciler: we run it and push the tokens",
}


def _plain_message(error: Any) -> tuple[str, str | None]:
    """Pydantic's own message in our words ("list", "mapping", lower case), with what was found for a type."""
    kind = error["type"]
    message = error["msg"].replace("valid tuple", "list").replace("valid dictionary", "mapping")
    message = re.sub(r" or instance of \w+", "", message)
    message = message[0].lower() + message[1:]
    hint = None
    if kind.endswith("_type"):
        value = error.get("input")
        message += f", got {kind_of(value)}"
        if kind == "string_type" and isinstance(value, (int, float, bool)):
            hint = "quote the value to make it a string"
    return message, hint


def kind_of(value: object) -> str:
    """What a YAML value is, as a message names it: `a list`, `a number`, `null`."""
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a mapping",
        dt.date: "a date",
        dt.datetime: "a timestamp",
    }.get(type(value), type(value).__name__)


def _fields_at(model: type[BaseModel], loc: KeyPath) -> list[str]:
    """The keys allowed at `loc` inside `model` (for did-you-mean on unknown keys)."""
    annotation: Any = model
    for part in loc:
        annotation = _unwrap(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            info = annotation.model_fields.get(str(part))
            if info is None:
                return []
            annotation = info.annotation
        elif typing.get_origin(annotation) is dict:
            annotation = typing.get_args(annotation)[1]
        elif typing.get_origin(annotation) is tuple:
            annotation = typing.get_args(annotation)[0]
        else:
            return []
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return list(annotation.model_fields)
    return []


def _unwrap(annotation: Any) -> Any:
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            options = [a for a in typing.get_args(annotation) if a is not type(None)]
            annotation = options[0] if len(options) == 1 else annotation
            if len(options) != 1:
                return annotation
        else:
            return annotation
