"""The pull-request Markdown: warning block, pending authorization links, safe fences, and numbered parts that
each fit a GitHub comment (65,536 characters)."""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from reconciler.catalog.files import load_catalog
from reconciler.config.desired import DesiredInstallation, DesiredPartner, DesiredState
from reconciler.declared import DeclaredInstallation, DeclaredPartner, target_digest
from reconciler.planner import make_plan
from reconciler.render.document import ChangeDoc, PlanDocument, StateDoc, SummaryDoc, to_document
from reconciler.render.markdown import COMMENT_LIMIT, render_markdown, render_markdown_parts
from reconciler.state.model import PendingRecord, StateDocument
from reconciler.state.records import installation_record, partner_record
from tests.conftest import run

CASES = Path(__file__).parent / "cases"
NOW = dt.datetime(2026, 11, 2, 9, 30, tzinfo=dt.UTC)
EARLIER = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)
PARTNER = DeclaredPartner(
    name="microsoft-azure-devops",
    connector="microsoft-azure-devops",
    auth="azure-devops-oauth",
    tenant_id=None,
    client_id="11111111-aaaa-4bbb-8ccc-000000000001",
    client_secret_ref="${env:ADO_CLIENT_SECRET}",
    redirect_uri="https://app-h.cyclr.com/connector/callback",
    authorize_url="https://app.vssps.visualstudio.com/oauth2/authorize",
    token_url="https://app.vssps.visualstudio.com/oauth2/token",
    api_url="https://dev.azure.com",
    scopes=None,
)
ADDRESS_LINE = re.compile(r"^(?:[+~ -]|-/\+) (\S+)$")


# -- building plans ---------------------------------------------------------------------------------------------


def _installation(
    tenant: str, name: str, *, project: str = "Platform", scopes: tuple[str, ...] = ("vso.work_full", "vso.code")
) -> DeclaredInstallation:
    return DeclaredInstallation(
        tenant=tenant,
        name=name,
        connector=PARTNER.connector,
        partner=PARTNER.name,
        auth=PARTNER.auth,
        parameters={"organization": f"{tenant}-org", "project": project},
        scopes=scopes,
        client_id=PARTNER.client_id or "",
        client_secret_ref=PARTNER.client_secret_ref or "",
        credentials_source="partner",
        redirect_uri=PARTNER.redirect_uri,
        token_url=PARTNER.token_url,
    )


def _large_plan() -> PlanDocument:
    """3,000 installations across 300 tenants (one tenant with 309, far more than a comment holds), through the
    planner: creates, updates, re-authorizations, 30 deletes and 5 pending authorizations."""
    desired = [
        _installation(f"tenant-{t:03d}", f"ado-{i:03d}") for t in range(300) for i in range(309 if t == 0 else 9)
    ]
    assert len(desired) == 3000
    records: dict[str, Any] = {PARTNER.address: partner_record(PARTNER)}
    for n, want in enumerate(desired):
        if n % 10 == 0:  # recorded with another project: update
            old = _installation(want.tenant, want.name, project="Legacy")
            records[want.address] = installation_record(old, granted=old.scopes, authorized_at=EARLIER)
        elif n % 15 == 0:  # recorded with fewer scopes: reauthorize
            old = _installation(want.tenant, want.name, scopes=("vso.work_full",))
            records[want.address] = installation_record(old, granted=old.scopes, authorized_at=EARLIER)
    for want in desired[400:405]:  # pending authorizations, still valid
        marker = PendingRecord(
            since=EARLIER,
            expires_at=EARLIER + dt.timedelta(days=7),
            target_digest=target_digest(want),
            client_id=want.client_id,
            requested_scopes=want.scopes,
        )
        records[want.address] = installation_record(want, granted=(), authorized_at=EARLIER).model_copy(
            update={"status": "pending_authorization", "authorized_at": None, "pending": marker}
        )
    for t in range(10, 40):  # removed from the configuration: delete
        gone = _installation(f"tenant-{t:03d}", "old-ado")
        records[gone.address] = installation_record(gone, granted=gone.scopes, authorized_at=EARLIER)
    state = StateDocument.new("default").with_resources(records)
    desired_state = DesiredState(
        partners={PARTNER.address: DesiredPartner(PARTNER)},
        installations={i.address: DesiredInstallation(i) for i in desired},
    )
    return to_document(make_plan(desired_state, state, now=NOW, catalog=load_catalog(), state_location="state"))


@pytest.fixture(scope="module")
def large() -> PlanDocument:
    return _large_plan()


@pytest.fixture(scope="module")
def large_parts(large: PlanDocument) -> list[str]:
    return render_markdown_parts(large)


def _change(address: str, action: str, *, reasons: tuple[str, ...] = ("because",), pending: bool = False,
            before: dict[str, Any] | None = None, after: dict[str, Any] | None = None) -> ChangeDoc:
    parts = address.split(".")
    return ChangeDoc(
        address=address,
        kind=parts[0],
        tenant=parts[1] if parts[0] == "installation" else None,
        action=action,
        reasons=list(reasons),
        warnings=[],
        pending=pending,
        before=before,
        after=after,
    )


def _doc(*changes: ChangeDoc) -> PlanDocument:
    counts = Counter(c.action for c in changes)
    return PlanDocument(
        format_version="1.1",
        reconciler_version="0.0.0",
        environment="default",
        state=StateDoc(exists=True, location="state/default.json", lineage="0f5a2c3e", serial=3),
        has_changes=any(c.action != "noop" for c in changes),
        summary=SummaryDoc(
            create=counts["create"],
            update=counts["update"],
            reauthorize=counts["reauthorize"],
            delete=counts["delete"],
            noop=counts["noop"],
            pending=sum(c.pending for c in changes),
        ),
        changes=list(changes),
        warnings=[],
    )


def _pending(address: str) -> ChangeDoc:
    reason = "authorization pending since 2026-11-01T12:00:00+00:00 (link valid until 2026-11-08T12:00:00+00:00)"
    return _change(address, "noop", reasons=(reason,), pending=True, before={"status": "pending_authorization"})


# -- checks -----------------------------------------------------------------------------------------------------


def _assert_balanced(markdown: str) -> None:
    """Every `<details>` closes, every fence closes inside its `<details>`, and no line inside a fence closes it."""
    fence: str | None = None
    details = 0
    for line in markdown.splitlines():
        if fence is not None:
            if line == fence:
                fence = None
            else:
                assert not line.lstrip(" ").startswith(fence), f"line could close the fence: {line!r}"
            continue
        opening = re.fullmatch(r"(`{3,})diff", line)
        if opening:
            assert details == 1, "a fence outside <details>"
            fence = opening[1]
        elif line.startswith("<details>"):
            assert details == 0, "nested <details>"
            details += 1
        elif line == "</details>":
            assert details == 1, "</details> without <details>"
            details -= 1
        else:
            assert not line.startswith("```"), f"stray fence: {line!r}"
    assert fence is None and details == 0


def _addresses_in_diffs(markdown: str) -> Counter[str]:
    """Change addresses as diff lines show them (`+ installation.a.b`), counted."""
    return Counter(m[1] for line in markdown.splitlines() if (m := ADDRESS_LINE.match(line)))


# -- splitting --------------------------------------------------------------------------------------------------


def test_large_plan_splits_into_parts_within_the_limit(large_parts: list[str]) -> None:
    """3,000 installations need several parts, and no part exceeds 65,536 characters."""
    assert len(large_parts) > 10
    assert all(len(part) <= COMMENT_LIMIT for part in large_parts), [len(p) for p in large_parts]


def test_parts_are_numbered_and_say_where_they_continue(large_parts: list[str]) -> None:
    """Part k of N starts with its numbered header; every part but the last names the next one."""
    count = len(large_parts)
    for number, part in enumerate(large_parts, start=1):
        assert part.startswith(f"### Reconciler plan · environment `default` · part {number} of {count}\n")
        continued = f"_Continued in part {number + 1} of {count}._\n"
        assert part.endswith(continued) == (number < count)


def test_summary_warning_and_pending_table_are_in_part_one_only(large_parts: list[str]) -> None:
    """The summary counts, the warning block and the pending links table open part 1 and appear nowhere else."""
    first, rest = large_parts[0], large_parts[1:]
    summary = first.splitlines()[2]
    assert summary.startswith("**Plan: 2596 to create, 299 to update, 100 to reauthorize, 30 to delete.**"), summary
    assert first.index("> [!WARNING]") < first.index("**Pending authorizations**") < first.index("<details>")
    assert "and 10 more" in first and "and 80 more" in first
    for part in rest:
        assert "**Plan:" not in part and "[!WARNING]" not in part and "Pending authorizations" not in part


def test_every_change_appears_exactly_once_across_parts(large: PlanDocument, large_parts: list[str]) -> None:
    """Each change and pending authorization is shown once over all parts; nothing unchanged is shown."""
    shown = sum((_addresses_in_diffs(part) for part in large_parts), Counter())
    expected = {c.address for c in large.changes if c.action != "noop" or c.pending}
    assert len(expected) == 3030  # all 3,000 declared (created, changed or pending) and the 30 removed
    assert set(shown) == expected
    assert set(shown.values()) == {1}


def test_fences_and_details_are_balanced_in_every_part(large_parts: list[str]) -> None:
    """Each part closes every `<details>` and code fence it opens, including where a tenant is split."""
    for part in large_parts:
        _assert_balanced(part)


def test_a_tenant_larger_than_a_part_is_split_between_changes(large_parts: list[str]) -> None:
    """The 309-installation tenant spans parts; later parts reopen it marked "(continued)", breaking between
    changes."""
    holding = [n for n, part in enumerate(large_parts) if "tenant <code>tenant-000</code>" in part]
    assert len(holding) >= 2
    title = "<details><summary><b>tenant <code>tenant-000</code></b> — 268 to create, 31 to update, 10 to reauthorize"
    assert large_parts[holding[0]].count(f"{title}</summary>") == 1
    for n in holding[1:]:
        part = large_parts[n]
        assert part.splitlines()[2] == f"{title} (continued)</summary>"
        after_fence = part.split("```diff\n", 1)[1]
        assert ADDRESS_LINE.match(after_fence.splitlines()[0]), "a continued section starts with a change"


def test_a_tenant_that_fits_a_part_is_never_split(large_parts: list[str]) -> None:
    """Each 9-installation tenant's section appears in exactly one part, whole, never "(continued)"."""
    for tenant in (f"tenant-{t:03d}" for t in range(1, 300)):
        holding = [part for part in large_parts if f"tenant <code>{tenant}</code>" in part]
        assert len(holding) == 1, tenant
        assert "(continued)" not in holding[0].split(f"tenant <code>{tenant}</code>", 1)[1].split("\n", 1)[0]


def test_whole_rendering_is_one_string_without_part_headers(large: PlanDocument, large_parts: list[str]) -> None:
    """render_markdown returns the whole comment, however long: same changes, no part numbering."""
    whole = render_markdown(large)
    assert len(whole) > COMMENT_LIMIT
    assert whole.startswith("### Reconciler plan · environment `default`\n") and " · part " not in whole
    assert _addresses_in_diffs(whole) == sum((_addresses_in_diffs(p) for p in large_parts), Counter())
    _assert_balanced(whole)


def test_a_plan_that_fits_is_one_part_equal_to_the_whole() -> None:
    """When the comment fits, the parts are exactly [render_markdown(doc)], unnumbered."""
    doc = PlanDocument.model_validate_json((CASES / "mixed" / "plan.json").read_text())
    assert render_markdown_parts(doc) == [render_markdown(doc)]
    assert "part 1 of" not in render_markdown(doc)


def test_a_single_change_larger_than_a_part_is_split_between_lines() -> None:
    """A change too large for any part is cut between lines, each part still balanced and within the limit."""
    after = {f"parameters.p{i:03d}": "v" * 40 for i in range(60)}
    doc = _doc(_change("installation.acme.huge", "create", after=after))
    parts = render_markdown_parts(doc, limit=1500)
    assert len(parts) > 2 and all(len(p) <= 1500 for p in parts)
    for part in parts:
        _assert_balanced(part)
    lines = [line for part in parts for line in part.splitlines() if line.startswith("+     parameters.p")]
    assert len(lines) == 60 and all(line.endswith('"' + "v" * 40 + '"') for line in lines)


def test_split_mixed_case_golden() -> None:
    """The mixed golden case split at 1,000 characters, byte for byte: whole tenants per part after the summary."""
    doc = PlanDocument.model_validate_json((CASES / "mixed" / "plan.json").read_text())
    parts = render_markdown_parts(doc, limit=1000)
    assert parts == SPLIT_MIXED_GOLDEN


SPLIT_MIXED_GOLDEN = [
    """\
### Reconciler plan · environment `default` · part 1 of 5

**Plan: 1 to create, 1 to update, 1 to reauthorize, 1 to delete.** (1 unchanged)

_Environment default: state state/default.json (serial 7)._

> [!WARNING]
> **This plan deletes 1 resource:** `installation.hooli.ado`.
> Their tokens are forgotten; re-creating them needs a new sign-in.
>
> **1 installation must be re-authorized:** `installation.acme.ado-main`.
> Each needs a user to sign in again; a deferred one keeps its current authorization until then.

**Warnings**

- `installation.acme.ado-main`: the old grant's tokens are forgotten, not revoked: revoke in the user's Azure DevOps profile, Authorized OAuth apps (https://app.vsaex.visualstudio.com/me)
- `installation.hooli.ado`: its tokens are forgotten, not revoked: revoke in the user's Azure DevOps profile, Authorized OAuth apps (https://app.vsaex.visualstudio.com/me)

_Continued in part 2 of 5._
""",
    """\
### Reconciler plan · environment `default` · part 2 of 5

**Warnings**

- partner.microsoft-azure-devops: 4 installations use azure-devops-oauth. Microsoft removes Azure DevOps OAuth in 2026; move its installations to an Entra ID partner
- partner.microsoft-azure-devops: azure-devops-oauth client secrets expire 60 days after they are created, and no client_secret_expires is declared: declare its date so that plan and status warn before the partner's installations stop refreshing

<details><summary><b>tenant <code>acme</code></b> — 1 to reauthorize</summary>

```diff
-/+ installation.acme.ado-main
#   scopes added: vso.wiki
!     scopes = ["vso.code", "vso.work_full"] -> ["vso.code", "vso.wiki", "vso.work_full"]
```

</details>

_Continued in part 3 of 5._
""",
    """\
### Reconciler plan · environment `default` · part 3 of 5

<details><summary><b>tenant <code>globex</code></b> — 1 to update</summary>

```diff
~ installation.globex.ado-main
#   project changed: "Operations" -> "Ops2"
!     parameters.project = "Operations" -> "Ops2"
```

</details>

_Continued in part 4 of 5._
""",
    """\
### Reconciler plan · environment `default` · part 4 of 5

<details><summary><b>tenant <code>hooli</code></b> — 1 to delete</summary>

```diff
- installation.hooli.ado
#   removed from configuration
-     connector = "microsoft-azure-devops"
-     partner = "microsoft-azure-devops"
-     auth = "azure-devops-oauth"
-     parameters.organization = "hooli"
-     parameters.project = "Nucleus"
-     scopes = ["vso.work_full"]
-     client_id = "11111111-aaaa-4bbb-8ccc-000000000001"
-     credentials_source = "partner"
-     redirect_uri = "https://app-h.cyclr.com/connector/callback"
-     token_url = "https://app.vssps.visualstudio.com/oauth2/token"
-     granted_scopes = ["vso.work_full"]
-     status = "authorized"
-     authorized_at = "2026-11-01T12:00:00+00:00"
-     expires_at = "2026-11-01T13:00:00+00:00"
```

</details>

_Continued in part 5 of 5._
""",
    """\
### Reconciler plan · environment `default` · part 5 of 5

<details><summary><b>tenant <code>initech</code></b> — 1 to create</summary>

```diff
+ installation.initech.ado
#   new installation: needs authorization
+     connector = "microsoft-azure-devops"
+     partner = "microsoft-azure-devops"
+     auth = "azure-devops-oauth"
+     parameters.organization = "initech"
+     parameters.project = "TPS"
+     scopes = ["vso.work_full"]
+     client_id = "11111111-aaaa-4bbb-8ccc-000000000001"
+     credentials_source = "partner"
+     redirect_uri = "https://app-h.cyclr.com/connector/callback"
+     token_url = "https://app.vssps.visualstudio.com/oauth2/token"
```

</details>
""",
]


# -- warning block ----------------------------------------------------------------------------------------------


def _alert(markdown: str) -> str:
    lines = markdown.splitlines()
    start = lines.index("> [!WARNING]")
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith(">"))
    return "\n".join(lines[start:end])


def test_warning_block_for_deletes() -> None:
    """A plan that deletes warns, naming what goes."""
    doc = _doc(_change("installation.acme.ado", "delete", before={"connector": "x"}), _change("partner.old", "delete"))
    alert = _alert(render_markdown(doc))
    assert "**This plan deletes 2 resources:** `installation.acme.ado`, `partner.old`." in alert
    assert "re-authorized" not in alert


def test_warning_block_for_reauthorizations() -> None:
    """A plan with re-authorizations but no deletes still shows a WARNING block naming them."""
    doc = _doc(_change("installation.acme.ado", "reauthorize"), _change("installation.globex.ado", "update"))
    alert = _alert(render_markdown(doc))
    assert "**1 installation must be re-authorized:** `installation.acme.ado`." in alert
    assert "deletes" not in alert and "installation.globex.ado" not in alert


def test_warning_block_names_at_most_twenty() -> None:
    """Past 20 addresses the block says "and N more" instead of naming them."""
    doc = _doc(*(_change(f"installation.t{i:02d}.ado", "reauthorize") for i in range(23)))
    alert = _alert(render_markdown(doc))
    assert "`installation.t19.ado` and 3 more." in alert
    assert "installation.t20.ado" not in alert and "**23 installations must be re-authorized:**" in alert


def test_no_warning_block_for_creates_and_updates() -> None:
    """Creates and updates alone raise no warning block."""
    doc = _doc(_change("installation.acme.ado", "create"), _change("installation.globex.ado", "update"))
    assert "[!WARNING]" not in render_markdown(doc)


# -- pending authorization links --------------------------------------------------------------------------------


def test_pending_authorizations_table_from_the_plan() -> None:
    """Pending authorizations in the plan get a table row with their expiry; the link, not in the plan, is
    explained."""
    markdown = render_markdown(_doc(_pending("installation.globex.ado"), _change("installation.acme.ado", "noop")))
    assert "| Tenant | Address | Link | Valid until |" in markdown
    row = next(line for line in markdown.splitlines() if line.startswith("| globex | `installation.globex.ado`"))
    assert row.endswith("| 2026-11-08T12:00:00+00:00 |") and "pending since 2026-11-01T12:00:00+00:00" in row
    assert "`reconciler authorize --reissue ADDRESS` issues a new link" in markdown
    assert "installation.acme.ado`" not in markdown.split("**Pending authorizations**")[1].split("\n\n", 2)[1]


def test_links_passed_in_join_the_table() -> None:
    """Links passed by apply in defer mode are rendered as sign-in links, also for addresses not pending in the
    plan, and replace the placeholder of a pending one."""
    doc = _doc(_change("installation.acme.ado", "create"), _pending("installation.globex.ado"))
    links = {
        "installation.acme.ado": "https://login.example/authorize?client_id=a&state=s1",
        "installation.globex.ado": "https://login.example/authorize?client_id=a&state=s2",
    }
    markdown = render_markdown(doc, links=links)
    rows = [line for line in markdown.splitlines() if "| `installation." in line]
    assert rows == [
        (
            "| globex | `installation.globex.ado` | [sign in](https://login.example/authorize?client_id=a&state=s2)"
            " | 2026-11-08T12:00:00+00:00 |"
        ),
        "| acme | `installation.acme.ado` | [sign in](https://login.example/authorize?client_id=a&state=s1) | — |",
    ]
    assert "Plans do not store authorization links" not in markdown
    assert render_markdown_parts(doc, links=links) == [markdown]


def test_links_cannot_break_the_table_or_the_link() -> None:
    """Characters Markdown would read as syntax are percent-encoded; a non-http(s) URL is never a clickable link."""
    doc = _doc(_change("installation.acme.ado", "create"), _change("installation.globex.ado", "create"))
    links = {
        "installation.acme.ado": "https://login.example/a?x=(1)|y z]`",
        "installation.globex.ado": "javascript:alert(1)",
    }
    markdown = render_markdown(doc, links=links)
    assert "[sign in](https://login.example/a?x=%281%29%7Cy%20z%5D%60)" in markdown
    assert "[sign in](javascript" not in markdown and "| `javascript:alert(1)` |" in markdown


def test_pending_links_are_grouped_by_tenant() -> None:
    """Rows of one tenant stay together, tenants in the order they first appear; the plan's own link is shown."""
    pending = [_pending(a) for a in ("installation.eu-a.ado", "installation.us-b.ado", "installation.eu-a.web")]
    pending[1] = pending[1].model_copy(update={"link": "https://connect.example/authorize/x~1?sig=s"})
    markdown = render_markdown(_doc(*pending))
    rows = [line.split(" | ")[1] for line in markdown.splitlines() if "| `installation." in line]
    assert rows == ["`installation.eu-a.ado`", "`installation.eu-a.web`", "`installation.us-b.ado`"]
    assert "[sign in](https://connect.example/authorize/x~1?sig=s)" in markdown


def test_no_pending_table_without_pending_authorizations() -> None:
    """A plan with nothing pending and no links has no table."""
    assert "Pending authorizations" not in render_markdown(_doc(_change("installation.acme.ado", "create")))


# -- values from user configuration -----------------------------------------------------------------------------


def test_a_value_with_backticks_gets_a_longer_fence() -> None:
    """A value containing ``` cannot close the diff fence: the fence grows longer than any backtick run."""
    after = {"parameters": {"project": "a```b", "organization": "c````d"}}
    markdown = render_markdown(_doc(_change("installation.acme.ado", "create", after=after)))
    assert "`````diff\n" in markdown and "\n`````\n" in markdown
    assert '+     parameters.project = "a```b"' in markdown
    _assert_balanced(markdown)


def test_line_breaks_in_reasons_stay_on_one_line() -> None:
    """A reason holding a line break and a fence is shown escaped on its own line, so it closes nothing."""
    reason = "odd\n```\n</details>"
    markdown = render_markdown(_doc(_change("installation.acme.ado", "update", reasons=(reason,))))
    assert "#   odd\\u000a```\\u000a</details>" in markdown
    _assert_balanced(markdown)
    assert "`````" not in markdown and "````diff" in markdown


# -- the CLI ----------------------------------------------------------------------------------------------------


def _many_tenants_config(tenants: int, per_tenant: int) -> str:
    lines = [
        "version: 1",
        "platform: {service_domain: app-h.cyclr.com}",
        "partners:",
        "  microsoft-azure-devops:",
        "    auth: azure-devops-oauth",
        "    client_id: ${env:ADO_CLIENT_ID}",
        "    client_secret: ${env:ADO_CLIENT_SECRET}",
        "tenants:",
    ]
    for t in range(tenants):
        lines += [f"  tenant-{t:03d}:", "    installations:"]
        for i in range(per_tenant):
            lines += [
                f"      ado-{i}:",
                "        connector: microsoft-azure-devops",
                f"        parameters: {{organization: org-{t:03d}, project: Project-{i}}}",
                "        scopes: [vso.work_full, vso.code]",
            ]
    return "\n".join(lines) + "\n"


CLI_ENV = {"ADO_CLIENT_ID": "11111111-aaaa-4bbb-8ccc-000000000001", "ADO_CLIENT_SECRET": "cli-secret-value-123"}


def test_split_dir_writes_numbered_parts(write_config, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """plan --format markdown --split-dir DIR writes DIR/plan-N.md within the limit, lists them on stderr,
    replaces older parts, and still prints the whole comment on stdout."""
    files = {"reconciler.yaml": _many_tenants_config(120, 5), "out/plan-7.md": "stale", "out/keep.txt": "mine"}
    directory = write_config(files)
    monkeypatch.chdir(directory)
    result = run(["plan", "--format", "markdown", "--split-dir", "out"], CLI_ENV)
    assert result.exit_code == 0, result.stderr
    paths = result.stderr.split()
    count = len(paths)
    assert count > 2 and paths == [str(Path("out") / f"plan-{n}.md") for n in range(1, count + 1)]
    written = sorted(p.name for p in (directory / "out").iterdir())
    assert written == sorted(["keep.txt", *(f"plan-{n}.md" for n in range(1, count + 1))])
    parts = [(directory / p).read_text(encoding="utf-8") for p in paths]
    assert all(len(part) <= COMMENT_LIMIT for part in parts)
    assert parts[0].startswith(f"### Reconciler plan · environment `default` · part 1 of {count}\n")
    assert "**Plan: 601 to create" in parts[0] and "cli-secret-value-123" not in "".join(parts)
    assert result.stdout.startswith("### Reconciler plan · environment `default`\n")
    assert len(result.stdout) > COMMENT_LIMIT
    assert sum((_addresses_in_diffs(p) for p in parts), Counter()) == _addresses_in_diffs(result.stdout)


def test_split_dir_writes_one_part_for_a_small_plan(write_config, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """A plan that fits is written as a single plan-1.md equal to stdout."""
    directory = write_config({"reconciler.yaml": _many_tenants_config(2, 1)})
    monkeypatch.chdir(directory)
    result = run(["plan", "--format", "markdown", "--split-dir", "parts/pr"], CLI_ENV)
    assert result.exit_code == 0, result.stderr
    assert result.stderr.split() == [str(Path("parts/pr/plan-1.md"))]
    assert (directory / "parts/pr/plan-1.md").read_text(encoding="utf-8") == result.stdout


def test_split_dir_needs_markdown(write_config, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """--split-dir with another format is a usage error and creates nothing."""
    directory = write_config({"reconciler.yaml": _many_tenants_config(1, 1)})
    monkeypatch.chdir(directory)
    result = run(["plan", "--format", "json", "--split-dir", "out"], CLI_ENV)
    assert result.exit_code == 1 and "--split-dir" in result.stderr and not result.stdout
    assert not (directory / "out").exists()
