"""The cyclr-refresh row's baseline: plain httpx doing the same wire work as `reconciler plan --refresh` on the cyclr
platform, at the same concurrency.

Per pass, exactly what the reconciler sends: one partner token (`POST /oauth/token`, client credentials), then one
`GET /v1.0/accounts/{id}` per account and one `GET /v1.0/account/connectors/{id}` (with `X-Cyclr-Account`) per
account connector, the accounts first, each answer's JSON decoded. No configuration, no state, no plan: the rate a
client that does nothing but HTTP reaches against the same sandbox. Each worker thread has its own httpx client,
as the reconciler's have (one client shared by 32 threads costs more CPU in httpcore's pool than the requests
do): the fastest plain httpx loop, so the comparison is the strict one.

Run in its own process (so the sandbox, served by the benchmark process, does not share a GIL with it):
  python bench/raw_cyclr.py JOBS.json --passes 5 --concurrency 32
JOBS.json: {"api_url", "client_id", "client_secret", "accounts": [id, ...], "connectors": [[account id,
account connector id], ...]}. Prints one JSON line: {"times": [seconds per pass], "requests": n per pass,
"errors": n, "cpu": [CPU seconds per pass]}.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

import httpx


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("jobs")
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args(argv)
    with open(args.jobs) as handle:
        jobs = json.load(handle)
    api = jobs["api_url"].rstrip("/")
    local = threading.local()
    clients: list[httpx.Client] = []
    lock = threading.Lock()

    def client() -> httpx.Client:
        mine = getattr(local, "client", None)
        if mine is None:
            mine = local.client = httpx.Client(timeout=30.0)
            with lock:
                clients.append(mine)
        return mine

    def get(path: str, headers: dict[str, str]) -> int:
        reply = client().get(api + path, headers=headers)
        if reply.status_code != 200 or "json" not in reply.headers.get("content-type", ""):
            return 1
        reply.json()
        return 0

    def one_pass(pool: ThreadPoolExecutor) -> int:
        form = {"grant_type": "client_credentials", "client_id": jobs["client_id"], "client_secret": jobs["client_secret"]}
        token = client().post(api + "/oauth/token", data=form, headers={"Accept": "application/json"})
        token.raise_for_status()
        bearer = {"Authorization": f"Bearer {token.json()['access_token']}", "Accept": "application/json"}
        bad = sum(pool.map(lambda a: get(f"/v1.0/accounts/{quote(a, safe='')}", bearer), jobs["accounts"]))
        return bad + sum(pool.map(
            lambda c: get(f"/v1.0/account/connectors/{quote(str(c[1]), safe='')}", {**bearer, "X-Cyclr-Account": c[0]}),
            jobs["connectors"],
        ))

    errors, times, cpus = 0, [], []
    with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
        for _ in range(args.passes):
            started, cpu = time.perf_counter(), time.process_time()
            errors += one_pass(pool)
            times.append(time.perf_counter() - started)
            cpus.append(time.process_time() - cpu)
    for mine in clients:
        mine.close()
    requests = 1 + len(jobs["accounts"]) + len(jobs["connectors"])
    print(json.dumps({"times": times, "cpu": cpus, "requests": requests, "errors": errors}))
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
