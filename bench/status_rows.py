"""The `status` rows of `make bench` (issue 16): `reconciler status` over the 10,000 installations from state alone
(no network), as text to a pipe and as JSON, against its 1 s target; and `status --refresh` against `refresh` on
the same state and sandbox.

  .venv/bin/python bench/run.py --only status,status-refresh     # these rows alone (RESULTS.md keeps the others)

Both use the no-change data the plan and refresh rows use (state, sealed tokens the sandbox knows). From state
alone, every installation's sealed record is opened (the tokens' expiry and refresh token), so the figure covers
the state document, 10,000 credential records and the rendering of 10,000 rows; `reconciler --version` runs
interleaved with it, as the start-up every command pays. `status --refresh` does the work of `refresh` (refresh
what is due, check each installation at the provider, record what was found), then reads and shows the report.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from run_support import (
    BenchError,
    Row,
    Sample,
    checked,
    error_row,
    fmt_s,
    log,
    median,
    ratio_row,
    run_once,
    show_times,
)

if TYPE_CHECKING:
    from run import Bench

TARGET_SECONDS = 1.0
REFRESH_RATIO = 1.25


def _all_healthy_text(n: int):  # type: ignore[no-untyped-def]
    line = f"{n} installations: {n} healthy"
    return lambda s: None if line in s.stdout else f"expected \"{line}\""


def _all_healthy_json(n: int):  # type: ignore[no-untyped-def]
    def check(sample: Sample) -> str | None:
        try:
            document = json.loads(sample.stdout)
        except ValueError as exc:
            return f"not JSON ({exc})"
        shown, healthy = document.get("shown"), document.get("summary", {}).get("healthy")
        return None if shown == healthy == n else f"shown {shown}, healthy {healthy}, expected {n}"

    return check


def status_rows(bench: Bench) -> None:
    """`status` (text to a pipe, and --format json) from state alone against the 1 s target, beside `--version`."""
    n = bench.n
    names = {fmt: f"`status` from state alone, {n:,} installations, {label}"
             for fmt, label in (("text", "text to a pipe"), ("json", "`--format json`"))}
    base = [*bench.reconciler, "-C", str(bench.plan_dir), "status"]
    commands = {"text": base, "json": [*base, "--format", "json"]}
    checks = {"text": _all_healthy_text(n), "json": _all_healthy_json(n)}
    version: list[Sample] = []
    samples: dict[str, list[Sample]] = {"text": [], "json": []}
    try:
        for _ in range(bench.runs()):  # interleaved, so that drift on a busy machine hits all three alike
            version.append(checked(run_once([*bench.reconciler, "--version"], env=bench.env), "reconciler --version"))
            for fmt, command in commands.items():
                samples[fmt].append(checked(run_once(command, env=bench.env), f"status ({fmt})", checks[fmt]))
    except BenchError as exc:
        for name in names.values():
            bench.rows.append(error_row(name, f"<= {TARGET_SECONDS:g} s", exc))
        return
    show_times("reconciler --version", version)
    t_version = median(version)
    for fmt, name in names.items():
        show_times(f"status ({fmt})", samples[fmt])
        t = median(samples[fmt])
        bench.rows.append(Row(
            name, fmt_s(t), f"{fmt_s(TARGET_SECONDS)} (target); {fmt_s(t_version)} (`--version`)",
            f"{t / TARGET_SECONDS:.2f}x the target, {t / t_version:.1f}x `--version`", f"<= {TARGET_SECONDS:g} s",
            "PASS" if t <= TARGET_SECONDS else "FAIL",
            [(f"`reconciler -C DIR status{' --format json' if fmt == 'json' else ''}` with its output to a file: every "
              f"installation healthy, each sealed credential record opened; median of {len(samples[fmt])} runs, "
              "interleaved with `reconciler --version` (the start-up in every figure)")],
        ))


def status_refresh(bench: Bench) -> None:
    """`status --refresh` against `refresh` on the same state and sandbox: the report on top of the same work."""
    n, p = bench.n, bench.args.parallelism
    name = f"`status --refresh` vs `refresh`, {n:,} installations at --parallelism {p}"
    target = f"<= {REFRESH_RATIO:g}x"
    directory = str(bench.plan_dir)
    ours_cmd = [*bench.reconciler, "-C", directory, "status", "--refresh", "--parallelism", str(p)]
    base_cmd = [*bench.reconciler, "-C", directory, "refresh", "--parallelism", str(p)]
    refreshed = lambda s: None if "Refresh complete:" in s.stdout else "expected \"Refresh complete:\""
    limit = bench.args.refresh_timeout
    ours: list[Sample] = []
    base: list[Sample] = []
    try:
        for _ in range(bench.runs()):  # interleaved: tokens that come due during the row are refreshed by either
            base.append(checked(run_once(base_cmd, env=bench.env, timeout=limit), "refresh", refreshed))
            ours.append(checked(run_once(ours_cmd, env=bench.env, timeout=limit), "status --refresh",
                                _all_healthy_text(n)))
    except BenchError as exc:
        bench.rows.append(error_row(name, target, exc))
        return
    show_times("refresh", base)
    show_times("status --refresh", ours)
    row = ratio_row(name, median(ours), median(base), REFRESH_RATIO, "`refresh`")
    log(f"  status --refresh - refresh: {fmt_s(median(ours) - median(base))}")
    row.notes.append(f"both with the default window (15 min), each check at the sandbox; `status --refresh` then "
                     f"reads and shows the report (text to a file); interleaved, median of {len(ours)} runs each")
    bench.rows.append(row)
