"""The service under load on PostgreSQL state (issue 15): 1,000 concurrent completions through two instances
behind one URL while a CLI apply runs — 0 lost, 0 recorded twice, no lock held after. `make test` runs 60 of them
(tests/test_service_postgres.py); this is the full count, for `make reliability`."""

from __future__ import annotations

import pytest

from tests.service_load_support import concurrent_completions
from tests.service_support import ServiceWorld


@pytest.mark.slow
def test_a_thousand_concurrent_completions_on_postgres(service_world: ServiceWorld, pg_database: str, figures) -> None:  # type: ignore[no-untyped-def]
    figures.goal("service load", lost=0, recorded_twice=0, locks_held_after=0)
    result = concurrent_completions(service_world, pg_database, 1000)
    figures.add(
        "service load", completions=result.completions, lost=result.lost, recorded_twice=result.twice,
        locks_held_after=result.locks_held, seconds_signing_in=round(result.seconds),
    )
    assert (result.completions, result.lost, result.twice, result.locks_held) == (1001, 0, 0, 0)
