"""The cyclr platform's rows of `make bench` (issue 14): `plan --refresh` of an estate on the sandbox's Cyclr API
against a raw httpx loop doing the same GETs, and `apply` of new installs at two sizes (linear).

  .venv/bin/python bench/run.py --only cyclr-refresh,cyclr-apply     # these rows alone (RESULTS.md keeps the others)

The estate (1,000 accounts x 10 account connectors at scale 1) is made the way a console would: one
`POST /_sandbox/cyclr/accounts` per account (the sandbox's console route, no OAuth), then adopted with the product's
own `reconciler import --write tenants` into a configuration that declares none of it yet; an untimed `plan` checks
that the adoption plans "No changes" (and fills the parse cache, as any earlier run would have). Only
`plan --refresh` is timed. Apply runs declare new tenants (a prefix per run, so that every run creates accounts
the sandbox does not know) and defer the sign-ins: accounts and account connectors are created, exit 3.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import generate as gen
import httpx
from run_support import (
    BenchError,
    Row,
    Sample,
    checked,
    error_row,
    fmt_s,
    log,
    median,
    own_cpu,
    run_once,
    show_times,
)

if TYPE_CHECKING:
    from run import Bench

PARTNER_ID = "bench-partner"
PARTNER_SECRET = "bench-cyclr-partner-secret-0c4e7a91"
CONNECTOR = "Microsoft Azure DevOps"
SCOPES = "vso.work_full vso.project"


def cyclr_env(bench: Bench) -> dict[str, str]:
    return {**bench.env, "CYCLR_CLIENT_SECRET": PARTNER_SECRET}


def root_yaml(url: str, *, include: bool) -> str:
    return f"""\
version: 1
platform:
  type: cyclr
  service_domain: app-h.example.com
  endpoints: {{api_url: "{url}", service_url: "{url}"}}
  client_id: {PARTNER_ID}
  client_secret: ${{env:CYCLR_CLIENT_SECRET}}
partners:
  microsoft-azure-devops: {{auth: entra-id, tenant_id: organizations}}
""" + ("include: [tenants/*.yaml]\n" if include else "tenants: {}\n")


def tenant_yaml(tenant: str, per_tenant: int) -> str:
    lines = ["tenants:", f"  {tenant}:", f"    account: {{name: {tenant} Ltd}}", "    installations:"]
    for i in range(per_tenant):
        lines += [f"      ado-{i:02d}:", "        connector: microsoft-azure-devops",
                  f"        parameters: {{organization: org-{tenant}, project: Project-{i:02d}}}",
                  f"        scopes: [{', '.join(SCOPES.split())}]"]
    return "\n".join(lines) + "\n"


def _partner(bench: Bench, http: httpx.Client) -> None:
    answer = http.post(f"{bench.url}/_sandbox/cyclr/partner", json={"client_id": PARTNER_ID, "client_secret": PARTNER_SECRET})
    if answer.status_code >= 300:
        raise BenchError(f"sandbox: partner credentials refused ({answer.status_code})")


# -- plan --refresh ----------------------------------------------------------------------------------------------


def make_estate(bench: Bench) -> tuple[Path, list[str], list[list[str]]]:
    """The accounts and account connectors on the sandbox, adopted into a configuration directory: (the directory,
    account ids, [account id, account connector id] pairs)."""
    shape, directory = bench.shape, bench.work / "cyclr-refresh"
    accounts: list[str] = []
    connectors: list[list[str]] = []
    with httpx.Client(timeout=30.0) as http:
        _partner(bench, http)
        for t in range(shape.tenants):
            tenant = f"t{t:05d}"
            body = {"id": tenant, "name": f"Tenant {t}", "connectors": [
                {"connector": CONNECTOR, "name": f"ado-{i:02d}", "authentication_id": 31, "authenticated": True,
                 "properties": {"Organization": f"org-{tenant}", "Project": f"Project-{i:02d}", "Scopes": SCOPES}}
                for i in range(shape.per_tenant)
            ]}
            answer = http.post(f"{bench.url}/_sandbox/cyclr/accounts", json=body)
            if answer.status_code >= 300:
                raise BenchError(f"sandbox: account {tenant} refused ({answer.status_code}): {answer.text[:200]}")
            made = answer.json()["accounts"][0]
            accounts.append(str(made["Id"]))
            connectors += [[str(made["Id"]), str(c)] for c in made["Connectors"]]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "reconciler.yaml").write_text(root_yaml(bench.url, include=False))
    env = cyclr_env(bench)
    adopted = shape.tenants + shape.installations
    checked(run_once([*bench.reconciler, "-C", str(directory), "import", "--write", "tenants"], env=env),
            "reconciler import", lambda s: None if f"Import complete: {adopted} adopted" in s.stdout else
            f"expected \"Import complete: {adopted} adopted\"")
    (directory / "reconciler.yaml").write_text(root_yaml(bench.url, include=True))
    checked(run_once([*bench.reconciler, "-C", str(directory), "plan"], env=env), "plan after import",
            lambda s: None if "No changes" in s.stdout else "the adopted estate does not plan \"No changes\"")
    return directory, accounts, connectors


def cyclr_refresh(bench: Bench) -> None:
    p, shape = bench.args.parallelism, bench.shape
    requests = 1 + shape.tenants + shape.installations
    name = (f"`plan --refresh` (cyclr) of {shape.installations:,} installs in {shape.tenants:,} accounts at "
            f"--parallelism {p} vs raw httpx")
    try:
        started = time.perf_counter()
        directory, accounts, connectors = make_estate(bench)
        log(f"  estate: {len(accounts):,} accounts, {len(connectors):,} account connectors, imported "
            f"({time.perf_counter() - started:.1f} s)")
        jobs = bench.work / "raw-cyclr.json"
        jobs.write_text(json.dumps({"api_url": bench.url, "client_id": PARTNER_ID, "client_secret": PARTNER_SECRET,
                                    "accounts": accounts, "connectors": connectors}))
        cmd = [*bench.reconciler, "-C", str(directory), "plan", "--refresh", "--parallelism", str(p)]
        raw_cmd = [sys.executable, str(Path(__file__).resolve().parent / "raw_cyclr.py"), str(jobs), "--passes", "1",
                   "--concurrency", str(p)]
        ours: list[Sample] = []
        raw: list[float] = []
        raw_cpu: list[float] = []
        served = raw_served = 0.0
        for _ in range(bench.runs()):  # interleaved: machine drift hits both alike
            busy = own_cpu()
            ours.append(checked(run_once(cmd, env=cyclr_env(bench), timeout=bench.args.refresh_timeout),
                                "plan --refresh (cyclr)",
                                lambda s: None if "No changes" in s.stdout else "the plan is not \"No changes\""))
            served += own_cpu() - busy
            busy = own_cpu()
            answer = checked(run_once(raw_cmd, env=bench.env, timeout=bench.args.refresh_timeout), "raw httpx (cyclr)")
            raw_served += own_cpu() - busy
            result = json.loads(answer.stdout.strip().splitlines()[-1])
            if result["errors"] or result["requests"] != requests:
                raise BenchError(f"raw httpx (cyclr): {result['errors']} failed of {result['requests']} requests")
            raw += result["times"]
            raw_cpu += result["cpu"]
    except BenchError as exc:
        bench.rows.append(error_row(name, ">= 70 % of raw rate", exc))
        return
    show_times("reconciler plan --refresh (cyclr)", ours)
    t_ours, t_raw = median(ours), statistics.median(raw)
    log(f"  raw httpx: {', '.join(f'{t:.3f}' for t in raw)} s -> median {fmt_s(t_raw)}")
    load = (f"sandbox busy {served / sum(s.seconds for s in ours):.0%} of a core during ours and "
            f"{raw_served / sum(raw):.0%} during raw; client CPU per request: ours "
            f"{1000 * statistics.median(s.cpu for s in ours) / requests:.2f} ms (whole process), raw "
            f"{1000 * statistics.median(raw_cpu) / requests:.2f} ms")
    log(f"  {load}")
    share = t_raw / t_ours
    bench.rows.append(Row(
        name, f"{fmt_s(t_ours)} ({requests / t_ours:,.0f} requests/s)", f"{fmt_s(t_raw)} ({requests / t_raw:,.0f} requests/s)",
        f"{share:.0%} of raw rate", ">= 70 %", "PASS" if share >= 0.70 else "FAIL",
        [(f"{requests:,} requests per run: the partner token, one GET per account and one per account connector; "
          f"the raw baseline (bench/raw_cyclr.py, {p} threads, one httpx client per thread) sends exactly those"),
         ("estate made through the sandbox's console route, adopted with `reconciler import --write tenants`, "
          "checked \"No changes\" by an untimed plan (which also fills the parse cache); the timed plan --refresh "
          "must again say \"No changes\""),
         ("ours is the whole CLI run (start-up, configuration, state, plan and output); the raw figure is its request "
          f"loop alone, start-up excluded; runs interleaved, median of {len(ours)} each"),
         load],
    ))


# -- apply of new installs -----------------------------------------------------------------------------------------


def write_apply_config(bench: Bench, directory: Path, tenants: int, per_tenant: int, prefix: str) -> None:
    (directory / "tenants").mkdir(parents=True, exist_ok=True)
    (directory / "reconciler.yaml").write_text(root_yaml(bench.url, include=True))
    for t in range(tenants):
        tenant = f"{prefix}t{t:05d}"
        (directory / "tenants" / f"{tenant}.yaml").write_text(tenant_yaml(tenant, per_tenant))


def apply_runs(bench: Bench, tenants: int, per_tenant: int, *, runs: int, label: str) -> list[Sample]:
    """Applies creating `tenants` new accounts of `per_tenant` new installs each, each run in a fresh directory."""
    n = tenants * per_tenant
    what = f"apply of {n:,} new installs (cyclr, defer)"
    samples = []
    for index in range(runs):
        directory = bench.work / f"cyclr-apply-{label}-{index}"
        write_apply_config(bench, directory, tenants, per_tenant, f"{label}{index}-")
        before = (len(bench.sandbox.cyclr.accounts), len(bench.sandbox.cyclr.account_connectors))
        sample = run_once([*bench.reconciler, "-C", str(directory), "apply", "--auto-approve", "--auth-mode", "defer"],
                          env=cyclr_env(bench), timeout=bench.args.apply_timeout)
        if sample.timed_out or sample.rc != 3:
            checked(sample, what)
            raise BenchError(f"{what}: exit code {sample.rc}, expected 3")
        after = (len(bench.sandbox.cyclr.accounts), len(bench.sandbox.cyclr.account_connectors))
        if (after[0] - before[0], after[1] - before[1]) != (tenants, n):
            raise BenchError(f"{what}: the sandbox gained {after[0] - before[0]} accounts and "
                             f"{after[1] - before[1]} account connectors, expected {tenants} and {n}")
        samples.append(sample)
    return samples


def cyclr_apply(bench: Bench) -> None:
    # Issue 14's sizes: 1,000 new installs vs 100 at scale 1 (100 and 10 accounts of 10).
    big = gen.Shape(max(1, round(100 * bench.args.scale)), bench.shape.per_tenant)
    small = gen.Shape(max(1, round(10 * bench.args.scale)), bench.shape.per_tenant)
    name = (f"`apply --auto-approve --auth-mode defer` (cyclr) of {big.installations:,} new installs vs "
            f"{small.installations:,}")
    target = "10x +- 30 %"
    try:
        with httpx.Client(timeout=30.0) as http:
            _partner(bench, http)
        sizes = (("one", gen.Shape(1, 1)), ("s", small), ("b", big))
        runs: dict[str, list[Sample]] = {label: [] for label, _ in sizes}
        for index in range(max(bench.runs(), 10)):  # interleaved (drift hits every size alike); cheap and noisy
            for label, shape in sizes:
                runs[label] += apply_runs(bench, shape.tenants, shape.per_tenant, runs=1, label=f"{label}{index}")
        for label, shape in sizes:
            show_times(f"apply {shape.installations:,} new install(s) (cyclr)", runs[label])
    except BenchError as exc:
        bench.rows.append(error_row(name, target, exc))
        return
    t_one, t_small, t_big = (median(runs[label]) for label in ("one", "s", "b"))
    ratio, whole = (t_big - t_one) / (t_small - t_one), t_big / t_small
    expected = (big.installations - 1) / (small.installations - 1)
    bench.rows.append(Row(
        name, f"{fmt_s(t_big)} ({fmt_s(t_big - t_one)} net)",
        f"{fmt_s(t_small)} ({fmt_s(t_small - t_one)} net; {small.installations:,} new installs)",
        f"{ratio:.2f}x net ({whole:.2f}x whole)", target,
        "PASS" if 0.7 * expected <= ratio <= 1.3 * expected else "FAIL",
        [(f"{big.tenants:,} and {small.tenants:,} new accounts with {big.per_tenant} installs each, against the "
          "sandbox: accounts and account connectors created, sign-ins deferred (exit 3); checked on the sandbox "
          "after each run; each run in a fresh directory with tenants no earlier run created"),
         (f"net: minus the apply of one new install in one new account ({fmt_s(t_one)}: start-up, the HTTP stack's "
          "imports, the partner token, the connector list, a new state), which no count of installs divides; the "
          f"target is of the net ratio ({expected:.2f}x expected for {big.installations - 1:,} vs "
          f"{small.installations - 1:,} installs beyond that one)"),
         (f"median of {len(runs['s'])} runs of each size, interleaved (seconds each, and noisy: at least 10; "
          "--runs, not --apply-runs)")],
    ))
