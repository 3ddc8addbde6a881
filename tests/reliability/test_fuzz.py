"""Fuzzing the configuration loader: YAML near the schema, and every failure must be one of our errors.

Hypothesis builds documents from a valid configuration (two partners, endpoints, credentials, an included tenant
file, an environment overlay) and breaks them the ways people and tools do: values replaced by other types and odd
scalars (YAML 1.1 booleans, dates, huge numbers, NaN, control characters, right-to-left marks, references gone
wrong), keys dropped, misspelt or added, structures nested deep, anchors and aliases (recursive ones too), tags,
and the rendered text cut, spliced and sprinkled with tabs, NULs, BOMs and flow brackets. Each example is written
to disk and loaded through `load_config` — what `validate` runs, parse cache included. A `ReconcilerError`
(one line per problem, each naming its file) is a pass; any other exception escaping is a bug.

`make test` runs 300 examples (`quick`); `make reliability` runs 10,000 (`slow`). Both are derandomized, so CI
is repeatable; set RELIABILITY_FUZZ_RANDOM=1 to explore new examples.
"""

from __future__ import annotations

import copy
import datetime as dt
import os
import re
import tempfile
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.app.source import CachedParser
from reconciler.config import load_config
from reconciler.config.cache import ParseCache
from reconciler.config.documents import PLAIN
from reconciler.errors import ConfigError, ReconcilerError, one_line

ENVIRON = {"ADO_CLIENT_ID": "11111111-0000-4000-8000-0000000000a1", "ADO_CLIENT_SECRET": "fuzz-secret-value", "ENTRA_SECRET": "fuzz-entra-secret"}

ROOT: dict[str, Any] = {
    "version": 1,
    "platform": {"service_domain": "app-h.cyclr.com"},
    "partners": {
        "microsoft-azure-devops": {
            "auth": "azure-devops-oauth",
            "client_id": "${env:ADO_CLIENT_ID}",
            "client_secret": "${env:ADO_CLIENT_SECRET}",
            "scopes": ["vso.work_full", "vso.code", "vso.project"],
            "client_secret_expires": dt.date(2027, 1, 1),
        },
        "entra": {
            "connector": "microsoft-azure-devops",
            "auth": "entra-id",
            "tenant_id": "organizations",
            "client_id": "entra-app",
            "client_secret": "${file:secrets/entra}",
            "redirect_uri": "http://127.0.0.1:8766/callback",
            "endpoints": {
                "authorize_url": "http://127.0.0.1:8765/organizations/oauth2/v2.0/authorize",
                "token_url": "http://127.0.0.1:8765/organizations/oauth2/v2.0/token",
                "api_url": "http://127.0.0.1:8765",
            },
        },
    },
    "tenants": {
        "acme": {
            "protect": False,
            "installations": {
                "ado-main": {
                    "partner": "microsoft-azure-devops",
                    "parameters": {"organization": "acme-org", "project": "Platform"},
                    "scopes": ["vso.work_full", "vso.code"],
                },
                "ado-entra": {
                    "partner": "entra",
                    "parameters": {"organization": "acme-org", "project": "Web"},
                    "scopes": ["vso.work_full"],
                    "protect": True,
                },
            },
        }
    },
    "include": ["tenants/*.yaml"],
    "backend": {"type": "local", "path": "state"},
}
INCLUDED: dict[str, Any] = {
    "tenants": {
        "globex": {
            "installations": {
                "ado": {
                    "connector": "microsoft-azure-devops",
                    "partner": "microsoft-azure-devops",
                    "parameters": {"organization": "globex", "project": "Ops"},
                    "scopes": ["vso.work_full"],
                    "credentials": {"client_id": "22222222-0000-4000-8000-0000000000b2", "client_secret": "${env:ENTRA_SECRET}"},
                }
            }
        }
    }
}
OVERLAY: dict[str, Any] = {
    "partners": {"entra": {"endpoints": {"api_url": "http://127.0.0.1:9999"}}},
    "tenants": {
        "acme": {
            "installations": {
                "ado-main": {"scopes": ["vso.work_full"], "parameters": {"project": "Web"}},
                "ado-entra": None,
            }
        }
    },
}

KEYS = [
    "version", "platform", "service_domain", "partners", "tenants", "include", "backend", "type", "path", "dsn",
    "connector", "auth", "tenant_id", "client_id", "client_secret", "client_secret_expires", "redirect_uri",
    "scopes", "endpoints", "authorize_url", "token_url", "api_url", "installations", "partner", "parameters",
    "organization", "project", "credentials", "protect", "<<", "tennants", "scope", "Partners", "",
]
ODD_STRINGS = [
    "", " ", "yes", "no", "on", "off", "null", "~", "NaN", ".inf", "-.inf", "0x1F", "0o17", "1e309", "1_000",
    "2026-02-30", "2026-13-01", "12:30:45", "-", "--- ", "...", "? x", "&a", "*a", "!!str", "!custom", "%TAG",
    "${env:}", "${env:NOPE}", "${env:ADO_CLIENT_SECRET}", "${file:}", "${file:../../etc/passwd}",
    "${file:/etc/hostname}", "${file:secrets}", "${file:secrets/entra}", "${env:ADO_CLIENT_ID", "$${env:X}",
    "vso.work_full", "vso.wrok", "vso.code_full", "vso.*", "microsoft-azure-devops", "entra", "azure-devops-oauth",
    "entra-id", "organizations", "http://127.0.0.1:0/", "http://evil.example/cb", "https://x@y.example/",
    "https://[::1]:99999/", "javascript:alert(1)", "tenants/*.yaml", "tenants/**", "reconciler.yaml",
    "../reconciler.yaml", "/dev/null", "a" * 64, "acme.corp", "a\nb", "\t", "\x00", "\x7f", "\u200f", "\u2028",
    "\ufeff", "\ud7ff", "😀", "é" * 10, "Ⅻ", "0", "-acme", "P\n```", "x" * 5000,
]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**20, max_value=10**4000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.dates(),
    st.datetimes(),
    st.sampled_from(ODD_STRINGS),
    st.text(max_size=40),
    st.binary(max_size=8),
)


def _values() -> st.SearchStrategy[Any]:
    return st.recursive(
        SCALARS,
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), children, max_size=4),
        ),
        max_leaves=12,
    )


VALUES = _values()


def _paths(data: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from _paths(value, (*prefix, index))


def _parent(data: Any, path: tuple[Any, ...]) -> Any:
    for part in path[:-1]:
        data = data[part]
    return data


@st.composite
def mutated(draw: st.DrawFn, base: dict[str, Any]) -> Any:
    """`base` after a few structural mutations: replace, drop, add, rename, nest, wrap."""
    data = copy.deepcopy(base)
    for _ in range(draw(st.sampled_from([0, 1, 1, 1, 2, 2, 3, 4]))):
        paths = [p for p in _paths(data) if p]
        kind = draw(st.sampled_from(["same-type"] * 4 + ["replace", "drop", "add", "rename", "nest", "wrap", "root"]))
        if kind == "root" or not paths:
            data = draw(st.one_of(VALUES, st.just(data)))
            continue
        path = draw(st.sampled_from(paths))
        parent, last = _parent(data, path), path[-1]
        if kind == "same-type":  # type-correct, so the checks past the schema (catalog, references) run
            value = parent[last]
            if isinstance(value, str):
                parent[last] = draw(st.one_of(st.sampled_from(ODD_STRINGS), st.text(max_size=30)))
            elif isinstance(value, list):
                parent[last] = draw(st.lists(st.sampled_from(ODD_STRINGS[40:60]), max_size=4))
            elif isinstance(value, dict) and value:
                key = draw(st.sampled_from(sorted(value)))
                value[draw(st.one_of(st.sampled_from(KEYS), st.sampled_from(ODD_STRINGS)))] = value.pop(key)
        elif kind == "replace":
            parent[last] = draw(VALUES)
        elif kind == "drop":
            del parent[last]
        elif kind == "add" and isinstance(parent, dict):
            parent[draw(st.one_of(st.sampled_from(KEYS), st.text(max_size=12)))] = draw(VALUES)
        elif kind == "add" and isinstance(parent, list):
            parent.append(draw(VALUES))
        elif kind == "rename" and isinstance(parent, dict):
            parent[draw(st.sampled_from(KEYS))] = parent.pop(last)
        elif kind == "nest":
            value = parent[last]
            for _ in range(draw(st.integers(1, 200))):
                value = [value] if draw(st.booleans()) else {"x": value}
            parent[last] = value
        elif kind == "wrap":
            parent[last] = [parent[last]] if not isinstance(parent[last], list) else parent[last][0:1] or None
    return data


_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def _dump(data: Any, flow: bool) -> str:
    try:
        return yaml.dump(data, Dumper=_DUMPER, default_flow_style=flow, allow_unicode=True, width=80)
    except (yaml.YAMLError, RecursionError):
        return repr(data)  # unrepresentable (bytes in keys, ...): garbage text is a fine input too


SPLICES = [
    "\t", "\x00", "\ufeff", ":", ": ", "- ", "{", "}", "[", "]", ",", "#", "&a ", "*a", "&a [*a, *a] ", "!!map ",
    "!!python/object:os.system ", "!x ", "? ", "|\n", ">\n", '"', "'", "\\", "\n---\n", "\n...\n", "%YAML 1.1\n",
    "<<: *a\n", "\r", "\x85", "é", "\u2029", "\n  ", "\n\t", "*undefined ", "&b {x: *b} ",
]


@st.composite
def yaml_text(draw: st.DrawFn, base: dict[str, Any]) -> str:
    """YAML text near `base`: a mutated document, rendered block or flow, then spliced as text."""
    text = _dump(draw(mutated(base)), flow=draw(st.booleans()))
    for _ in range(draw(st.sampled_from([0, 0, 0, 0, 1, 1, 2, 3]))):
        at = draw(st.integers(0, len(text)))
        kind = draw(st.sampled_from(["insert", "cut", "truncate", "duplicate-line", "anchor-alias", "loop"]))
        if kind == "insert":
            text = text[:at] + draw(st.sampled_from(SPLICES)) + text[at:]
        elif kind == "cut":
            text = text[:at] + text[at + draw(st.integers(1, 20)) :]
        elif kind == "truncate":
            text = text[:at]
        elif kind == "duplicate-line":
            lines = text.splitlines(keepends=True)
            if lines:
                index = draw(st.integers(0, len(lines) - 1))
                lines.insert(index, lines[index])
                text = "".join(lines)
        elif kind == "loop":  # an anchor on a block, an alias to it inside that block
            lines = text.splitlines(keepends=True)
            blocks = [i for i, line in enumerate(lines) if line.rstrip().endswith(":")]
            scalars = [i for i, line in enumerate(lines) if re.match(r"\s*[^\s-][^:]*: \S", line)]
            pairs = [(i, j) for i in blocks for j in scalars if j > i]
            if pairs:
                first, second = draw(st.sampled_from(pairs))
                lines[first] = lines[first].rstrip() + " &loop\n"
                lines[second] = lines[second].split(":", 1)[0] + ": *loop\n"
                text = "".join(lines)
        else:  # an anchor on one value, aliases to it elsewhere: the usual DRY
            lines = text.splitlines(keepends=True)
            values = [i for i, line in enumerate(lines) if ": " in line and not line.rstrip().endswith(":")]
            if len(values) >= 2:
                first, second = sorted(draw(st.lists(st.sampled_from(values), min_size=2, max_size=2)))
                lines[first] = lines[first].replace(": ", ": &v ", 1)
                lines[second] = lines[second].split(": ", 1)[0] + ": *v\n"
                text = "".join(lines)
    return text


@st.composite
def configurations(draw: st.DrawFn) -> tuple[dict[str, str | bytes], str | None]:
    """Files of a configuration directory (root, an included tenant file, maybe an overlay) and the environment."""
    files: dict[str, str | bytes] = {"reconciler.yaml": draw(yaml_text(ROOT)), "secrets/entra": "entra-secret\n"}
    files["tenants/globex.yaml"] = draw(st.one_of(yaml_text(INCLUDED), st.just(_dump(INCLUDED, False))))
    environment = None
    if draw(st.booleans()):
        environment = "prod"
        files["environments/prod.yaml"] = draw(yaml_text(OVERLAY))
    if draw(st.integers(0, 9)) == 0:  # now and then, bytes that are not UTF-8
        raw = str(files["reconciler.yaml"]).encode()
        at = draw(st.integers(0, len(raw)))
        files["reconciler.yaml"] = raw[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80"])) + raw[at:]
    return files, environment


class Outcomes:
    """What the examples did: how many ran, which foreign exceptions escaped (type and where)."""

    def __init__(self) -> None:
        self.examples = 0
        self.valid = 0
        self.foreign: dict[str, str] = {}
        self.unclear: dict[str, str] = {}  # messages that are not one clean line per problem, naming a file


def check_one(files: dict[str, str | bytes], environment: str | None, outcomes: Outcomes) -> None:
    """Load one example; a `ReconcilerError` with one located line per problem is fine, nothing else is."""
    outcomes.examples += 1
    with tempfile.TemporaryDirectory(prefix="fuzz-") as scratch:
        directory, cache_dir = Path(scratch) / "config", Path(scratch) / "cache"
        for rel, content in files.items():
            target = directory / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8", "surrogatepass"))
        cache = ParseCache(cache_dir, "fuzz")
        try:
            for _ in range(2):  # the second load reads what the first one cached, when it loaded
                load_config(directory, environ=ENVIRON, today=dt.date(2026, 6, 1), environment=environment,
                            parser=CachedParser(cache, PLAIN))
            outcomes.valid += 1
        except ReconcilerError as exc:
            lines = exc.lines()
            unclear = not lines or any(not line or one_line(line) != line for line in lines)
            if isinstance(exc, ConfigError):
                unclear = unclear or not all(issue.location.file for issue in exc.issues)
            if unclear:
                outcomes.unclear.setdefault(lines[0] if lines else "(no message)", str(files)[:3000])
            assert not unclear, lines
        except Exception as exc:
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            where = f"{type(exc).__name__} at {Path(frame.filename).name}:{frame.lineno}"
            outcomes.foreign.setdefault(where, "".join(traceback.format_exception(exc))[-3000:])
            raise


def _settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=os.environ.get("RELIABILITY_FUZZ_RANDOM") != "1",
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


def _fuzz(examples: int, figures) -> None:  # type: ignore[no-untyped-def]
    outcomes = Outcomes()

    @_settings(examples)
    @given(configurations())
    def body(example: tuple[dict[str, str | bytes], str | None]) -> None:
        check_one(*example, outcomes)

    figures.goal("fuzz", foreign_exceptions=0, unclear_messages=0)
    try:
        body()
    finally:
        figures.add("fuzz", examples=outcomes.examples, valid=outcomes.valid)
        figures.add("fuzz", foreign_exceptions=len(outcomes.foreign), unclear_messages=len(outcomes.unclear))
    assert outcomes.examples >= examples
    assert 0 < outcomes.valid < outcomes.examples  # near the schema: some examples still load, most do not


@pytest.mark.quick
def test_fuzz_config_loader_quick(figures) -> None:  # type: ignore[no-untyped-def]
    """300 documents near the schema: every failure is a ReconcilerError."""
    _fuzz(300, figures)


@pytest.mark.slow
def test_fuzz_config_loader_full(figures) -> None:  # type: ignore[no-untyped-def]
    """10,000 documents near the schema: every failure is a ReconcilerError."""
    _fuzz(10_000, figures)


# -- state files: the snapshot and its journal -------------------------------------------------------------------------

LINEAGE = "11111111-1111-4111-8111-111111111111"
INSTALLATION_RECORD: dict[str, Any] = {
    "kind": "installation", "tenant": "acme", "name": "ado", "connector": "microsoft-azure-devops",
    "partner": "microsoft-azure-devops", "auth": "azure-devops-oauth",
    "parameters": {"organization": "acme-org", "project": "Platform"}, "requested_scopes": ["vso.work_full"],
    "granted_scopes": ["vso.work_full"], "client_id": "11111111-0000-4000-8000-0000000000a1", "client_secret_ref": "${env:ADO_CLIENT_SECRET}",
    "redirect_uri": "https://app-h.cyclr.com/connector/callback", "token_url": "https://t.example/token",
    "authorized_at": "2026-01-01T00:00:00+00:00", "expires_at": "2026-01-01T01:00:00+00:00",
    "pending": {"since": "2026-01-01T00:00:00+00:00", "expires_at": "2026-01-08T00:00:00+00:00",
                "target_digest": "d", "client_id": "11111111-0000-4000-8000-0000000000a1", "requested_scopes": ["vso.work_full"]},
}
STATE_DOC: dict[str, Any] = {
    "format_version": 1, "lineage": LINEAGE, "serial": 3, "environment": "default",
    "resources": {"installation.acme.ado": INSTALLATION_RECORD},
}
JOURNAL_PAYLOAD: dict[str, Any] = {
    "lineage": LINEAGE, "serial": 4, "set": {"installation.acme.ado": INSTALLATION_RECORD}, "delete": ["partner.x"],
}


def _journal_line(payload: Any) -> str:
    """A journal line whose checksum matches its payload (so the payload itself is what gets checked)."""
    import hashlib
    import json

    try:
        body = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
        return json.dumps({"c": hashlib.sha256(body.encode()).hexdigest(), "p": payload}, default=str) + "\n"
    except (TypeError, ValueError, RecursionError):
        return repr(payload) + "\n"


@st.composite
def state_files(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """A state snapshot and journal near the format: mutated documents and records, spliced text."""
    import json

    def as_json(data: Any) -> str:
        try:
            return json.dumps(data, default=str)
        except (TypeError, ValueError, RecursionError):
            return repr(data)

    snapshot = as_json(draw(mutated(STATE_DOC))) if draw(st.integers(0, 3)) else as_json(STATE_DOC)
    lines = [_journal_line(draw(mutated(JOURNAL_PAYLOAD))) for _ in range(draw(st.integers(0, 3)))]
    journal = "".join(lines)
    for _ in range(draw(st.sampled_from([0, 0, 1, 2]))):
        at = draw(st.integers(0, len(journal)))
        journal = journal[:at] + draw(st.sampled_from([*SPLICES, "[" * 5000, "\n", '{"c":'])) + journal[at:]
    return snapshot.encode("utf-8", "surrogatepass"), journal.encode("utf-8", "surrogatepass")


def _fuzz_state(examples: int, figures) -> None:  # type: ignore[no-untyped-def]
    from reconciler.errors import StateError
    from reconciler.state.local import LocalBackend

    outcomes = Outcomes()

    @_settings(examples)
    @given(state_files())
    def body(files: tuple[bytes, bytes]) -> None:
        outcomes.examples += 1
        with tempfile.TemporaryDirectory(prefix="fuzz-state-") as scratch:
            (Path(scratch) / "default.json").write_bytes(files[0])
            (Path(scratch) / "default.journal").write_bytes(files[1])
            try:
                LocalBackend(Path(scratch), "default").read()
                outcomes.valid += 1
            except StateError as exc:
                assert all(one_line(line) == line for line in exc.lines())
            except Exception as exc:
                frame = traceback.extract_tb(exc.__traceback__)[-1]
                outcomes.foreign.setdefault(f"{type(exc).__name__} at {Path(frame.filename).name}:{frame.lineno}", "")
                raise

    figures.goal("fuzz-state", foreign_exceptions=0)
    try:
        body()
    finally:
        figures.add("fuzz-state", examples=outcomes.examples, valid=outcomes.valid,
                    foreign_exceptions=len(outcomes.foreign))
    assert 0 < outcomes.valid < outcomes.examples


@pytest.mark.quick
def test_fuzz_state_reader_quick(figures) -> None:  # type: ignore[no-untyped-def]
    """200 state snapshots and journals near the format: read, or a StateError."""
    _fuzz_state(200, figures)


@pytest.mark.slow
def test_fuzz_state_reader_full(figures) -> None:  # type: ignore[no-untyped-def]
    """2,000 state snapshots and journals near the format: read, or a StateError."""
    _fuzz_state(2_000, figures)
