"""Address globs: the one way every command picks addresses.

`--target`, `--exclude`, positional globs (`authorize`, `state rm`), `--replace` and `--allow-delete` all match
through `Globs`, and "targets minus excludes" is `Selection`. Patterns are fnmatch globs matched case-sensitively
(`installation.acme.*`); their syntax is checked where they are read (`reconciler.names.check_address_pattern`).

Owns: matching, choosing, and which patterns matched nothing. Must not: know plans, state or configuration.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["EVERYTHING", "NO_GLOBS", "Globs", "Selection", "tenant_of"]


def tenant_of(address: str) -> str:
    """The tenant an installation or account address names (`installation.<tenant>.<name>`, `account.<tenant>`);
    "" for any other address."""
    parts = address.split(".")
    if (parts[0], len(parts)) in (("installation", 3), ("account", 2)):
        return parts[1]
    return ""


@dataclass(frozen=True, slots=True)
class Globs:
    """Address globs; empty matches nothing."""

    patterns: tuple[str, ...] = ()

    @classmethod
    def of(cls, patterns: Iterable[str] = ()) -> Globs:
        """Globs in the order given, each once."""
        return cls(tuple(dict.fromkeys(patterns)))

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def match(self, address: str) -> bool:
        return any(fnmatch.fnmatchcase(address, pattern) for pattern in self.patterns)

    def first_match(self, address: str) -> str | None:
        """The first pattern (in sorted order) that matches `address`, for messages that say why."""
        return next((p for p in sorted(self.patterns) if fnmatch.fnmatchcase(address, p)), None)

    def unmatched(self, addresses: Iterable[str]) -> list[str]:
        """The patterns that match none of `addresses`, in the order given (a usage error for most commands)."""
        known = list(addresses)
        return [p for p in self.patterns if not any(fnmatch.fnmatchcase(a, p) for a in known)]


@dataclass(frozen=True, slots=True)
class Selection:
    """Targets minus excludes: with no targets every address is a target."""

    targets: Globs = Globs()
    excludes: Globs = Globs()

    @classmethod
    def of(cls, targets: Iterable[str] = (), excludes: Iterable[str] = ()) -> Selection:
        return cls(Globs.of(targets), Globs.of(excludes))

    @property
    def everything(self) -> bool:
        """Whether this selection chooses every address."""
        return not self.targets and not self.excludes

    def chooses(self, address: str) -> bool:
        return (not self.targets or self.targets.match(address)) and not self.excludes.match(address)

    def pick(self, addresses: Iterable[str]) -> list[str]:
        """The chosen ones among `addresses`, in their order."""
        return [a for a in addresses if self.chooses(a)]


NO_GLOBS = Globs()
EVERYTHING = Selection()
