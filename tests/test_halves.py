"""`in_halves`: the same results with a forked worker as without, errors met again here, a dead worker covered."""

from __future__ import annotations

import os
from collections.abc import Sequence

import pytest

from reconciler.app import halves


class Odd(Exception):
    pass


def _work(chunk: Sequence[str]) -> dict[str, object]:
    return {item: Odd(item) if int(item[1:]) % 7 == 0 else (item, os.getpid()) for item in chunk}


def _encode(result: object) -> object:
    if isinstance(result, Odd):
        raise TypeError("not handed over")
    assert isinstance(result, tuple)
    return list(result)


def _decode(plain: object) -> object:
    assert isinstance(plain, list)
    return tuple(plain)


@pytest.fixture
def small(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(halves, "MIN_ITEMS", 10)
    monkeypatch.setattr(halves, "CHUNK", 7)
    monkeypatch.setattr(halves, "_cpus", lambda: 2)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here")
def test_forked_results_match(small: None, monkeypatch: pytest.MonkeyPatch) -> None:
    forks: list[int] = []
    fork = os.fork
    monkeypatch.setattr(os, "fork", lambda: forks.append(1) or fork())
    items = [f"i{n}" for n in range(500)]
    results = halves.in_halves(items, _work, _encode, _decode)
    assert forks == [1]
    assert list(results) != [] and set(results) == set(items)
    for item in items:
        value = results[item]
        if int(item[1:]) % 7 == 0:
            assert isinstance(value, Odd) and str(value) == item  # an error is met again in this process
        else:
            assert isinstance(value, tuple) and value[0] == item
    # Which side did which chunk depends on timing (either may claim them all); every result is right either way.


def test_short_lists_stay_here() -> None:
    items = [f"i{n}" for n in range(20)]
    results = halves.in_halves(items, _work, _encode, _decode)
    assert all(value[1] == os.getpid() for value in results.values() if isinstance(value, tuple))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here")
def test_a_dead_worker_is_covered(small: None, monkeypatch: pytest.MonkeyPatch) -> None:
    parent = os.getpid()

    def work(chunk: Sequence[str]) -> dict[str, object]:
        if os.getpid() != parent:
            os._exit(3)  # the worker dies at once
        return _work(chunk)

    items = [f"i{n}" for n in range(300)]
    results = halves.in_halves(items, work, _encode, _decode)
    assert set(results) == set(items)
    assert all(value[1] == parent for value in results.values() if isinstance(value, tuple))
