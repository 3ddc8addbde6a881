"""Keeping bench/RESULTS.md whole across a run of some rows (`bench/run.py --only ...`): the rows and notes of the
row groups not run this time are kept from the file as it was, with the run they came from named in the header;
the rows that were run replace theirs and carry a note saying when they were measured. The sections between the
notes and "Where the time goes" are kept too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# Which row group a row belongs to, by the start of its name (a row group's error row is "<group> (harness)").
PREFIXES = (
    ("CLI start", "start"),
    ("parse floor", "plan"),
    ("`plan`", "plan"),
    ("peak RSS", "plan"),
    ("`refresh`", "refresh"),
    ("`apply --auto-approve` of", "apply"),
    ("`terraform plan`", "terraform"),
    ("`plan --refresh` (cyclr)", "cyclr-refresh"),
    ("`apply --auto-approve --auth-mode defer` (cyclr)", "cyclr-apply"),
    ("service: token API", "service-tokens"),
    ("service: ", "service-completions"),
    ("`status` ", "status"),
    ("`status --refresh`", "status-refresh"),
)
KEPT_HEADING = "- the other rows are kept from an earlier run:"


def group_of(name: str) -> str | None:
    for prefix, group in PREFIXES:
        if name.startswith(prefix) or name == f"{group} (harness)":
            return group
    return None


@dataclass
class Previous:
    """What an earlier RESULTS.md says: where its rows came from, its table rows, notes and extra sections."""

    origin: list[str] = field(default_factory=list)  # sub-bullets naming the run the kept rows came from
    rows: list[str] = field(default_factory=list)  # markdown table lines
    notes: list[str] = field(default_factory=list)  # "- <row name>: <note>" lines
    extra: str = ""  # sections after the notes, before "Where the time goes"


def read_previous(text: str, where_heading: str) -> Previous:
    prev = Previous()
    head = text.split("## Machine", 1)[0].splitlines()
    if KEPT_HEADING in head:
        start = head.index(KEPT_HEADING) + 1
        prev.origin = [line for line in head[start:] if line.startswith("  - ")]
    else:
        prev.origin = [f"  {line}" for line in head if re.match(r"- (date|command|size): ", line)]
        commit = re.search(r"^- commit: (.*)$", text, re.MULTILINE)
        if commit:
            prev.origin.append(f"  - commit: {commit.group(1)}")
    body = text.split(where_heading, 1)[0]
    if "## Results" in body:
        results = body.split("## Results", 1)[1].split("### Notes", 1)[0]
        prev.rows = [line for line in results.splitlines() if line.startswith("| ") and not line.startswith("| row |")]
    if "### Notes" in body:
        notes, _, extra = body.split("### Notes", 1)[1].partition("\n## ")
        prev.notes = [line for line in notes.splitlines() if line.startswith("- ")]
        prev.extra = f"## {extra}".rstrip() + "\n" if extra else ""
    return prev


def row_name(line: str) -> str:
    return line[2:].split(" | ", 1)[0]


def kept(prev: Previous, rerun: set[str]) -> tuple[list[str], list[str]]:
    """The earlier table lines and notes of the rows whose group was not run this time."""
    rows = [line for line in prev.rows if group_of(row_name(line)) not in rerun]
    names = {row_name(line) for line in rows}
    notes = [line for line in prev.notes if any(line.startswith(f"- {name}: ") for name in names)]
    return rows, notes
