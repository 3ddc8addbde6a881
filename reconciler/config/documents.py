"""The documents of a configuration: each file read and parsed, its `include:` files followed, all validated.

Owns: reading a file within the limits (size, UTF-8, YAML, a mapping at the top), following include patterns
(depth, cycles, a pattern that matches nothing), the schema check of each file, merging the files' partners and
tenants (a name declared twice), and the `Manifest` of everything a load read. Must not: merge environments
(that is `overlay`), resolve references, or check anything that needs the catalog.
"""

from __future__ import annotations

import glob
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from reconciler.config.includes import (
    MAX_FILE_BYTES,
    FileTooLarge,
    TooManyMatches,
    glob_matches,
    include_patterns,
    read_config_bytes,
)
from reconciler.config.located import Report, SourceFile, display_path
from reconciler.config.schema import IncludedFile, PartnerSpec, RootFile, TenantSpec, validation_context
from reconciler.config.translate import kind_of, validated
from reconciler.references import path_text_problem
from reconciler.yamlio import YamlSyntaxError, load_yaml_text

__all__ = ["MAX_INCLUDE_DEPTH", "Document", "Manifest", "Reader", "declared", "validated_files"]

MAX_INCLUDE_DEPTH = 32  # files in one include chain (the root file first); deeper is refused, never a crash

Document = tuple[SourceFile, dict[str, Any]]  # a file as read, and its data before validation


@dataclass
class Manifest:
    """Everything a load depended on, as plain data, so that a later run can tell nothing changed (see
    `reconciler.memo`): the files read, each include pattern with its matches, files whose absence mattered, and
    every reference with its value where plans show it (a secret's value is never kept)."""

    files: list[tuple[str, str]] = field(default_factory=list)  # absolute path, SHA-256 of its bytes
    globs: list[tuple[str, str, list[str]]] = field(default_factory=list)  # directory, pattern, sorted matches
    absent: list[str] = field(default_factory=list)
    references: list[tuple[str, bool, str | None]] = field(default_factory=list)  # reference, secret?, shown value
    sealed: list[str] = field(default_factory=list)  # state directories references may not read (see references)
    today: str | None = None  # the date warnings were computed for (a client secret's expiry)

    def read(self, path: Path, raw: bytes) -> None:
        """Record that the load read `raw` from `path`."""
        self.files.append((os.path.abspath(path), hashlib.sha256(raw).hexdigest()))


class Parser(Protocol):
    """How a load turns a file's text into plain data. The plain parser parses; the speed machinery (the parse
    cache, the parse-ahead worker: see `reconciler.app.source`) wraps it and answers from elsewhere when it can,
    always with what the plain parser would give."""

    def parse(self, path: Path, raw: bytes, text: str) -> Any:
        """The YAML data of `text` (read from `path` as `raw`); `YamlSyntaxError` when it is not YAML."""

    def done(self) -> None:
        """The whole load succeeded (a cache may keep what was parsed)."""


class PlainParser:
    def parse(self, path: Path, raw: bytes, text: str) -> Any:
        return load_yaml_text(text)

    def done(self) -> None:
        return None


PLAIN = PlainParser()


class Reader:
    """Reads the files of one load: each at most once, parsed by `parser`, recorded in the manifest, every
    problem reported."""

    def __init__(self, report: Report, manifest: Manifest, parser: Parser = PLAIN) -> None:
        self.report, self.manifest, self.parser = report, manifest, parser
        self.seen: set[Path] = set()

    def read(self, path: Path, model: type[IncludedFile] | None) -> Document | None:
        """A file's text parsed into plain data (a mapping); `model` None is an overlay, which may be empty."""
        display = display_path(path)
        try:
            raw = read_config_bytes(path)
        except FileTooLarge as exc:
            message = f"file is {exc.size} bytes; the limit is {MAX_FILE_BYTES}"
            self.report.issue(SourceFile(path, display, ""), (), message)
            return None
        except OSError as exc:
            self.report.issue(SourceFile(path, display, ""), (), f"cannot read file: {exc.strerror or exc}")
            return None
        self.manifest.read(path, raw)
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = raw[: exc.start].count(b"\n") + 1
            column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
            self.report.at(display, line, column, "file is not valid UTF-8")
            return None
        try:
            data = self.parser.parse(path, raw, text)
        except YamlSyntaxError as exc:
            self.report.at(display, exc.line, exc.column, exc.message, exc.hint)
            return None
        return self._mapping(SourceFile(path, display, text), data, model)

    def _mapping(self, src: SourceFile, data: Any, model: type[IncludedFile] | None) -> Document | None:
        if data is None and model is None:
            return src, {}  # an environment that differs in nothing (but its state)
        if data is None:
            expected = "version: 1 and partners/tenants" if model is RootFile else "partners: or tenants:"
            self.report.issue(src, (), f"file is empty; expected {expected}")
            return None
        if not isinstance(data, dict):
            self.report.at(src.display, 1, 1, f"expected a mapping at the top level, got {kind_of(data)}")
            return None
        return src, data

    def include(
        self, src: SourceFile, patterns: Sequence[tuple[int, str]], stack: tuple[Path, ...], into: list[Document]
    ) -> None:
        """Read the files `src`'s include patterns name (depth first, each once) and append them to `into`."""
        for index, pattern in patterns:
            where = ("include", index)
            if len(stack) > MAX_INCLUDE_DEPTH:
                chain = _abbreviated([display_path(p) for p in stack])
                message = f"includes nested more than {MAX_INCLUDE_DEPTH} files deep: {chain}"
                self.report.issue(src, where, message, "include the files from fewer levels")
                return
            matches = self._matches(src, where, pattern)
            wildcard = glob.has_magic(pattern)
            for match in matches or ():
                resolved = match.resolve()
                if wildcard and (resolved in stack or resolved in self.seen):
                    continue  # a glob that also matches the including file (or one loaded already)
                if resolved in stack:
                    chain = " -> ".join(display_path(p) for p in (*stack, resolved))
                    self.report.issue(src, where, f"include cycle: {chain}")
                    continue
                if resolved in self.seen:
                    continue
                self.seen.add(resolved)
                loaded = self.read(match, IncludedFile)
                if loaded is not None:
                    into.append(loaded)
                    self.include(loaded[0], include_patterns(loaded[1]), (*stack, resolved), into)

    def _matches(self, src: SourceFile, where: tuple[str, int], pattern: str) -> list[Path] | None:
        """The files one include pattern names, or None after reporting why it names none."""
        problem = path_text_problem(pattern)
        if problem is not None:
            self.report.issue(src, where, f"include pattern {problem}", None)
            return None
        try:
            matches = glob_matches(src.path.parent, pattern)
        except TooManyMatches as exc:
            message = f"include pattern '{pattern}' matches more than {exc.limit:,} files"
            self.report.issue(src, where, message, "narrow the pattern (a directory symlink is not followed)")
            return None
        self.manifest.globs.append((os.path.abspath(src.path.parent), pattern, [os.path.abspath(m) for m in matches]))
        if not matches:
            message = f"include pattern '{pattern}' matches no file"
            self.report.issue(src, where, message, "fix or remove the pattern (a renamed file must never plan a mass delete)")
            return None
        return matches


def _abbreviated(chain: Sequence[str], head: int = 3, tail: int = 2) -> str:
    """An include chain as `a -> b -> c -> ... -> y -> z` (the middle left out when it is long)."""
    shown = list(chain) if len(chain) <= head + tail + 1 else [*chain[:head], "...", *chain[-tail:]]
    return " -> ".join(shown)


def validated_files(report: Report, documents: Sequence[Document]) -> list[tuple[SourceFile, IncludedFile]]:
    """The documents that pass the schema (the first is the root file), every schema error reported."""
    files = []
    context = validation_context(documents[0][1]) if documents else {}
    for index, (src, data) in enumerate(documents):
        doc = validated(report, src, data, RootFile if index == 0 else IncludedFile, context)
        if doc is not None:
            files.append((src, doc))
    return files


def declared(
    report: Report, files: Sequence[tuple[SourceFile, IncludedFile]]
) -> tuple[dict[str, tuple[SourceFile, PartnerSpec]], dict[str, tuple[SourceFile, TenantSpec]]]:
    """The partners and tenants of all files, in declaration order, each with the file that declares it; a name
    declared in two files is reported on the second."""
    partners: dict[str, tuple[SourceFile, PartnerSpec]] = {}
    tenants: dict[str, tuple[SourceFile, TenantSpec]] = {}
    for src, doc in files:
        for section, target, items in (("partners", partners, doc.partners), ("tenants", tenants, doc.tenants)):
            for name, spec in items.items():
                if name in target:
                    first = target[name][0].display
                    report.issue(src, (section, name), f"{section[:-1]} '{name}' is already declared in {first}", at_key=True)
                else:
                    target[name] = (src, spec)  # type: ignore[assignment]
    return partners, tenants
