"""PostgreSQL connection strings (DSNs), described without their values.

Owns: parsing a DSN (URL or keyword form) into its settings, and our own messages for a DSN that does not parse
or does not connect — which part or key is wrong, where it points (host, port, database, user, when they are
plain names) and the server's SQLSTATE. Must not: put any text of the driver's in a message (libpq quotes the
DSN, or the part of it it stumbled on, and that part is often the password), nor a value it cannot show is
harmless: a message is built only from our own words, key names from libpq's list, and vetted plain values.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["DsnError", "connect_problem", "parse_dsn"]

SECRET_KEYS = frozenset(
    {"password", "sslpassword", "oauth_client_secret", "scram_client_key", "scram_server_key"}
)
URL_SCHEMES = ("postgresql://", "postgres://")
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_PLAIN = re.compile(r"^[A-Za-z0-9._:/\-]{1,253}$")  # a host, database or user name that can be shown
_HINT = "fix the DSN (its value is not shown); in a URL percent-encode the password: % as %25, a space as %20"


class DsnError(ValueError):
    """A DSN that does not parse: `problem` says what is wrong in our own words, quoting none of the DSN."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.hint = _HINT


def _keywords() -> frozenset[str]:
    """The settings libpq knows (safe to name: they come from libpq's list, not from the DSN)."""
    import psycopg

    return frozenset(option.keyword.decode() for option in psycopg.pq.Conninfo.get_defaults())


def parse_dsn(dsn: str) -> dict[str, Any]:
    """The DSN's settings, as libpq reads them; `DsnError` saying what is wrong, never quoting the DSN."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        return conninfo_to_dict(dsn)
    except (psycopg.Error, ValueError, UnicodeError):
        raise DsnError(describe_unparsable(dsn)) from None


def describe_unparsable(dsn: str) -> str:
    """Which part of a DSN that libpq refused is wrong (our analysis of the DSN; never the driver's message)."""
    if dsn.startswith(URL_SCHEMES):
        return "URL form: " + (_url_problem(dsn) or "check its percent-encoding, brackets and separators")
    return "keyword form: " + (_keyword_problem(dsn) or "check its quotes, backslashes and '=' signs")


def _text_problem(text: str) -> str | None:
    if " " in text:
        return "contains a space (write it as %20)"
    if _BAD_PERCENT.search(text):
        return "has a percent sign not followed by two hex digits (write % as %25)"
    if "%00" in text:
        return "holds an encoded zero byte (%00)"
    return None


def _url_problem(dsn: str) -> str | None:
    rest = dsn.split("://", 1)[1]
    cut = min((rest.find(c) for c in "@/" if c in rest), default=-1)
    if cut >= 0 and rest[cut] == "@":
        user, colon, password = rest[:cut].partition(":")
        for part, value in (("user name", user), ("password", password if colon else "")):
            problem = _text_problem(value)
            if problem:
                return f"the {part} {problem}"
        rest = rest[cut + 1 :]
    hosts, _, tail = rest.partition("/")
    hosts, _, query = hosts.partition("?") if not tail else (hosts, "", "")
    if hosts.count("[") != hosts.count("]"):
        return "an IPv6 host's bracket '[' has no closing ']'"
    problem = _text_problem(hosts)
    if problem:
        return f"the host part {problem}"
    database, _, query = tail.partition("?") if tail else ("", "", query)
    problem = _text_problem(database)
    if problem:
        return f"the database name {problem}"
    return _query_problem(query)


def _query_problem(query: str) -> str | None:
    known = _keywords()
    for number, pair in enumerate(query.split("&") if query else [], start=1):
        key, equals, value = pair.partition("=")
        if not equals:
            return f"query parameter {number} has no '='"
        if key not in known:
            return f"query parameter {number} is an unknown key"
        problem = _text_problem(key) or _text_problem(value)
        if problem:
            return f"the value of query parameter '{key}' {problem}"
    return None


def _keyword_problem(dsn: str) -> str | None:
    """Walk the `key = value` settings as libpq does (values bare with backslash escapes, or single-quoted)."""
    known, i, number = _keywords(), 0, 0
    while True:
        while i < len(dsn) and dsn[i].isspace():
            i += 1
        if i >= len(dsn):
            return None
        number += 1
        start = i
        while i < len(dsn) and dsn[i] != "=" and not dsn[i].isspace():
            i += 1
        key = dsn[start:i]
        while i < len(dsn) and dsn[i].isspace():
            i += 1
        if i >= len(dsn) or dsn[i] != "=":
            named = f"'{key}'" if key in known else f"setting {number}"
            return f"{named} has no '=' after it (a value with spaces must be quoted: key='a b')"
        if key not in known:
            return f"setting {number} is an unknown key"
        i += 1
        while i < len(dsn) and dsn[i].isspace():
            i += 1
        i = _skip_value(dsn, i)
        if i < 0:
            return f"the value of '{key}' has an unterminated quote"


def _skip_value(dsn: str, i: int) -> int:
    """The index after the value starting at `i`; -1 when a quoted value never ends."""
    quoted = i < len(dsn) and dsn[i] == "'"
    i += 1 if quoted else 0
    while i < len(dsn):
        if dsn[i] == "\\":
            i += 2
            continue
        if (quoted and dsn[i] == "'") or (not quoted and dsn[i].isspace()):
            return i + 1 if quoted else i
        i += 1
    return -1 if quoted else i


# -- connection failures -----------------------------------------------------------------------------------------

_SQLSTATES = {
    "28P01": "password authentication failed",
    "28000": "the server refused this user (role or pg_hba.conf)",
    "3D000": "the database does not exist",
    "53300": "the server has too many connections",
    "57P03": "the server is starting up or shutting down",
}
_CLIENT_MARKERS = (  # (words in libpq's message, our own words); matched only, never copied
    ("Connection refused", "connection refused"),
    ("timeout expired", "timed out"),
    ("could not translate host name", "host name not found"),
    ("No route to host", "no route to host"),
    ("Network is unreachable", "network unreachable"),
    ("No such file or directory", "no server socket there"),
    ("SSL", "TLS negotiation failed"),
)


def connect_problem(exc: Exception, settings: dict[str, Any]) -> str:
    """Why a connection failed and to where, in our own words: the server's SQLSTATE, or a class of client-side
    failure recognised in the driver's message (which is itself never used), and the plain parts of `settings`."""
    sqlstate = getattr(exc, "sqlstate", None)
    text = str(exc)
    if sqlstate:
        reason = _SQLSTATES.get(sqlstate, f"the server refused the connection (SQLSTATE {sqlstate})")
    else:
        invalid = re.search(r'invalid (?:integer )?(?:value .* for connection option "(\w+)"|(\w+) value)', text)
        key = next((k for k in invalid.groups() if k), None) if invalid else None
        if key and key in _keywords() and key not in SECRET_KEYS:
            reason = f"the value of '{key}' is invalid"
        else:
            reason = next((ours for words, ours in _CLIENT_MARKERS if words in text), "connection failed")
    return f"{reason}; {_where(settings)}"


def _where(settings: dict[str, Any]) -> str:
    """host, port, database and user, each only when it is a plain name that holds no secret of the DSN."""
    secrets = [str(v) for k, v in settings.items() if k in SECRET_KEYS and v]
    shown = []
    for key, label in (("host", "host"), ("hostaddr", "host address"), ("port", "port"), ("dbname", "database"),
                       ("user", "user")):
        value = settings.get(key)
        if value is None or value == "":
            continue
        value = str(value)
        pattern = re.compile(r"^[0-9]{1,5}$") if key == "port" else _PLAIN
        plain = all(pattern.match(part) for part in value.split(",")) and not any(s in value for s in secrets)
        kind = "number" if key == "port" else "name"
        shown.append(f"{label} {value}" if plain else f"{label} (not shown: not a plain {kind})")
    return ", ".join(shown) or "the default host and port"
