"""`reconciler status` end to end: installations applied over real HTTP against the sandbox provider, then each
situation reported with its word, reason and next step in every format (JSON, the plain text table, Markdown,
HTML), the exit codes alerting relies on, the filters, and `state list` / `state show` saying the same words.

The reconciler's clock is fixed (and moved on where a test needs time to pass); the sandbox keeps real time, so
a token it issued still works when the reconciler's clock says days have passed.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import urllib.parse
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

from reconciler.cli import group as cli_group
from reconciler.sandbox import SandboxServer
from reconciler.sandbox import app as sandbox_app
from reconciler.status import STATUS_WORDS
from tests.conftest import run
from tests.sandbox_support import (
    APPLY,
    ENTRA_SECRET,
    ENV,
    LEGACY_ID,
    LEGACY_SECRET,
    all_text_under,
    installation,
)

ACME = "installation.acme.ado"  # the legacy partner's (Azure DevOps OAuth)
GLOBEX = "installation.globex.ado"  # the Entra partner's
INITECH = "installation.initech.ado"
DEFER = ["-C", ".", "apply", "--auto-approve", "--auth-mode", "defer"]
FORMATS = ("json", "text", "markdown", "html")
LEGACY_STEP = "`reconciler apply` (--auth-mode defer gives the tenant a link)"


class Clock:
    """The reconciler's clock: fixed, moved on by the test."""

    def __init__(self) -> None:
        self.at = dt.datetime.now(dt.UTC).replace(microsecond=0)

    def __call__(self) -> dt.datetime:
        return self.at

    def advance(self, **span: float) -> None:
        self.at += dt.timedelta(**span)


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """The clock every command reads, fixed at the present second until the test moves it."""
    fixed = Clock()
    monkeypatch.setattr(cli_group, "now", fixed)
    return fixed


@pytest.fixture
def world(sandbox_config, clock: Clock):  # type: ignore[no-untyped-def]
    """The sandbox, the config directory, and `configure(installations, legacy=[...], entra=[...])`: writes
    reconciler.yaml with extra keys on either partner (`client_secret_expires: ...`, `app_type: spa`)."""
    sandbox, directory, write, _browser = sandbox_config

    def configure(installations: str, *, legacy: tuple[str, ...] = (), entra: tuple[str, ...] = ()) -> None:
        write(installations)
        path = directory / "reconciler.yaml"
        text = path.read_text()
        for partner, lines in (("legacy", legacy), ("entra", entra)):
            anchor = f"  {partner}:\n    connector: microsoft-azure-devops\n"
            assert text.count(anchor) == 1
            text = text.replace(anchor, anchor + "".join(f"    {line}\n" for line in lines))
        path.write_text(text)

    return sandbox, directory, configure


def both(*, acme: str = "Platform") -> str:
    """acme on the legacy partner, globex on the Entra partner."""
    return installation("acme", "ado", "legacy", "acme-org", acme, ["vso.work_full", "vso.project"]) + installation(
        "globex", "ado", "entra", "globex", "Operations", ["vso.work_full"]
    )


def applied(world, **partners: tuple[str, ...]):  # type: ignore[no-untyped-def]
    """Both installations declared and applied (consent given in the scripted browser)."""
    sandbox, directory, configure = world
    configure(both(), **partners)
    result = run(APPLY, ENV)
    assert result.exit_code == 0, result.stderr
    return sandbox, directory, configure


# -- reading the four formats -------------------------------------------------------------------------------------


def status(*args: str) -> Result:
    return run(["-C", ".", "status", *args], ENV)


def document(*args: str) -> tuple[int, dict[str, Any]]:
    result = status("--format", "json", *args)
    assert result.exit_code in (0, 2), result.stderr
    return result.exit_code, json.loads(result.stdout)


def entry(doc: dict[str, Any], address: str) -> dict[str, Any]:
    [found] = [e for e in doc["installations"] if e["address"] == address]
    return found


def table_words(text: str) -> dict[str, str]:
    """ADDRESS -> STATUS from the plain (piped) text table."""
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("TENANT "))
    words: dict[str, str] = {}
    for line in lines[header + 1:]:
        if not line.strip():
            break
        cells = line.split()
        words[cells[1]] = cells[2]
    return words


class _Rows(HTMLParser):
    """The text of each table row's cells in an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self.cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self.cell is not None and self.rows:
            self.rows[-1].append("".join(self.cell).strip())
            self.cell = None

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.append(data)


def html_rows(page: str) -> list[list[str]]:
    parser = _Rows()
    parser.feed(page)
    return parser.rows


def reported(*args: str, expect_exit: int | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    """The status in all four formats (same filters): every format shows each installation's word and the same
    counts; the Markdown comment opens with its summary line; all exit alike. The JSON document and the outputs."""
    outputs: dict[str, str] = {}
    exits = set()
    for fmt in FORMATS:
        result = status("--format", fmt, *args)
        assert result.exit_code in (0, 2), (fmt, result.stdout, result.stderr)
        exits.add(result.exit_code)
        outputs[fmt] = result.stdout
    assert len(exits) == 1, exits
    doc = json.loads(outputs["json"])
    words = {e["address"]: e["status"] for e in doc["installations"]}
    assert exits == {0 if all(w == "healthy" for w in words.values()) else 2}
    if expect_exit is not None:
        assert exits == {expect_exit}
    assert sum(doc["summary"].values()) == doc["shown"] == len(words)
    assert set(doc["summary"]) == set(STATUS_WORDS)
    if words:
        assert table_words(outputs["text"]) == words
    counts = ", ".join(f"{n} {w}" for w, n in doc["summary"].items() if n)
    md = outputs["markdown"].splitlines()
    assert md[0].startswith("### Reconciler status") and md[1] == ""
    assert md[2].startswith(f"**{doc['shown']} installation") and md[2].endswith(f"{counts}**" if counts else "**"), md[2]
    rows = html_rows(outputs["html"])
    for address, word in words.items():
        assert any(f"`{address}`" in line and f" {word} |" in line for line in md), (address, word)
        assert any(row and row[0] == address and word in row for row in rows), (address, word, rows)
    return doc, outputs


# -- healthy -------------------------------------------------------------------------------------------------------


def test_working_legacy_and_entra_installations_are_healthy(world, clock: Clock) -> None:
    """Right after apply both installations are healthy in every format, exit 0: the legacy one with its access
    token's expiry, the Entra one with its refresh token's age against 90 days unused."""
    applied(world)
    doc, outputs = reported(expect_exit=0)
    assert doc["summary"] == {"healthy": 2, "expiring": 0, "needs-reauthorization": 0, "pending": 0, "error": 0}
    assert doc["format_version"] == "1.0" and doc["generated_at"] == iso(clock.at) and doc["window"] == "14d"
    assert doc["partners"]["legacy"]["healthy"] == 1 and doc["partners"]["entra"]["healthy"] == 1
    legacy, entra = entry(doc, ACME), entry(doc, GLOBEX)
    for e in (legacy, entra):
        assert e["reason"] == f"token valid until {e['access_token_expires_at']}"
        assert e["next_step"] is None and e["checked_at"] == iso(clock.at) and e["stale"] is False
        assert e["pending"] is None and e["authorized_by"] == "sandbox.user@example.com"
    assert legacy["tenant"] == "acme" and legacy["auth"] == "azure-devops-oauth" and legacy["platform"] == "local"
    assert legacy["refresh_token"] is None and legacy["deadline"] is None
    assert legacy["scopes"] == {"declared": ["vso.project", "vso.work_full"], "granted": ["vso.project", "vso.work_full"],
                                "missing": [], "extra": []}
    lapses = iso(clock.at + dt.timedelta(days=90))
    assert entra["refresh_token"] == {"issued_at": iso(clock.at), "age": "0s", "lifetime": "90d",
                                      "counted_from": "last use", "lapses_at": lapses}
    assert entra["deadline"] == {"what": "refresh-token", "at": lapses}
    assert "2 installations: 2 healthy" in outputs["text"]


# -- needs-reauthorization -----------------------------------------------------------------------------------------


def test_a_grant_revoked_at_the_provider_needs_reauthorization_after_status_refresh(world, clock: Clock) -> None:
    """Revoked at the sandbox: `status` alone cannot know (healthy, exit 0); `status --refresh` checks, records and
    reports needs-reauthorization with what to do, exit 2; the Entra installation stays healthy."""
    sandbox, _, _ = applied(world)
    sandbox.provider.revoke(client_id=LEGACY_ID)
    assert document()[1]["summary"]["healthy"] == 2
    clock.advance(minutes=5)
    refreshed = status("--refresh", "--format", "json")
    assert refreshed.exit_code == 2, refreshed.stderr
    acme = entry(json.loads(refreshed.stdout), ACME)
    assert (acme["status"], acme["reason"], acme["next_step"]) == ("needs-reauthorization", "token revoked", LEGACY_STEP)
    assert acme["checked_at"] == iso(clock.at)
    doc, _ = reported(expect_exit=2)  # recorded: status without --refresh says so from now on
    assert entry(doc, ACME)["reason"] == "token revoked" and entry(doc, GLOBEX)["status"] == "healthy"
    assert doc["summary"]["needs-reauthorization"] == 1 and doc["summary"]["healthy"] == 1
    assert "needs-reauthorization" in status("--format", "markdown").stdout.splitlines()[2]


def test_the_revoked_installations_deferred_reauthorization_shows_its_link(world, clock: Clock) -> None:
    """Revoked, then `apply --auth-mode defer`: still needs-reauthorization (the old token does not work), the
    reason says a re-authorization is pending, and the next step is the link, which every format shows."""
    sandbox, _, _ = applied(world)
    sandbox.provider.revoke(client_id=LEGACY_ID)
    assert status("--refresh").exit_code == 2
    deferred = run(DEFER, ENV)
    assert deferred.exit_code == 3, deferred.stderr
    doc, outputs = reported(expect_exit=2)
    acme = entry(doc, ACME)
    until = iso(clock.at + dt.timedelta(days=7))
    assert acme["status"] == "needs-reauthorization"
    assert acme["reason"] == f"token revoked; re-authorization pending since {iso(clock.at)}"
    assert acme["next_step"] == f"the tenant opens the authorization link (valid until {until}), or `reconciler authorize {ACME}`"
    link = acme["pending"]["link"]
    assert link.startswith(f"{sandbox.url}/oauth2/authorize?") and acme["pending"]["expires_at"] == until
    assert link in deferred.stdout  # the link apply printed
    assert f"{ACME}  {link}  (valid until {until})" in outputs["text"]
    assert "[sign-in link](" in outputs["markdown"]


def test_a_spa_sign_in_is_expiring_then_needs_reauthorization_after_24_hours(world, clock: Clock) -> None:
    """An Entra app registered as a single-page app: its refresh token lasts 24 hours from the sign-in however it
    is used, so it is expiring at once, and after 24 hours needs-reauthorization; the next step given works:
    `apply --replace` (deferred) asks the tenant to sign in again."""
    applied(world, entra=("app_type: spa",))
    signed_in = clock.at
    lapses = iso(signed_in + dt.timedelta(hours=24))
    replace = f"`reconciler apply --replace {GLOBEX}` (--auth-mode defer gives the tenant a link)"
    doc, _ = reported(expect_exit=2)
    globex = entry(doc, GLOBEX)
    assert globex["status"] == "expiring"
    assert globex["reason"] == f"refresh token lapses at {lapses} (24 hours after the sign-in)"
    assert globex["next_step"] == f"the tenant signs in again before {lapses}: {replace}"
    assert globex["refresh_token"]["counted_from"] == "sign-in" and globex["refresh_token"]["lifetime"] == "1d"
    assert entry(doc, ACME)["status"] == "healthy"  # the legacy partner is not a single-page app

    clock.advance(hours=23)
    assert entry(document()[1], GLOBEX)["status"] == "expiring"
    clock.advance(hours=2)
    doc, _ = reported(expect_exit=2)
    globex = entry(doc, GLOBEX)
    assert (globex["status"], globex["reason"], globex["next_step"]) == (
        "needs-reauthorization", f"refresh token lapsed at {lapses} (24 hours after the sign-in)", replace)
    deferred = run([*DEFER, "--replace", GLOBEX], ENV)
    assert deferred.exit_code == 3, deferred.stdout + deferred.stderr
    assert "reconciler authorize" in entry(document()[1], GLOBEX)["next_step"]


def test_an_entra_refresh_token_near_90_days_unused_is_expiring_until_refreshed(world, clock: Clock) -> None:
    """80 days unused: expiring (the refresh token lapses within 14 days; refresh before then), the last check
    stale; `status --refresh` rotates it and it is healthy again. 91 days unused: needs-reauthorization."""
    applied(world)
    issued = clock.at
    lapses = iso(issued + dt.timedelta(days=90))
    clock.advance(days=80)
    doc, outputs = reported(expect_exit=2)
    globex = entry(doc, GLOBEX)
    assert globex["status"] == "expiring"
    assert globex["reason"] == f"refresh token lapses at {lapses} (90 days unused)"
    assert globex["next_step"] == f"refresh before {lapses} (`reconciler refresh`, or `reconciler serve` keeps it alive)"
    assert globex["refresh_token"]["age"] == "80d" and globex["stale"] is True
    assert "80d ago (stale)" in outputs["text"]
    assert entry(doc, ACME)["status"] == "healthy"  # no refresh-token lifetime known for the legacy flavour
    assert entry(doc, ACME)["reason"].startswith("access token expired at ")

    refreshed = status("--refresh", "--format", "json", "--tenant", "globex")
    assert refreshed.exit_code == 0, refreshed.stdout + refreshed.stderr
    globex = entry(json.loads(refreshed.stdout), GLOBEX)
    assert globex["status"] == "healthy" and globex["refresh_token"]["issued_at"] == iso(clock.at)

    clock.advance(days=91)
    globex = entry(document()[1], GLOBEX)
    lapsed = iso(clock.at - dt.timedelta(days=1))
    assert (globex["status"], globex["reason"]) == ("needs-reauthorization", f"refresh token lapsed at {lapsed} (90 days unused)")


# -- pending -------------------------------------------------------------------------------------------------------


def test_a_deferred_first_authorization_is_pending_with_its_link_and_expiry(world, clock: Clock) -> None:
    """`apply --auth-mode defer`: pending (exit 2) since the apply, the link and when it stops working in every
    format; the Entra one waiting too."""
    sandbox, _, configure = world
    configure(both())
    deferred = run(DEFER, ENV)
    assert deferred.exit_code == 3, deferred.stderr
    doc, outputs = reported(expect_exit=2)
    assert doc["summary"]["pending"] == 2
    until = iso(clock.at + dt.timedelta(days=7))
    for address, path in ((ACME, "/oauth2/authorize?"), (GLOBEX, "/organizations/oauth2/v2.0/authorize?")):
        e = entry(doc, address)
        assert e["reason"] == f"authorization pending since {iso(clock.at)}"
        assert e["next_step"] == f"the tenant opens the authorization link (valid until {until}), or `reconciler authorize {address}`"
        assert e["pending"]["since"] == iso(clock.at) and e["pending"]["expires_at"] == until
        assert e["pending"]["link"].startswith(sandbox.url + path) and e["pending"]["link"] in deferred.stdout
        assert e["scopes"]["granted"] is None and e["access_token_expires_at"] is None
        assert e["pending"]["link"] in outputs["text"]
    assert outputs["markdown"].count("[sign-in link](") == 2
    clock.advance(days=8)  # the links expired: reissued, not opened
    doc, outputs = reported(expect_exit=2)
    e = entry(doc, ACME)
    assert e["status"] == "pending" and e["next_step"] == f"the link expired: `reconciler authorize --reissue {ACME}`"
    assert e["pending"]["link"] not in outputs["text"] and "[sign-in link](" not in outputs["markdown"]


def test_a_deferred_reauthorization_is_pending_while_the_old_tokens_work(world, clock: Clock) -> None:
    """A scope added and the re-authorization deferred: pending, and the reason says the current tokens still
    work."""
    _, _, configure = applied(world)
    clock.advance(hours=1)
    configure(installation("acme", "ado", "legacy", "acme-org", "Platform", ["vso.work_full", "vso.project", "vso.code"])
              + installation("globex", "ado", "entra", "globex", "Operations", ["vso.work_full"]))
    assert run(DEFER, ENV).exit_code == 3
    doc, _ = reported(expect_exit=2)
    acme = entry(doc, ACME)
    assert acme["status"] == "pending"
    assert acme["reason"] == f"re-authorization pending since {iso(clock.at)}; the current tokens still work"
    assert acme["checked_at"] == iso(clock.at) and acme["pending"]["link"]
    assert entry(doc, GLOBEX)["status"] == "healthy"


# -- expiring and error: the partner's client secret ---------------------------------------------------------------


def test_a_client_secret_expiring_within_14_days_is_expiring(world, clock: Clock) -> None:
    """`client_secret_expires` 10 days ahead: the legacy partner's installation is expiring, the step is rotating
    the secret (tenants need not sign in); the other partner's stays healthy."""
    day = (clock.at + dt.timedelta(days=10)).date().isoformat()
    applied(world, legacy=(f"client_secret_expires: {day}",))
    doc, outputs = reported(expect_exit=2)
    acme = entry(doc, ACME)
    assert acme["status"] == "expiring" and acme["reason"] == f"the client secret of partner legacy expires on {day}"
    assert acme["next_step"] == (f"rotate the client secret of partner legacy before {day} and update "
                                 "client_secret_expires (tenants need not sign in)")
    assert acme["client_secret_expires"] == day and acme["deadline"] == {"what": "client-secret", "at": f"{day}T00:00:00Z"}
    assert entry(doc, GLOBEX)["status"] == "healthy"
    assert doc["partners"]["legacy"]["expiring"] == 1
    assert "1 expiring" in outputs["markdown"].splitlines()[2]


def test_a_client_secret_outside_the_window_is_healthy_and_a_wider_window_warns(world, clock: Clock) -> None:
    """20 days ahead: healthy under the default 14 days (exit 0); `--window 30d` makes it expiring (exit 2)."""
    day = (clock.at + dt.timedelta(days=20)).date().isoformat()
    applied(world, legacy=(f"client_secret_expires: {day}",))
    doc, _ = reported(expect_exit=0)
    assert entry(doc, ACME)["deadline"] == {"what": "client-secret", "at": f"{day}T00:00:00Z"}
    doc, _ = reported("--window", "30d", expect_exit=2)
    assert doc["window"] == "30d" and entry(doc, ACME)["status"] == "expiring"


def test_a_client_secret_date_declared_or_moved_later_is_recorded_by_apply(world, clock: Clock) -> None:
    """Declared after the first apply: the plan updates the partner in place (no tenant signs in again) and status
    judges by the recorded date; once the secret is rotated and the date moved on, it is healthy again."""
    _, _, configure = applied(world)
    for days, word in ((3, "expiring"), (60, "healthy")):
        day = (clock.at + dt.timedelta(days=days)).date().isoformat()
        configure(both(), legacy=(f"client_secret_expires: {day}",))
        plan = run(["-C", ".", "plan"], ENV)
        assert "client_secret_expires changed" in plan.stdout and "1 to update, 0 to reauthorize" in plan.stdout, plan.stdout
        result = run(APPLY, ENV)
        assert result.exit_code == 0, result.stderr
        acme = entry(document()[1], ACME)
        assert (acme["status"], acme["client_secret_expires"]) == (word, day)


def test_a_client_secret_past_its_declared_expiry_is_an_error(world, clock: Clock) -> None:
    """The declared date has passed: error (the partner's fault, not the tenants'), not needs-reauthorization."""
    day = (clock.at - dt.timedelta(days=1)).date().isoformat()
    applied(world, legacy=(f"client_secret_expires: {day}",))
    doc, _ = reported(expect_exit=2)
    acme = entry(doc, ACME)
    assert acme["status"] == "error" and acme["reason"] == f"the client secret of partner legacy expired on {day}"
    assert acme["next_step"].startswith("rotate the client secret of partner legacy (tenants need not sign in again)")
    assert entry(doc, GLOBEX)["status"] == "healthy"


def test_a_partner_fault_found_by_status_refresh_is_an_error_on_its_installations(world, clock: Clock) -> None:
    """The legacy partner's secret rotated at the provider and the access token due: `status --refresh` finds the
    partner's credentials refused — error (the partner must act, tenants need not sign in), never
    needs-reauthorization — and `status` keeps saying so until a check succeeds."""
    sandbox, _, _ = applied(world)
    sandbox.provider.rotate_secret(LEGACY_ID, "a-new-secret-the-config-lacks")
    sandbox.provider.expire()
    clock.advance(minutes=5)
    refreshed = status("--refresh", "--format", "json")
    assert refreshed.exit_code == 2, refreshed.stdout + refreshed.stderr
    acme = entry(json.loads(refreshed.stdout), ACME)
    assert acme["status"] == "error", acme
    assert acme["reason"].startswith("last check failed: ") and "invalid_client" in acme["reason"]
    assert acme["next_step"].startswith("fix the partner's client credentials (tenants need not sign in again)")
    assert acme["checked_at"] == iso(clock.at)
    doc, _ = reported(expect_exit=2)
    assert entry(doc, ACME)["status"] == "error" and doc["summary"]["needs-reauthorization"] == 0
    assert entry(doc, GLOBEX)["status"] == "healthy"


def test_a_provider_that_does_not_answer_is_an_error_not_a_reauthorization(world, clock: Clock) -> None:
    """The token endpoint answers 503 to every attempt while a refresh is due: `status --refresh` reports error
    (retry later), the installation is not asked to sign in again."""
    sandbox, _, _ = applied(world)
    sandbox.provider.expire()
    sandbox.provider.add_fault("token", [503] * 8)
    refreshed = status("--refresh", "--format", "json", "--tenant", "acme")
    assert refreshed.exit_code == 2, refreshed.stdout + refreshed.stderr
    acme = entry(json.loads(refreshed.stdout), ACME)
    assert acme["status"] == "error" and acme["reason"].startswith("last check failed: could not refresh"), acme
    assert acme["next_step"] == "`reconciler status --refresh` once the provider answers again"


# -- exit codes and filters ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--window", "0d"], "--window: '0d' is not a positive duration"),
        (["--window", "soon"], "--window: "),
        (["--split-dir", "parts"], "--split-dir writes Markdown parts"),
        (["--status", "authorized"], "'authorized' is not one of 'healthy', 'expiring', 'needs-reauthorization'"),
        (["--format", "xml"], "'xml' is not one of"),
        (["--bogus"], "No such option '--bogus'"),
    ],
)
def test_bad_options_exit_1(world, args: list[str], message: str) -> None:
    """A bad option is an error, never mistaken for "needs attention": exit 1, the reason on stderr, no report,
    no traceback, nothing written."""
    applied(world)
    result = status(*args)
    assert result.exit_code == 1 and message in result.stderr, (result.exit_code, result.stderr)
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert not Path("parts").exists()


def test_a_broken_or_missing_configuration_exits_1(world) -> None:
    """A root file that does not parse, or none at all: exit 1 with the file named, in every format."""
    _, directory, _ = applied(world)
    (directory / "reconciler.yaml").write_text("version: 1\npartners: [\n")
    for fmt in FORMATS:
        result = status("--format", fmt)
        assert result.exit_code == 1 and "reconciler.yaml" in result.stderr and result.stdout == "", result.stderr
    (directory / "reconciler.yaml").unlink()
    result = status()
    assert result.exit_code == 1 and "no reconciler.yaml here" in result.stderr, result.stderr


def test_no_state_yet_is_healthy_and_says_so(world) -> None:
    """Nothing applied: nothing shown, exit 0, and the text says there is no state yet."""
    _, _, configure = world
    configure(both())
    doc, outputs = reported(expect_exit=0)
    assert doc["state_exists"] is False and doc["installations"] == [] and doc["total"] == 0
    assert "There is no state yet" in outputs["text"]


def test_filters_narrow_what_is_shown_and_the_exit_code(world) -> None:
    """acme revoked, globex healthy, initech pending: --tenant and --status choose the rows, and the exit code
    speaks for those only (0 when all shown are healthy, or none is shown)."""
    sandbox, _, configure = applied(world)
    sandbox.provider.revoke(client_id=LEGACY_ID)
    assert status("--refresh").exit_code == 2
    configure(both() + installation("initech", "ado", "legacy", "acme-org", "Web", ["vso.work_full"]))
    assert run(DEFER, ENV).exit_code == 3

    def shown(*args: str, code: int) -> dict[str, str]:
        doc, outputs = reported(*args, expect_exit=code)
        assert doc["total"] == 3
        if doc["shown"] != 3:
            assert f"{doc['shown']} installation" in outputs["text"] and "(of 3 in state)" in outputs["text"]
        return {e["address"]: e["status"] for e in doc["installations"]}

    assert shown(code=2) == {ACME: "needs-reauthorization", GLOBEX: "healthy", INITECH: "pending"}
    assert shown("--tenant", "globex", code=0) == {GLOBEX: "healthy"}
    assert shown("--tenant", "acme", code=2) == {ACME: "needs-reauthorization"}
    assert shown("--tenant", "g*", "--tenant", "i*", code=2) == {GLOBEX: "healthy", INITECH: "pending"}
    assert shown("--status", "healthy", code=0) == {GLOBEX: "healthy"}
    assert shown("--status", "pending", code=2) == {INITECH: "pending"}
    assert shown("--status", "needs-reauthorization", "--status", "pending", code=2) == {
        ACME: "needs-reauthorization", INITECH: "pending"}
    assert shown("--status", "error", code=0) == {}
    assert shown("--tenant", "acme", "--status", "healthy", code=0) == {}
    typo = run(["-C", ".", "status", "--tenant", "nobody"], ENV)  # a typo must not read as "all healthy"
    assert typo.exit_code == 1 and "--tenant 'nobody' matches no tenant in state" in typo.stderr and not typo.stdout


def test_markdown_split_dir_writes_parts_that_each_fit_a_comment(world) -> None:
    """`--split-dir`: the comment in parts of at most 65,536 characters, the first opening with the summary."""
    _, directory, _ = applied(world)
    result = status("--format", "markdown", "--split-dir", "parts")
    assert result.exit_code == 0, result.stderr
    parts = sorted((directory / "parts").glob("status-*.md"))
    assert [p.name for p in parts] == ["status-1.md"]
    text = parts[0].read_text()
    assert len(text) <= 65536 and text == result.stdout
    assert text.splitlines()[2] == "**2 installations: 2 healthy**"


# -- no network without --refresh ----------------------------------------------------------------------------------


@pytest.fixture
def requests(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every request the sandbox receives from here on (method and path)."""
    seen: list[str] = []
    handle = sandbox_app._Sandbox.handle

    async def counted(self, http):  # type: ignore[no-untyped-def]
        seen.append(f"{http.method} {http.url.path}")
        return await handle(self, http)

    monkeypatch.setattr(sandbox_app._Sandbox, "handle", counted)
    return seen


def test_status_without_refresh_sends_no_request(world, requests: list[str]) -> None:
    """`status` in every format, with filters and split parts, and `state list` / `state show`: the sandbox
    receives nothing; `status --refresh` does reach it (so the count would see a request)."""
    sandbox, _, _ = applied(world)
    sandbox.provider.revoke(client_id=LEGACY_ID)  # in-process, not a request
    requests.clear()
    for fmt in FORMATS:
        assert status("--format", fmt).exit_code == 0
    assert status("--format", "markdown", "--split-dir", "parts", "--tenant", "globex", "--window", "100d").exit_code == 2
    assert run(["-C", ".", "state", "list", "--json"], ENV).exit_code == 0
    assert run(["-C", ".", "state", "show", ACME], ENV).exit_code == 0
    assert requests == []
    assert status("--refresh").exit_code == 2
    assert any(r.startswith("GET /acme-org/_apis/") for r in requests), requests


# -- the same words everywhere -------------------------------------------------------------------------------------


def situations(world, clock: Clock) -> SandboxServer:  # type: ignore[no-untyped-def]
    """acme revoked (needs-reauthorization), globex on a spa registration (expiring), initech and umbrella (Entra,
    with a sealed PKCE verifier) deferred (pending), hooli on the legacy partner whose secret expires in 5 days
    (expiring)."""
    sandbox, _, configure = world
    day = (clock.at + dt.timedelta(days=5)).date().isoformat()
    installations = both() + installation("hooli", "ado", "legacy", "globex", "Operations", ["vso.work_full"])
    configure(installations, entra=("app_type: spa",))
    assert run(APPLY, ENV).exit_code == 0
    sandbox.provider.revoke(client_id=LEGACY_ID)
    assert status("--refresh", "--tenant", "acme").exit_code == 2
    configure(installations + installation("initech", "ado", "legacy", "acme-org", "Web", ["vso.work_full"])
              + installation("umbrella", "ado", "entra", "acme-org", "Web", ["vso.work_full"]),
              entra=("app_type: spa",), legacy=(f"client_secret_expires: {day}",))
    assert run(DEFER, ENV).exit_code == 3
    return sandbox


def test_state_list_and_show_say_the_same_words_as_status(world, clock: Clock) -> None:
    """`state list --json`, text `state list` and `state show` (text and JSON) give each installation the word and
    reason `status` gives — never "authorized"."""
    situations(world, clock)
    doc, _ = reported(expect_exit=2)
    expected = {e["address"]: (e["status"], e["reason"]) for e in doc["installations"]}
    assert {w for w, _ in expected.values()} == {"needs-reauthorization", "expiring", "pending"}
    listed = run(["-C", ".", "state", "list", "--json"], ENV)
    assert listed.exit_code == 0, listed.stderr
    entries = {e["address"]: (e["status"], e["reason"]) for e in json.loads(listed.stdout) if e["kind"] == "installation"}
    assert entries == expected
    text = run(["-C", ".", "state", "list"], ENV).stdout
    words = {line.split("\t")[0]: line.split("\t")[1] for line in text.splitlines() if line.startswith("installation.")}
    assert words == {a: w for a, (w, _) in expected.items()}
    assert "authorized" not in text.replace("reauthorization", "").replace("authorization", "")
    for address, (word, reason) in expected.items():
        shown = json.loads(run(["-C", ".", "state", "show", address, "--format", "json"], ENV).stdout)
        assert (shown["status"], shown["reason"]) == (word, reason)
        lines = run(["-C", ".", "state", "show", address], ENV).stdout.splitlines()
        assert any(line.split() == ["status", word] for line in lines), lines


def sealed_secrets(directory: Path) -> tuple[list[str], list[str]]:
    """What the vault holds that must never be shown: the stored tokens, and the pending PKCE verifiers (a pending
    link's `state` is in the link by design)."""
    from reconciler.app.keys import no_note, state_key
    from reconciler.app.workspace import Workspace, open_backend, read_root
    from reconciler.state.model import InstallationRecord
    from reconciler.tokens.custodian import TokenCustodian
    from reconciler.tokens.vault import Vault

    ws = Workspace(directory, ENV)
    root = read_root(ws)
    backend = open_backend(ws, root)
    doc = backend.read()
    key = state_key(ws, root, backend, on_key_created=no_note, create=False)
    assert doc is not None and key is not None
    custodian = TokenCustodian(Vault(backend.credential_store(), key, lineage=doc.lineage, environment="default"))
    tokens: list[str] = []
    verifiers: list[str] = []
    for address, record in doc.resources.items():
        if not isinstance(record, InstallationRecord):
            continue
        held, pending = custodian.held(address, record.client_id), custodian.pending(address, record.client_id)
        if held is not None:
            tokens.append(held.tokens.access_token.get_secret_value())
            if held.tokens.refresh_token is not None:
                tokens.append(held.tokens.refresh_token.get_secret_value())
        if pending is not None and pending.code_verifier is not None:
            verifiers.append(pending.code_verifier.get_secret_value())
    return tokens, verifiers


def test_no_secret_appears_in_any_output(world, clock: Clock) -> None:
    """Every token, code and client secret the sandbox saw is absent from every status format (and split parts),
    `state list` and `state show`, in plain, base64 and URL-encoded forms."""
    sandbox = situations(world, clock)
    assert status("--refresh").exit_code == 2  # rotates tokens: more to search for
    outputs = []
    for fmt in FORMATS:
        for args in ((), ("--window", "400d"), ("--refresh",)):
            result = status("--format", fmt, *args)
            outputs.append(result.stdout + result.stderr)
    assert status("--format", "markdown", "--split-dir", "parts").exit_code == 2
    outputs.append(all_text_under(Path("parts")))
    for args in (["state", "list"], ["state", "list", "--json"]):
        outputs.append(run(["-C", ".", *args], ENV).stdout)
    for address in (ACME, GLOBEX, INITECH, "installation.hooli.ado", "installation.umbrella.ado", "partner.legacy",
                    "partner.entra"):
        for fmt in ("text", "json"):
            outputs.append(run(["-C", ".", "state", "show", address, "--format", fmt], ENV).stdout)
    haystack = "\n".join(outputs)
    assert "needs-reauthorization" in haystack and "sign-in link" in haystack
    tokens, verifiers = sealed_secrets(Path("."))
    assert len(tokens) >= 4 and verifiers  # umbrella's Entra sign-in waits with its verifier sealed
    values = [*sandbox.provider.issued, *tokens, *verifiers, LEGACY_SECRET, ENTRA_SECRET]
    assert len(sandbox.provider.issued) >= 6
    for value in values:
        for form in {value, base64.b64encode(value.encode()).decode(), urllib.parse.quote(value, safe="")}:
            assert form not in haystack

