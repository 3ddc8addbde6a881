"""The scope rules of a grant: what is recorded as granted (normalised once, when the tokens are recorded) and
which requested scopes a grant does not cover (decided once, here, for apply and the planner alike).

Owns: those two rules. Must not: know where the scopes come from or what is done about missing ones (apply
refuses or warns, the planner re-authorizes).
"""

from __future__ import annotations

from collections.abc import Iterable

from reconciler.catalog import Connector

__all__ = ["granted_scopes", "missing_scopes"]


def granted_scopes(
    connector: Connector, flavour: str, reported: tuple[str, ...], requested: tuple[str, ...]
) -> tuple[tuple[str, ...], bool]:
    """The scopes to record as granted: those the provider `reported` without protocol decoration (resource
    prefix, offline_access, ...), sorted — recorded scopes are never normalised again. When the provider reported
    none, the `requested` ones stand in; the flag says whether the provider said (False: the caller warns)."""
    if reported:
        return connector.normalise_granted(flavour, reported), True
    return requested, False


def missing_scopes(connector: Connector, requested: Iterable[str], granted: Iterable[str]) -> list[str]:
    """The requested scopes that the (recorded) granted ones do not grant, following implication; sorted."""
    return sorted(set(requested) - connector.closure(granted))
