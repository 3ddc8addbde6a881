"""Names and addresses: the one rule for what a partner, tenant or installation may be called, and for the
addresses built from those names (`partner.<name>`, `account.<tenant>`, `installation.<tenant>.<name>`).

Owns: `NAME_PATTERN` (the configuration schema uses it for every name), parsing and checking addresses and address
globs wherever they come from — command-line arguments, state documents and journals, saved plans. Must not: import
configuration, state or presentation modules (every layer may use it), or echo a refused text unescaped.
"""

from __future__ import annotations

import re

from reconciler.errors import UsageError, one_line

__all__ = [
    "NAME_PATTERN",
    "check_address",
    "check_address_pattern",
    "is_address",
    "parse_address",
]

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$"
_NAME = re.compile(NAME_PATTERN)
# A glob over addresses: the name characters, dots between parts, and fnmatch's own * ? [ ] ! (no space, no control).
_PATTERN = re.compile(r"[A-Za-z0-9_\-.*?\[\]!]{1,200}")
_SHAPE = "partner.<name>, account.<tenant> or installation.<tenant>.<name>, names of letters, digits, '-' and '_'"
_SHAPES = {"partner": "partner.<name>", "account": "account.<tenant>", "installation": "installation.<tenant>.<name>"}


def _is_name(text: str) -> bool:
    return _NAME.fullmatch(text) is not None


def parse_address(text: str) -> tuple[str, ...] | None:
    """The parts of a valid address — ("partner", name), ("account", tenant) or ("installation", tenant, name) —
    or None."""
    parts = tuple(text.split("."))
    if len(parts) == 2 and parts[0] in ("partner", "account") and _is_name(parts[1]):
        return parts
    if len(parts) == 3 and parts[0] == "installation" and _is_name(parts[1]) and _is_name(parts[2]):
        return parts
    return None


def is_address(text: str) -> bool:
    """Whether `text` is an address the configuration's names can form (so it can forge no line of output)."""
    return parse_address(text) is not None


def check_address(text: str, *, kind: str | None = None) -> tuple[str, ...]:
    """The parts of `text`, an address (of `kind` — "partner", "account" or "installation" — when given); anything
    else is a `UsageError` that shows the text escaped."""
    parts = parse_address(text)
    if parts is None or (kind is not None and parts[0] != kind):
        noun = f"an {kind}" if kind in ("installation", "account") else f"a {kind}" if kind else "a valid"
        shape = _SHAPE if kind is None else _SHAPES[kind]
        raise UsageError(f"{_shown(text)} is not {noun} address ({shape})")
    return parts


def check_address_pattern(text: str) -> str:
    """`text`, a glob over addresses (an address, or one with * ? [...] in it); anything that no address glob could
    be — whitespace, control characters, other punctuation — is a `UsageError` that shows it escaped."""
    if _PATTERN.fullmatch(text) is None:
        raise UsageError(
            f"{_shown(text)} is not a valid address or address glob",
            hint=f"an address is {_SHAPE}; globs may use * ? [...]",
        )
    return text


def _shown(text: str) -> str:
    """A refused text as an error shows it: escaped (no line break, tab or invisible character survives), cut."""
    return one_line(text[:200]) or "''"
