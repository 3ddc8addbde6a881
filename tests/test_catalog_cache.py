"""The connector-list cache: a fresh entry answers, an old one or `--refresh-catalog` fetches, a damaged one is
replaced, concurrent writers leave a valid file, and no secret reaches the file or its name."""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
import threading
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from reconciler.platforms.cyclr.api import CyclrApi, PartnerApiCredentials
from reconciler.platforms.cyclr.catalog_cache import CACHE_DIR, cache_key, connector_list
from reconciler.sandbox.cyclr import default_connectors
from tests.test_cyclr_api import API, SECRET, TOKENS, FakeCyclr, ok

NOW = dt.datetime(2026, 12, 4, 10, 0, tzinfo=dt.UTC)
KEY = cache_key(API, "partner-client")


class Fetches:
    """`fetch`: answers `lists` in turn (the last one again), counting the calls."""

    def __init__(self, *lists: list[dict[str, object]]) -> None:
        self.lists, self.calls = lists or (default_connectors(),), 0

    def __call__(self) -> list[dict[str, object]]:
        self.calls += 1
        return self.lists[min(self.calls, len(self.lists)) - 1]


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "config" / CACHE_DIR


def _entry(cache: Path) -> Path:
    (path,) = cache.glob("connectors-*.json")
    return path


def test_a_fresh_entry_answers_without_a_fetch(cache: Path) -> None:
    """The first call fetches and keeps the list; within `max_age` the next one reads it back."""
    fetch = Fetches()
    assert connector_list(fetch, cache, KEY, now=NOW) == default_connectors()
    later = NOW + dt.timedelta(minutes=59)
    assert connector_list(fetch, cache, KEY, now=later) == default_connectors() and fetch.calls == 1
    assert stat.S_IMODE(_entry(cache).stat().st_mode) == 0o600 and stat.S_IMODE(cache.stat().st_mode) == 0o700
    assert (cache / ".gitignore").read_text().splitlines()[-1] == "*"


@pytest.mark.parametrize(("age", "max_age", "fetched"), [
    (dt.timedelta(hours=1), None, 2),  # the default: one hour
    (dt.timedelta(minutes=10), dt.timedelta(minutes=5), 2),
    (dt.timedelta(minutes=10), dt.timedelta(minutes=30), 1),
    (-dt.timedelta(hours=2), None, 2),  # dated in the future: not ours to trust
])
def test_an_entry_older_than_max_age_is_fetched_again(
    cache: Path, age: dt.timedelta, max_age: dt.timedelta | None, fetched: int
) -> None:
    """Expiry: an entry `max_age` old (default an hour) or from the future is replaced by a new fetch."""
    fetch = Fetches(default_connectors(), default_connectors()[:1])
    connector_list(fetch, cache, KEY, now=NOW)
    options = {"max_age": max_age} if max_age else {}
    answer = connector_list(fetch, cache, KEY, now=NOW + age, **options)  # type: ignore[arg-type]
    assert fetch.calls == fetched and len(answer) == (1 if fetched == 2 else 2)
    if fetched == 2:
        assert json.loads(_entry(cache).read_text())["fetched_at"] == (NOW + age).isoformat()


def test_refresh_fetches_even_when_fresh_and_keeps_the_new_list(cache: Path) -> None:
    """`refresh` (`--refresh-catalog`) always fetches; its list is what the next run reads."""
    fetch = Fetches(default_connectors(), default_connectors()[1:])
    connector_list(fetch, cache, KEY, now=NOW)
    assert connector_list(fetch, cache, KEY, now=NOW, refresh=True) == default_connectors()[1:]
    assert connector_list(fetch, cache, KEY, now=NOW) == default_connectors()[1:] and fetch.calls == 2


def test_entries_are_kept_per_key(cache: Path) -> None:
    """Another API, partner or account has its own entry; none answers for another."""
    fetch = Fetches()
    keys = {cache_key(API, "partner-client"), cache_key(API + "/", "partner-client"), cache_key(API, "other"),
            cache_key(API, "partner-client", "acme"), cache_key("https://api.cyclr.com", "partner-client")}
    assert len(keys) == 4  # a trailing slash is the same API
    for key in keys:
        connector_list(fetch, cache, key, now=NOW)
    assert fetch.calls == 4 and len(list(cache.glob("connectors-*.json"))) == 4


def _entry_text(**fields: object) -> bytes:
    entry = {"format": "reconciler-connector-list-1", "key": KEY, "fetched_at": NOW.isoformat(), "connectors": []}
    return json.dumps(entry | fields).encode()


@pytest.mark.parametrize("damage", [
    b"", b"{not json", b"[]", b'{"format": "reconciler-connector-list-1"}', b"\xff\xfe",
    _entry_text(fetched_at="yesterday"),
    _entry_text(fetched_at="2026-12-04T10:00:00"),  # no zone
    _entry_text(connectors=[1, 2]),
    _entry_text(connectors={"Id": 1}),
    _entry_text(key="another"),
    _entry_text(format="reconciler-connector-list-0"),
])
def test_a_damaged_entry_is_ignored_and_replaced(cache: Path, damage: bytes) -> None:
    """A truncated, foreign or malformed file is no error: the list is fetched and the file rewritten whole."""
    fetch = Fetches()
    connector_list(fetch, cache, KEY, now=NOW)
    _entry(cache).write_bytes(damage)
    assert connector_list(fetch, cache, KEY, now=NOW) == default_connectors() and fetch.calls == 2
    assert json.loads(_entry(cache).read_text())["connectors"] == default_connectors()


def test_a_whole_entry_for_the_key_answers_as_written(cache: Path) -> None:
    """The control for the damaged cases: the same file shape, intact, answers without a fetch."""
    fetch = Fetches()
    connector_list(fetch, cache, KEY, now=NOW)
    _entry(cache).write_bytes(_entry_text(connectors=[{"Id": 1}]))
    assert connector_list(fetch, cache, KEY, now=NOW) == [{"Id": 1}] and fetch.calls == 1


def test_a_link_or_a_directory_at_the_entry_is_neither_followed_nor_an_error(cache: Path, tmp_path: Path) -> None:
    """What is not a regular file at the entry's name is not read, not replaced through, and fails nothing."""
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text("kept")
    fetch = Fetches()
    connector_list(fetch, cache, KEY, now=NOW)
    entry = _entry(cache)
    entry.unlink()
    entry.symlink_to(elsewhere)
    assert connector_list(fetch, cache, KEY, now=NOW) == default_connectors() and fetch.calls == 2
    assert elsewhere.read_text() == "kept" and entry.is_symlink()
    entry.unlink()
    entry.mkdir()
    assert connector_list(fetch, cache, KEY, now=NOW) == default_connectors() and fetch.calls == 3


def test_an_unwritable_cache_directory_costs_only_a_fetch(tmp_path: Path) -> None:
    """A cache directory that cannot be created (a file in its place) is no error: each call fetches."""
    (tmp_path / ".reconciler").write_text("not a directory")
    fetch = Fetches()
    for _ in range(2):
        assert connector_list(fetch, tmp_path / CACHE_DIR, KEY, now=NOW) == default_connectors()
    assert fetch.calls == 2


def test_a_failing_fetch_is_raised_and_leaves_the_entry(cache: Path) -> None:
    """An API error while refreshing is the caller's to report; the kept list stays for the next run."""
    connector_list(Fetches(), cache, KEY, now=NOW)

    def failing() -> list[dict[str, object]]:
        raise RuntimeError("the API is down")

    with pytest.raises(RuntimeError, match="down"):
        connector_list(failing, cache, KEY, now=NOW, refresh=True)
    assert connector_list(failing, cache, KEY, now=NOW) == default_connectors()


def test_concurrent_writers_leave_one_valid_entry(cache: Path) -> None:
    """Many refreshes at once: the file read afterwards is one writer's list, whole, and nothing else is left."""
    lists = [default_connectors()[: 1 + n % 2] for n in range(16)]
    start = threading.Barrier(len(lists))

    def writer(index: int) -> None:
        start.wait()
        for _ in range(20):
            connector_list(Fetches(lists[index]), cache, KEY, now=NOW, refresh=True)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(len(lists))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    entry = json.loads(_entry(cache).read_text())
    assert entry["connectors"] in lists and entry["key"] == KEY
    assert sorted(os.listdir(cache)) == [".gitignore", _entry(cache).name]
    assert connector_list(Fetches([]), cache, KEY, now=NOW) in lists


def test_no_secret_reaches_the_cache_or_its_name(cache: Path) -> None:
    """Fetched through the API client: neither the partner's secret, its bearer, nor the client id or API
    address is in the file or its name."""
    fake = FakeCyclr()
    fake.on("GET", "/v1.0/connectors", ok(default_connectors()))
    with httpx.Client(transport=httpx.MockTransport(fake)) as client:
        api = CyclrApi(API, PartnerApiCredentials("partner-client", SecretStr(SECRET)), lambda: client)
        connector_list(lambda: api.list_connectors("acme"), cache, cache_key(API, "partner-client", "acme"), now=NOW)
    assert fake.calls("/v1.0/connectors")
    for path in cache.iterdir():
        text = path.read_text()
        for value in (SECRET, *TOKENS, "partner-client", "api.eu.cyclr.com"):
            assert value not in text and value not in path.name
