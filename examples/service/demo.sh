#!/usr/bin/env bash
# examples/service end to end against the sandbox: apply defers the sign-ins (exit 3, a link per tenant),
# `reconciler serve` completes them as each tenant's admin opens their link (a scripted user here), the plan
# converges, the runtime reads a fresh token through the token API, and the service stops on SIGTERM.
# `make demo` runs it after the quickstart; on its own: `bash examples/service/demo.sh` from the repository root.
set -euo pipefail
. "$(dirname "$0")/../quickstart/env.sh"   # PATH, the sandbox app's credentials and start_sandbox
dir=examples/service
port=$(sandbox_port "$dir")
service=$(sed -n 's|^ *public_url: *\(http://[^ ]*\).*|\1|p' "$dir/reconciler.yaml" | head -n 1)   # 127.0.0.1:8767
export DEMO_API_KEY="${DEMO_API_KEY:-demo-api-key-not-a-real-one}"

say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

rm -rf "$dir/state" && mkdir -p "$dir/state"   # a fresh run every time: the sandbox keeps its grants in memory
printf '\n\033[1m== %s: the authorization service ==\033[0m\n' "$dir"
start_sandbox

say reconciler -C $dir apply --auto-approve --auth-mode defer
status=0
reconciler -C $dir apply --auto-approve --auth-mode defer > "$dir/state/apply.out" || status=$?
cat "$dir/state/apply.out"
[[ $status == 3 ]] || { echo "error: apply exited $status, expected 3 (sign-ins pending)" >&2; exit 1; }

say reconciler -C $dir serve --listen "${service#http://}" '&'
reconciler -C $dir serve --listen "${service#http://}" 2> "$dir/state/serve.log" &
serve_pid=$!
trap 'status=$?; kill "$serve_pid" "$sandbox_pid" 2>/dev/null; wait 2>/dev/null; exit $status' EXIT
for _ in $(seq 100); do curl -fs "$service/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fs "$service/healthz" >/dev/null || { cat "$dir/state/serve.log" >&2; echo "error: the service did not start" >&2; exit 1; }

# Each tenant's admin opens their link; the sandbox's scripted user approves the consent page.
for link in $(grep -o "$service/authorize/[^ ]*" "$dir/state/apply.out"); do
  say reconciler sandbox approve "'${link%%\?*}?sig=…'"
  reconciler sandbox approve "$link"
done

say reconciler -C $dir plan --detailed-exitcode
reconciler -C $dir plan --detailed-exitcode

say curl -H "'Authorization: Bearer \$DEMO_API_KEY'" $service/v1/installations/installation.acme.ado-main/token
curl -fs -H "Authorization: Bearer $DEMO_API_KEY" "$service/v1/installations/installation.acme.ado-main/token" \
  | python3 -c 'import json, sys; d = json.load(sys.stdin); print(json.dumps({**d, "access_token": "<%d characters>" % len(d["access_token"])}))'

say reconciler -C $dir audit
reconciler -C $dir audit

say kill -TERM '$serve_pid'
kill -TERM "$serve_pid"
wait "$serve_pid" && echo "the service stopped (exit 0)"
echo
echo "Both tenants signed in through their links; the service's log lines are JSON ($dir/state/serve.log)."
