"""The refresh row's baseline: plain httpx doing the same wire work as `reconciler refresh`, at the same concurrency.

Per token, exactly what reconciler sends for an Azure DevOps OAuth installation whose token is due: the refresh POST
(assertion form, rotated tokens taken from the answer), then the two verification GETs with the new access token
(`<org>/_apis/connectionData`, `<org>/_apis/projects/<project>?api-version=7.1`). No state, no sealing, no
configuration: the rate a client that does nothing but HTTP reaches against the same sandbox.

Run in its own process (so the sandbox, served by the benchmark process, does not share a GIL with it):
  python bench/raw_refresh.py JOBS.json --passes 5 --concurrency 32
JOBS.json: {"token_url", "api_url", "client_secret", "redirect_uri", "items": [{"refresh_token", "organization",
"project"}, ...]}. Prints one JSON line: {"times": [seconds per pass], "requests": n per pass, "errors": n, "cpu": [CPU seconds per pass]}.
Each pass uses the refresh tokens the previous pass received (they rotate), like successive `refresh` runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

import httpx

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("jobs")
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args(argv)
    with open(args.jobs) as handle:
        jobs = json.load(handle)
    items = jobs["items"]
    api = jobs["api_url"].rstrip("/")
    errors = 0
    times: list[float] = []
    cpus: list[float] = []  # this process's CPU seconds per pass
    limits = httpx.Limits(max_connections=args.concurrency)
    with httpx.Client(timeout=30.0, limits=limits) as http:

        def one(item: dict[str, str]) -> int:
            form = {
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": jobs["client_secret"],
                "grant_type": "refresh_token",
                "assertion": item["refresh_token"],
                "redirect_uri": jobs["redirect_uri"],
            }
            bad = 0
            response = http.post(jobs["token_url"], data=form)
            if response.status_code != 200:
                return 3
            body = response.json()
            item["refresh_token"] = body["refresh_token"]
            headers = {"Authorization": f"Bearer {body['access_token']}", "Accept": "application/json"}
            org = quote(item["organization"], safe="")
            for path in (f"{org}/_apis/connectionData", f"{org}/_apis/projects/{quote(item['project'], safe='')}?api-version=7.1"):
                reply = http.get(f"{api}/{path}", headers=headers)
                if reply.status_code != 200 or "json" not in reply.headers.get("content-type", ""):
                    bad += 1
                else:
                    reply.json()
            return bad

        with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
            for _ in range(args.passes):
                started, cpu = time.perf_counter(), time.process_time()
                errors += sum(pool.map(one, items))
                times.append(time.perf_counter() - started)
                cpus.append(time.process_time() - cpu)
    print(json.dumps({"times": times, "cpu": cpus, "requests": 3 * len(items), "errors": errors}))
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
