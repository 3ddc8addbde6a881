"""The status page in a real headless Chromium: `reconciler status --format html` (and the page the service serves
at /status) renders, shows the same counts and rows as the JSON document, runs no script and loads nothing but
itself; and every value of a hostile document is escaped, never a live link."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from reconciler.render.status_html import render_status_html
from reconciler.status import STATUS_WORDS
from tests.service_support import API_KEY_EU, EVERY_STATUS, ServiceWorld
from tests.tools.chromium_approve import FLAGS


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless, through Playwright (as tests/tools/chromium_approve.py launches it)."""
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=os.environ.get("CHROMIUM", "/usr/bin/chromium"), args=FLAGS)
        yield chromium
        chromium.close()


class Watched:
    """A page whose every request is recorded (and any but `allowed` aborted), with its console messages."""

    def __init__(self, page: Page, allowed: str) -> None:
        self.page = page
        self.requests: list[str] = []
        self.console: list[str] = []
        page.on("request", lambda request: self.requests.append(request.url))
        page.on("console", lambda message: self.console.append(message.text))
        page.route("**/*", lambda route: route.continue_() if route.request.url == allowed else route.abort())


def _check_page(page: Page, document: dict[str, Any]) -> None:
    """The page shows the document: summary first, its counts per word and per partner, a row per installation
    with its status, the pending sign-in links as the only links, no script, its stylesheet applied."""
    assert page.title() == f"Reconciler status · {document['environment']}"
    assert page.locator("#summary").is_visible()
    assert page.locator("main > section").first.get_attribute("id") == "summary"
    for word in STATUS_WORDS:
        count = page.locator(f'#summary [data-status-word="{word}"] [data-count]')
        assert count.inner_text() == count.get_attribute("data-count") == str(document["summary"][word]), word
        rows = page.locator(f'tr[data-status="{word}"]')
        assert rows.count() == document["summary"][word], word
        expected = sorted(e["address"] for e in document["installations"] if e["status"] == word)
        assert sorted(rows.nth(i).get_attribute("data-address") or "" for i in range(rows.count())) == expected
    for partner, counts in document["partners"].items():
        for word in STATUS_WORDS:
            cell = page.locator(f'#partners tr[data-partner="{partner}"] td[data-status-word="{word}"]')
            assert cell.inner_text() == str(counts[word]), (partner, word)
    assert page.locator("tr[data-status]").count() == document["shown"] == len(document["installations"])
    assert page.locator("script").count() == 0 and page.locator("[src]").count() == 0
    links = [e["pending"]["link"] for e in document["installations"] if e["pending"] and e["pending"]["link"]]
    anchors = page.locator("[href]")
    assert [anchors.nth(i).get_attribute("href") for i in range(anchors.count())] == links
    assert all(anchors.nth(i).get_attribute("rel") == "noreferrer" for i in range(anchors.count()))
    # The stylesheet is allowed by its hash in the page's policy: were the hash wrong, Chromium would not apply it.
    assert page.locator("ul.counts").evaluate("e => getComputedStyle(e).display") == "flex"


def test_the_html_status_renders_in_chromium_with_the_counts_of_the_json(
    every_status: ServiceWorld, browser: Browser, tmp_path: Path
) -> None:
    """`status --format html` in Chromium: what the JSON document says, in every status word, loading nothing."""
    shown = every_status.cli("status", "--format", "html")
    assert shown.exit_code == 2, shown.stderr
    document = json.loads(every_status.cli("status", "--format", "json").stdout)
    assert {w: document["summary"][w] for w in STATUS_WORDS} == {w: len(a) for w, a in EVERY_STATUS.items()}
    page_file = tmp_path / "status.html"
    page_file.write_text(shown.stdout)
    url = page_file.as_uri()
    watched = Watched(browser.new_page(), url)
    try:
        watched.page.goto(url)
        _check_page(watched.page, document)
    finally:
        watched.page.close()
    assert watched.requests == [url]
    assert not [m for m in watched.console if "Content Security Policy" in m]


def test_the_page_the_service_serves_renders_in_chromium_for_the_keys_tenants(
    every_status: ServiceWorld, browser: Browser
) -> None:
    """GET /status with an API key, in Chromium: the page of the key's tenants, as its JSON says, and nothing else
    requested."""
    url = f"{every_status.public_url}/status"
    key = {"Authorization": f"Bearer {API_KEY_EU}"}
    document = httpx.get(url, params={"format": "json"}, headers=key, timeout=20).json()
    assert {e["tenant"] for e in document["installations"]} == {"eu-acme", "eu-globex", "eu-umbrella"}
    watched = Watched(browser.new_page(extra_http_headers=key), url)
    try:
        answer = watched.page.goto(url)
        assert answer is not None and answer.status == 200
        assert "default-src 'none'" in answer.headers["content-security-policy"]
        _check_page(watched.page, document)
    finally:
        watched.page.close()
    assert watched.requests == [url]


# -- the page's text, without a browser ---------------------------------------------------------------------------

HOSTILE = "<script>alert(1)</script>\"'&"
NOW = "2026-01-01T12:00:00Z"


def _entry(tenant: str, status: str, link: str | None = None, expires: str = "2026-01-08T12:00:00Z") -> dict[str, Any]:
    return {
        "address": f"installation.{tenant}.ado", "tenant": tenant, "name": "ado", "partner": HOSTILE,
        "connector": "microsoft-azure-devops", "platform": "local", "auth": "azure-devops-oauth", "status": status,
        "reason": HOSTILE, "next_step": HOSTILE, "checked_at": NOW, "stale": False,
        "scopes": {"declared": [], "granted": [], "missing": [], "extra": []}, "access_token_expires_at": None,
        "refresh_token": None, "client_secret_expires": None,
        "deadline": {"what": HOSTILE, "at": NOW}, "authorized_at": None, "authorized_by": None,
        "pending": None if link is None else {"since": NOW, "expires_at": expires, "link": link},
    }


def _document(*entries: dict[str, Any]) -> dict[str, Any]:
    summary = {word: sum(1 for e in entries if e["status"] == word) for word in STATUS_WORDS}
    return {
        "format_version": "1.0", "generated_at": NOW, "environment": HOSTILE, "window": HOSTILE, "state_exists": True,
        "total": len(entries), "shown": len(entries), "summary": summary, "partners": {HOSTILE: summary},
        "notes": [HOSTILE], "installations": list(entries),
    }


class _Parsed(HTMLParser):
    """Every element (tag, attributes) and the text, checking that each element opened is closed in order."""

    VOID = frozenset({"meta", "link", "br", "img", "input", "hr", "col", "wbr", "source"})

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.open: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.open and self.open[-1] == tag, (self.open, tag)
        self.open.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def attributes(self, name: str) -> list[str | None]:
        return [attrs[name] for _, attrs in self.elements if name in attrs]


def test_hostile_values_are_escaped_and_only_a_valid_web_link_is_a_link() -> None:
    """Reasons, tenants, partners, notes and links full of markup stay text; a `javascript:` link, one with a space
    and an expired one are not anchors; a valid https link is, with no referrer; the page is well formed."""
    document = _document(
        _entry("acme", "pending", link="javascript:alert(1)"),
        _entry("globex", "needs-reauthorization", link="https://evil.example/ x"),
        _entry("initech", "pending", link="https://connect.example/authorize/a?sig=1&x=\"2\"<"),
        _entry("hooli", "pending", link="https://connect.example/old", expires="2026-01-01T11:59:59Z"),
        _entry('<b onmouseover="x">t', "error"),
    )
    page = render_status_html(document)
    parsed = _Parsed(page)
    assert parsed.open == []
    assert "<script" not in page and "<b " not in page
    assert [tag for tag, _ in parsed.elements].count("script") == 0 and parsed.attributes("onmouseover") == []
    assert parsed.attributes("href") == ["https://connect.example/authorize/a?sig=1&x=\"2\"<"]
    assert [attrs.get("rel") for tag, attrs in parsed.elements if tag == "a"] == ["noreferrer"]
    assert parsed.attributes("src") == []
    text = "".join(parsed.text)
    assert text.count(HOSTILE) >= 5 * 3 + 1  # reason, next step, partner of each row; the note
    assert "javascript:alert(1)" in text and "sign-in link expired" in text
    assert '<b onmouseover="x">t' in parsed.attributes("data-tenant")
    ids = parsed.attributes("id")
    assert len(ids) == len(set(ids)) and all(i and " " not in i for i in ids)


def test_the_pages_policy_forbids_scripts_and_loads_and_allows_exactly_its_stylesheet() -> None:
    """The Content-Security-Policy in the page: nothing by default, no base URL or form target, and the one
    stylesheet by the hash of its text."""
    parsed = _Parsed(render_status_html(_document(_entry("acme", "healthy"))))
    [policy] = [attrs["content"] for tag, attrs in parsed.elements if attrs.get("http-equiv") == "Content-Security-Policy"]
    assert policy is not None
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["default-src"] == "'none'" and directives["base-uri"] == "'none'"
    assert directives["form-action"] == "'none'" and "script-src" not in directives
    [style] = [d for d in parsed.text if "ul.counts" in d]
    digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
    assert directives["style-src"] == f"'sha256-{digest}'"


def test_an_empty_report_says_so() -> None:
    """No state yet: the page says so, with every count zero."""
    document = {**_document(), "state_exists": False, "partners": {}, "notes": []}
    parsed = _Parsed(render_status_html(document))
    assert "There is no state yet" in "".join(parsed.text)
    assert parsed.attributes("data-count") == ["0"] * len(STATUS_WORDS)
