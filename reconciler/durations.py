"""Durations as users write them: `45s`, `30m`, `12h`, `7d` (one whole number and one unit).

Owns: the one parser and the one way a duration is shown back. Must not: know where a duration was written (its
callers name the file, key or option in their errors).
"""

from __future__ import annotations

import datetime as dt
import re

__all__ = ["DURATION_EXAMPLES", "DurationError", "format_duration", "parse_duration"]

DURATION_EXAMPLES = "45s, 30m, 12h, 7d"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_PATTERN = re.compile(r"^([0-9]{1,9})([smhd])$")


class DurationError(ValueError):
    """Not a duration; the message says what is expected."""


def parse_duration(text: str) -> dt.timedelta:
    """`text` as a positive duration; `DurationError` otherwise."""
    match = _PATTERN.match(text.strip())
    if match is None:
        raise DurationError(f"'{text}' is not a duration: a whole number and a unit ({DURATION_EXAMPLES})")
    seconds = int(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise DurationError(f"'{text}' is not a positive duration")
    return dt.timedelta(seconds=seconds)


def format_duration(value: dt.timedelta) -> str:
    """The largest unit that shows `value` exactly (`7d`, `90m`, `45s`)."""
    seconds = int(value.total_seconds())
    for unit in ("d", "h", "m"):
        if seconds and seconds % _UNITS[unit] == 0:
            return f"{seconds // _UNITS[unit]}{unit}"
    return f"{seconds}s"
