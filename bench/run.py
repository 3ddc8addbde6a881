"""`make bench`: every figure of issues 5, 14, 15 and 16 in one run, as a table of ratios with a verdict, plus absolute times.

  .venv/bin/python bench/run.py                      # the issue's size: 10,000 installations in 1,000 tenant files
  .venv/bin/python bench/run.py --scale 0.1 --runs 3 # a quick check (1,000 installations; not a verdict)
  .venv/bin/python bench/run.py --only plan,start    # some rows (plan, apply, refresh, start, terraform,
                                                     # cyclr-refresh, cyclr-apply: bench/cyclr_rows.py;
                                                     # service-tokens, service-completions: bench/service.py;
                                                     # status, status-refresh: bench/status_rows.py)
  make bench ONLY=cyclr-refresh,cyclr-apply          # the same through make

Every reconciler figure is a fresh subprocess (`python -m reconciler -C DIR ...`), timed from spawn to exit, so
interpreter start-up is in every figure and in every baseline alike; nothing is subtracted. The data comes from
bench/generate.py into a scratch directory (removed afterwards unless --keep); the sandbox provider runs in this
process, on a free port, for the whole run. Results go to stdout and to bench/RESULTS.md (whose "Where the time
goes" section, once somebody has written it, is kept across runs; a full-scale run of some rows replaces only those
rows and keeps the others, saying which run each came from).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
for entry in (str(ROOT), str(BENCH)):
    if entry not in sys.path:
        sys.path.insert(0, entry)

import cyclr_rows
import generate as gen
import results_merge as merge
import service as service_rows
import status_rows
from run_support import (
    BenchError,
    Row,
    Sample,
    cached_bytecode,
    checked,
    error_row,
    fmt_s,
    log,
    median,
    own_cpu,
    ratio_row,
    run_once,
    show_times,
)

PY = sys.executable
RESULTS = BENCH / "RESULTS.md"
WHERE_HEADING = "## Where the time goes"
PLACEHOLDER = "Profile notes: see below"
ROW_GROUPS = ("plan", "start", "refresh", "apply", "terraform", "cyclr-refresh", "cyclr-apply", "service-tokens",
              "service-completions", "status", "status-refresh")


def peak_rss(cmd: list[str], *, env: dict[str, str], what: str) -> float:
    """The command's peak RSS in MB, through the small launcher bench/rss.py (so our own memory is not in it)."""
    sample = checked(run_once([PY, "-I", "-S", str(BENCH / "rss.py"), *cmd], env=env), f"{what} (peak RSS run)")
    result = json.loads(sample.stdout.strip().splitlines()[-1])
    if result["rc"] != 0:
        raise BenchError(f"{what} (peak RSS run): exit code {result['rc']}")
    return float(result["maxrss_kb"]) / 1024  # kilobytes on Linux


# -- the benchmark ---------------------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.shape = gen.Shape(max(1, round(1000 * args.scale)), 10)
        self.small = gen.Shape(max(1, round(100 * args.scale)), 10)  # the 1k apply: a tenth
        self.n = self.shape.installations
        self.work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="reconciler-bench-"))
        self.work.mkdir(parents=True, exist_ok=True)
        self.env = gen.bench_env()
        self.rows: list[Row] = []
        self.notes: list[str] = []
        self.reconciler = [PY, "-m", "reconciler"]
        self.no_cache: str | None = None  # where the CLI takes --no-cache: "plan", "global" or nowhere
        # The parse cache (where the product has one) lives in the scratch directory: the benchmark starts from an
        # empty cache and leaves nothing in the user's ~/.cache.
        self.env["RECONCILER_CACHE_DIR"] = str(self.work / "cache")
        self.sandbox = None
        self.plan_samples: list[Sample] = []

    def runs(self) -> int:
        return self.args.runs

    def wants(self, group: str) -> bool:
        return group in self.args.only

    # -- setup -------------------------------------------------------------------------------------------------

    def setup(self) -> None:
        from reconciler.sandbox import SandboxServer

        self.sandbox = SandboxServer("127.0.0.1", 0).start()
        self.url = self.sandbox.url
        bytecode = cached_bytecode(PY, self.env)
        if bytecode:
            log(bytecode)
            self.notes.append(bytecode)
        log(f"sandbox provider on {self.url}; scratch directory {self.work}")
        # --no-cache may be an option of `plan` or a global one (before the command): ask both helps.
        if "--no-cache" in run_once([*self.reconciler, "plan", "--help"], env=self.env).stdout:
            self.no_cache = "plan"
        elif "--no-cache" in run_once([*self.reconciler, "--help"], env=self.env).stdout:
            self.no_cache = "global"
        log(f"--no-cache: {self.no_cache or 'not offered by the CLI (no parse cache)'}; "
            f"RECONCILER_CACHE_DIR={self.env['RECONCILER_CACHE_DIR']}")
        self.plan_dir = self.work / "plan"
        self.changed_dir = self.work / "plan-1pct"
        if any(self.wants(group) for group in ("plan", "refresh", "terraform", "status", "status-refresh")):
            self.generate("no-change configuration, state and sealed tokens known to the sandbox", self.plan_dir,
                          self.shape, provider=self.sandbox.provider)
        if self.wants("plan"):
            self.generate(f"{self.args.changed:.0%} changed configuration (same state)", self.changed_dir, self.shape,
                          changed=self.args.changed, credentials=False)
            self.changed = gen.changed_count(self.shape, self.args.changed)

    def generate(self, what: str, directory: Path, shape: gen.Shape, *, provider=None, changed: float = 0.0,
                 credentials: bool = True, delete_all: bool = False) -> None:  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        gen.generate(directory, shape, self.url, provider, changed=changed, credentials=credentials)
        if delete_all:
            gen.write_config(directory, shape, self.url, keep_installations=False)
        log(f"generated {shape.installations:,} installations / {shape.tenants:,} files: {what} "
            f"({time.perf_counter() - started:.1f} s)")

    def stop(self) -> None:
        if self.sandbox is not None:
            self.sandbox.stop()
        if not self.args.keep and not self.args.workdir:  # a directory given with --workdir is never removed
            shutil.rmtree(self.work, ignore_errors=True)

    # -- CLI start ---------------------------------------------------------------------------------------------

    def cli_start(self) -> None:
        runs = max(self.runs(), 10)
        script = Path(PY).parent / "reconciler"
        helper = [str(script)] if script.exists() else self.reconciler
        name = "CLI start: `reconciler --help` vs `python -c pass`"
        try:
            ours, base = [], []
            for _ in range(runs):  # interleaved, so that drift on a noisy machine hits both alike
                base.append(checked(run_once([PY, "-c", "pass"], env=self.env), "python -c pass"))
                ours.append(checked(run_once([*helper, "--help"], env=self.env), "reconciler --help",
                                    lambda s: None if "Usage" in s.stdout else "no usage text"))
            show_times("python -c pass", base)
            show_times("reconciler --help", ours)
            row = ratio_row(name, median(ours), median(base), 3.0, "python -c pass")
            row.notes.append(f"median of {runs} runs each (cheap and noisy: at least 10), interleaved")
        except BenchError as exc:
            row = error_row(name, "<= 3x", exc)
        self.rows.append(row)

    # -- plan --------------------------------------------------------------------------------------------------

    def plan_cmd(self, directory: Path, *, cold: bool) -> list[str]:
        flag = ["--no-cache"] if cold else []
        if self.no_cache == "plan":
            return [*self.reconciler, "-C", str(directory), "plan", *flag]
        if self.no_cache == "global":
            return [*self.reconciler, *flag, "-C", str(directory), "plan"]
        return [*self.reconciler, "-C", str(directory), "plan"]

    def plans(self) -> None:
        n, files = self.n, self.shape.tenants + 1
        size = f"{n:,} installations / {files:,} files"
        no_change = lambda s: None if "No changes" in s.stdout else "the plan is not \"No changes\""
        expected = f"0 to create, {self.changed} to update, 0 to reauthorize, 0 to delete"
        with_change = lambda s: None if expected in s.stdout else f"expected \"{expected}\""
        floor_cmd = [PY, str(BENCH / "parse_floor.py"), str(self.plan_dir)]
        floor_check = lambda s: None if f"{files} files, {n} installations" in s.stdout else "wrong count"
        floor, cold, changed = [], [], []
        try:
            for _ in range(self.runs()):  # interleaved: floor, cold plan, 1 % plan
                floor.append(checked(run_once(floor_cmd, env=self.env), "parse floor", floor_check))
                cold.append(checked(run_once(self.plan_cmd(self.plan_dir, cold=True), env=self.env),
                                    "plan (no changes)", no_change))
                changed.append(checked(run_once(self.plan_cmd(self.changed_dir, cold=True), env=self.env),
                                       "plan (1 % changed)", with_change))
        except BenchError as exc:
            for name, target in (("plan cold", "<= 2x"), ("plan 1 % changed", "<= 1.1x")):
                self.rows.append(error_row(f"{name}, {size}", target, exc))
            return
        show_times("parse floor", floor)
        show_times("plan cold", cold)
        show_times(f"plan {self.args.changed:.0%} changed", changed)
        self.plan_samples = cold
        t_floor = median(floor)
        self.rows.append(Row(f"parse floor: yaml.CSafeLoader over the same {files:,} files", fmt_s(t_floor),
                             notes=["a subprocess like the plan runs: interpreter start-up and `import yaml` included"]))
        row = ratio_row(f"`plan` cold (no refresh, no changes), {size}", median(cold), t_floor, 2.0, "parse floor")
        row.notes.append(f"`{' '.join(['reconciler', *self.plan_cmd(Path('DIR'), cold=True)[3:]])}`" if self.no_cache
                         else "the CLI has no --no-cache (no parse cache yet): plain `plan`")
        self.rows.append(row)
        self.warm(t_floor, size, no_change)
        row = ratio_row(f"`plan` with {self.args.changed:.0%} changed ({self.changed:,} update{'' if self.changed == 1 else 's'}) "
                        "vs no changes",
                        median(changed), median(cold), 1.1, "no-change plan")
        row.notes.append("both cold" + (" (--no-cache)" if self.no_cache else ""))
        self.rows.append(row)
        self.peak(n, floor_cmd)

    def peak(self, n: int, floor_cmd: list[str]) -> None:
        name = f"peak RSS of the {n:,} plan (cold)"
        runs = min(self.runs(), 3)
        try:
            peaks = [peak_rss(self.plan_cmd(self.plan_dir, cold=True), env=self.env, what="plan") for _ in range(runs)]
            floor = max(peak_rss(floor_cmd, env=self.env, what="parse floor") for _ in range(runs))
        except BenchError as exc:
            self.rows.append(error_row(name, "<= 300 MB", exc))
            return
        peak = max(peaks)
        log(f"  peak RSS: plan {', '.join(f'{p:.0f}' for p in peaks)} MB; parse floor {floor:.0f} MB")
        self.rows.append(Row(name, f"{peak:.0f} MB", f"{floor:.0f} MB (parse floor)", "—", "<= 300 MB",
                             "PASS" if peak <= 300 else "FAIL",
                             [(f"ru_maxrss (wait4) of the plan process, the largest of {runs} extra untimed runs, "
                               "taken through the small launcher bench/rss.py: a child of this process would "
                               "otherwise report this process's own RSS (the sandbox's grants) as its peak")]))

    def warm(self, t_floor: float, size: str, check: Callable[[Sample], str | None]) -> None:
        name = f"`plan` warm parse cache, {size}"
        try:
            checked(run_once(self.plan_cmd(self.plan_dir, cold=False), env=self.env), "plan (priming)", check)
            warm = [checked(run_once(self.plan_cmd(self.plan_dir, cold=False), env=self.env), "plan (warm)", check)
                    for _ in range(self.runs())]
        except BenchError as exc:
            self.rows.append(error_row(name, "<= 0.5x", exc))
            return
        show_times("plan warm", warm)
        row = ratio_row(name, median(warm), t_floor, 0.5, "parse floor")
        row.notes.append("one plan run first to fill the cache (empty at the start, in the scratch directory), then "
                         "timed" + ("" if self.no_cache else "; the CLI has no --no-cache, so no parse cache either: "
                                    "this is a cold plan again"))
        self.rows.append(row)

    # -- apply -------------------------------------------------------------------------------------------------

    def applies(self) -> None:
        name = f"`apply --auto-approve` of {self.n:,} deletes vs {self.small.installations:,}"
        templates = {}
        for label, shape in (("small", self.small), ("big", self.shape)):
            directory = self.work / f"apply-{label}-template"
            self.generate("state + sealed tokens, configuration declaring no installation (apply deletes all)",
                          directory, shape, delete_all=True)
            templates[label] = (directory, shape)
        try:
            small = self.apply_runs(*templates["small"], runs=self.runs(), timeout=self.args.apply_timeout)
            if small[-1].timed_out:
                raise BenchError(f"apply of {self.small.installations:,} deletes: timed out after "
                                 f"{small[-1].seconds:.0f} s (--apply-timeout)")
            show_times(f"apply {self.small.installations:,} deletes", small)
            t_small = median(small)
            big = self.apply_runs(*templates["big"], runs=self.args.apply_runs, timeout=self.big_limit(t_small))
        except BenchError as exc:
            self.rows.append(error_row(name, "<= 12x", exc))
            return
        notes = [(f"deletes (the tokens are forgotten; no provider call); each run on a fresh copy of the generated "
                  f"directory; {self.small.installations:,}: median of {len(small)}")]
        if big[-1].timed_out:
            t_big = big[-1].seconds
            bound = t_big / t_small
            row = Row(name, f"> {fmt_s(t_big)}", f"{fmt_s(t_small)} ({self.small.installations:,} deletes)",
                      f"> {bound:.1f}x", "<= 12x", "FAIL")
            notes.append(f"the {self.n:,} run was stopped after {fmt_s(t_big)} (= 1.25 x 12 x the small run, or "
                         f"--apply-timeout): the ratio is at least {bound:.1f}x; state left as the product left it")
            log(f"  apply {self.n:,} deletes: stopped after {fmt_s(t_big)}")
        else:
            show_times(f"apply {self.n:,} deletes", big)
            row = ratio_row(name, median(big), t_small, 12.0, f"{self.small.installations:,} deletes")
            notes.append(f"{self.n:,}: median of {len(big)} (--apply-runs; slow rows get fewer runs)")
        row.notes += notes
        self.rows.append(row)

    def big_limit(self, t_small: float) -> float:
        """When to stop a big apply: past 1.25 x the target (12 x the small run) the row has failed anyway."""
        return min(self.args.apply_timeout, max(60.0, 1.25 * 12 * t_small))

    def apply_runs(self, template: Path, shape: gen.Shape, *, runs: int, timeout: float) -> list[Sample]:
        n = shape.installations
        samples = []
        for index in range(runs):
            directory = self.work / f"apply-run-{n}-{index}"
            shutil.copytree(template, directory, ignore=shutil.ignore_patterns(".bench"))
            sample = run_once([*self.reconciler, "-C", str(directory), "apply", "--auto-approve"], env=self.env,
                              timeout=timeout)
            if sample.timed_out:
                samples.append(sample)
                shutil.rmtree(directory, ignore_errors=True)
                break  # one run past the limit decides the row; more would only burn time
            checked(sample, f"apply of {n:,} deletes",
                    lambda s: None if f"Apply complete: {n} completed" in s.stdout else "not every delete completed")
            # What is left, as the product itself reads it (whatever its state format), and credential files.
            listed = checked(run_once([*self.reconciler, "-C", str(directory), "state", "list"], env=self.env),
                             "state list after apply")
            installations = [line for line in listed.stdout.splitlines() if line.startswith("installation.")]
            left = len(list((directory / "state" / "default.credentials").glob("*.json")))
            if installations or left:
                raise BenchError(f"apply of {n:,} deletes: {len(installations)} records and {left} credential "
                                 "records left in state")
            samples.append(sample)
            shutil.rmtree(directory, ignore_errors=True)
        return samples

    # -- refresh -----------------------------------------------------------------------------------------------

    def refresh(self) -> None:
        p = self.args.parallelism
        name = f"`refresh` of {self.n:,} tokens at --parallelism {p} vs raw httpx"
        expected = f"Refresh complete: {self.n} refreshed."
        cmd = [*self.reconciler, "-C", str(self.plan_dir), "refresh", "--window", "1000", "--parallelism", str(p)]
        try:
            ours, served = [], 0.0
            for _ in range(self.runs()):
                busy = own_cpu()
                ours.append(checked(run_once(cmd, env=self.env, timeout=self.args.refresh_timeout), "refresh",
                                    lambda s: None if expected in s.stdout else f"expected \"{expected}\""))
                served += own_cpu() - busy
            show_times("reconciler refresh", ours)
            busy = own_cpu()
            raw, raw_cpu = self.raw_refresh(p)
            raw_served = own_cpu() - busy
        except BenchError as exc:
            self.rows.append(error_row(name, ">= 70 % of raw rate", exc))
            return
        t_ours, t_raw = median(ours), statistics.median(raw)
        log(f"  raw httpx: {', '.join(f'{t:.3f}' for t in raw)} s -> median {fmt_s(t_raw)}")
        # Who limits the rate: the sandbox is one Python process (one core at most, its GIL); a client is another.
        load = (f"sandbox busy {served / sum(s.seconds for s in ours):.0%} of a core during ours and "
                f"{raw_served / sum(raw):.0%} during raw; client CPU per token: ours "
                f"{1000 * statistics.median(s.cpu for s in ours) / self.n:.2f} ms, raw "
                f"{1000 * statistics.median(raw_cpu) / self.n:.2f} ms; sandbox CPU per token "
                f"{1000 * raw_served / (self.n * len(raw)):.2f} ms")
        log(f"  {load}")
        share = t_raw / t_ours
        self.rows.append(Row(
            name,
            f"{fmt_s(t_ours)} ({self.n / t_ours:,.0f} tokens/s)",
            f"{fmt_s(t_raw)} ({self.n / t_raw:,.0f} tokens/s)",
            f"{share:.0%} of raw rate",
            ">= 70 %",
            "PASS" if share >= 0.70 else "FAIL",
            [(f"every token due (--window 1000 min): per token one refresh POST and the two verification GETs; "
              f"the raw baseline (bench/raw_refresh.py, its own grants, {p} threads, one httpx client) sends exactly "
              "those 3 requests per token with nothing else"),
             ("ours is the whole CLI run (start-up, configuration, state, unsealing and sealing every token); the raw "
              "figure is its request loop alone, start-up excluded — a stricter comparison for us"),
             f"the sandbox serves from this process (ThreadingHTTPServer); median of {len(ours)} runs each",
             load],
        ))

    def raw_refresh(self, parallelism: int) -> tuple[list[float], list[float]]:
        provider = self.sandbox.provider
        items = []
        for t in range(self.shape.tenants):
            for i in range(self.shape.per_tenant):
                grant = gen.new_grant(provider)
                items.append({"refresh_token": grant.refresh_token, "organization": gen.organization(t),
                              "project": gen.project(i, False)})
        jobs = self.work / "raw-refresh.json"
        jobs.write_text(json.dumps({
            "token_url": f"{self.url}/oauth2/token", "api_url": self.url, "client_secret": gen.BENCH_SECRET,
            "redirect_uri": gen.redirect_uri(), "items": items,
        }))
        sample = checked(run_once([PY, str(BENCH / "raw_refresh.py"), str(jobs), "--passes", str(self.runs()),
                                   "--concurrency", str(parallelism)], env=self.env,
                                  timeout=self.args.refresh_timeout * self.runs()), "raw httpx refresh")
        result = json.loads(sample.stdout.strip().splitlines()[-1])
        if result["errors"]:
            raise BenchError(f"raw httpx refresh: {result['errors']} failed requests")
        return list(result["times"]), list(result["cpu"])

    # -- terraform ---------------------------------------------------------------------------------------------

    def terraform(self) -> None:
        name = f"`terraform plan` of {self.n:,} terraform_data (local state) beside ours"
        binary = shutil.which("terraform")
        if binary is None:
            self.rows.append(Row(name, verdict="SKIPPED", notes=["terraform is not on PATH (not installed)"]))
            return
        env = {**self.env, "CHECKPOINT_DISABLE": "1", "TF_IN_AUTOMATION": "1"}
        directory = self.work / "terraform"
        runs = self.args.terraform_runs
        try:
            gen.write_terraform(directory, self.shape)
            checked(run_once([binary, "init", "-input=false", "-no-color"], env=env, cwd=directory, timeout=300),
                    "terraform init")
            cmd = [binary, "plan", "-input=false", "-no-color", "-refresh=false", "-detailed-exitcode"]
            tf = [checked(run_once(cmd, env=env, cwd=directory, timeout=self.args.terraform_timeout), "terraform plan",
                          lambda s: None if "No changes" in s.stdout else "terraform plans changes")
                  for _ in range(runs)]
            ours = self.plan_samples or [
                checked(run_once(self.plan_cmd(self.plan_dir, cold=True), env=self.env), "plan")
                for _ in range(self.runs())
            ]
        except BenchError as exc:
            self.rows.append(error_row(name, "—", exc))
            return
        show_times("terraform plan", tf)
        version = run_once([binary, "version"], env=env).stdout.splitlines()[0]
        t_ours, t_tf = median(ours), median(tf)
        self.rows.append(Row(name, fmt_s(t_ours), f"{fmt_s(t_tf)} (terraform)", f"{t_ours / t_tf:.2f}x", "—", "INFO",
                             [(f"{version}; `terraform plan -refresh=false` (like-for-like with our offline plan), "
                               f"state written by the generator in terraform's format 4, median of {runs}; ours: the "
                               "cold plan row")]))

    # -- all ---------------------------------------------------------------------------------------------------

    def run(self) -> None:
        started = time.perf_counter()
        try:
            self.setup()
            steps = (("start", self.cli_start), ("plan", self.plans), ("refresh", self.refresh),
                     ("apply", self.applies), ("terraform", self.terraform),
                     ("cyclr-refresh", lambda: cyclr_rows.cyclr_refresh(self)),
                     ("cyclr-apply", lambda: cyclr_rows.cyclr_apply(self)),
                     ("service-tokens", lambda: service_rows.service_tokens(self)),
                     ("service-completions", lambda: service_rows.service_completions(self)),
                     ("status", lambda: status_rows.status_rows(self)),
                     ("status-refresh", lambda: status_rows.status_refresh(self)))
            for group, step in steps:
                if not self.wants(group):
                    continue
                log(group)
                try:
                    step()
                except Exception as exc:  # noqa: BLE001 - one broken group must not hide the others' figures
                    self.rows.append(error_row(f"{group} (harness)", "—", exc))
                    log(f"  {group}: {type(exc).__name__}: {exc}")
        finally:
            self.elapsed = time.perf_counter() - started


# -- output ----------------------------------------------------------------------------------------------------

HEADERS = ("row", "ours", "baseline", "ratio", "target", "result")


def text_table(rows: list[Row]) -> str:
    cells = [HEADERS] + [(r.name, r.ours, r.baseline, r.ratio, r.target, r.verdict) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADERS))]
    lines = []
    for index, cell in enumerate(cells):
        lines.append("  ".join(value.ljust(widths[i]) for i, value in enumerate(cell)).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(rows: list[Row], kept: list[str] | None = None) -> str:
    """The table: `kept` (lines of an earlier table, for the row groups not run) first, then `rows`."""
    def esc(value: str) -> str:
        return value.replace("|", "\\|")

    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS), *(kept or [])]
    lines += ["| " + " | ".join(esc(v) for v in (r.name, r.ours, r.baseline, r.ratio, r.target, f"**{r.verdict}**"))
              + " |" for r in rows]
    return "\n".join(lines)


def notes_text(rows: list[Row], bullet: str) -> list[str]:
    return [f"{bullet}{r.name}: {note}" for r in rows for note in r.notes]


def machine() -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        models = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")]
        info["CPU"] = f"{models[0]} ({len(models)} logical CPUs listed)" if models else "unknown"
    except OSError:
        info["CPU"] = "unknown"
    info["nproc"] = str(len(os.sched_getaffinity(0)))
    try:
        kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))  # type: ignore[union-attr]
        info["memory"] = f"{kb / 1024 / 1024:.1f} GiB"
    except (OSError, AttributeError):
        info["memory"] = "unknown"
    info["Python"] = f"{platform.python_version()} ({platform.python_implementation()}, {PY})"
    info["OS"] = f"{platform.system()} {platform.release()}"
    try:
        import reconciler

        info["reconciler"] = reconciler.__version__
    except Exception as exc:  # noqa: BLE001
        info["reconciler"] = f"unknown ({type(exc).__name__})"
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "reconciler"],
                               capture_output=True, text=True, check=True).stdout.strip()
        info["commit"] = head + (" (reconciler/ has uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        pass
    return info


def write_results(bench: Bench, args: argparse.Namespace, argv: list[str]) -> None:
    """Write RESULTS.md. A run of some row groups at full scale keeps the other groups' rows from the file (see
    bench/results_merge.py); any other reduced run replaces the table, marked as not the verdict."""
    text = RESULTS.read_text() if RESULTS.exists() else ""
    kept = text[text.index(WHERE_HEADING):] if WHERE_HEADING in text else f"{WHERE_HEADING}\n\n{PLACEHOLDER}\n"
    partial = set(args.only) != set(ROW_GROUPS)
    prev = merge.read_previous(text, WHERE_HEADING) if partial and args.scale == 1.0 and text else None
    rows, notes = merge.kept(prev, set(args.only)) if prev else ([], [])
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = " ".join(["python bench/run.py", *argv]).strip()
    measured = [f"- {r.name}: re-measured {stamp} by `{command}`" for r in bench.rows] if prev else []
    quick = args.scale != 1.0 or args.runs < 5 or (partial and prev is None)
    lines = [
        "# Benchmark results (issues 5 and 14: scale)",
        "",
        ("Written by `make bench` (`bench/run.py`); the last run replaces everything above "
         f"\"{WHERE_HEADING[3:]}\" (a run of some rows, `--only`, replaces only those rows)."),
        "",
        f"- date: {stamp}" + (f" (rows re-measured: {', '.join(args.only)})" if prev else ""),
        f"- command: `{command}`",
        (f"- size: {bench.n:,} installations in {bench.shape.tenants:,} tenant files"
         f" (scale {args.scale:g}); runs: {args.runs} (apply {bench.n:,}: {args.apply_runs}; terraform:"
         f" {args.terraform_runs}); total {bench.elapsed / 60:.1f} min"),
        *([merge.KEPT_HEADING, *prev.origin] if prev and rows else []),
        *(["- **not the issue's verdict**: a reduced run (scale, runs or rows); `make bench` is the full one"]
          if quick else []),
        "",
        "## Machine",
        "",
        *[f"- {key}: {value}" for key, value in machine().items()],
        "",
        "## Results",
        "",
        markdown_table(bench.rows, rows),
        "",
        ("Ratios are ours / baseline (for refresh rows: our request rate / the raw rate). Times are medians of fresh "
         "subprocesses, spawn to exit, interpreter start-up included everywhere and subtracted nowhere."),
        "",
        "### Notes",
        "",
        *notes,
        *notes_text(bench.rows, "- "),
        *measured,
        *[f"- {note}" for note in bench.notes],
        "",
        *([prev.extra] if prev and prev.extra else []),
        kept.rstrip() + "\n",
    ]
    RESULTS.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--scale", type=float, default=1.0, help="1.0: 10,000 installations / 1,000 files")
    parser.add_argument("--runs", type=int, default=5, help="runs per figure (median); the issue asks for >= 5")
    parser.add_argument("--apply-runs", type=int, default=3, help="runs of the big apply (slow; default 3)")
    parser.add_argument("--apply-timeout", type=float, default=600, help="seconds before an apply run is stopped")
    parser.add_argument("--refresh-timeout", type=float, default=600, help="seconds before a refresh run is stopped")
    parser.add_argument("--terraform-runs", type=int, default=3, help="runs of terraform plan (default 3)")
    parser.add_argument("--terraform-timeout", type=float, default=600)
    parser.add_argument("--parallelism", type=int, default=32)
    parser.add_argument("--changed", type=float, default=0.01, help="share of installations changed (0.01 = 1 %%)")
    parser.add_argument("--only", default=",".join(ROW_GROUPS), help=f"comma-separated: {', '.join(ROW_GROUPS)}")
    parser.add_argument("--workdir", help="scratch directory, kept afterwards (default: a new one under $TMPDIR, removed)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument("--no-results", action="store_true", help=f"do not write {RESULTS.relative_to(ROOT)}")
    parser.add_argument("--strict", action="store_true", help="exit 1 when any row fails its target")
    args = parser.parse_args(argv)
    args.only = [g.strip() for g in args.only.split(",") if g.strip()]
    unknown = [g for g in args.only if g not in ROW_GROUPS]
    if unknown or args.runs < 1 or args.apply_runs < 1 or args.terraform_runs < 1 or args.scale <= 0:
        parser.error(f"unknown row group(s) {', '.join(unknown)}" if unknown else "runs and scale must be positive")
    if args.runs < 5:
        log(f"note: --runs {args.runs} is below the issue's 5: a quick check, not a verdict")
    bench = Bench(args)
    log(f"reconciler benchmark: {bench.n:,} installations in {bench.shape.tenants:,} tenant files; "
        f"runs {args.runs}, apply {bench.n:,} runs {args.apply_runs}, terraform runs {args.terraform_runs}")
    try:
        bench.run()
    finally:
        bench.stop()
    log("")
    log(text_table(bench.rows))
    log("")
    for line in notes_text(bench.rows, "* "):
        log(line)
    log(f"\ntotal {bench.elapsed / 60:.1f} min")
    if not args.no_results:
        write_results(bench, args, argv)
        log(f"wrote {RESULTS.relative_to(ROOT)}")
    verdicts = {r.verdict for r in bench.rows}
    if "ERROR" in verdicts or (args.strict and "FAIL" in verdicts):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
