#!/usr/bin/env bash
# The quickstart end to end against the sandbox provider: validate, plan, apply (with real OAuth round trips),
# inspect state, plan again. Run from the repository root: `make demo` (or `bash examples/quickstart/demo.sh`).
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$PWD/.venv/bin:$PATH"
export ADO_CLIENT_ID="${ADO_CLIENT_ID:-3f2a1b7c-5d4e-4f60-8a9b-0c1d2e3f4a5b}"
export ADO_CLIENT_SECRET="${ADO_CLIENT_SECRET:-sandbox-demo-secret-not-a-real-one}"
dir=examples/quickstart

say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

rm -rf "$dir/state"   # a fresh demo every time (this is the example's own local state)
reconciler sandbox serve --port 8765 --seed "$dir/sandbox.yaml" &
sandbox=$!
trap 'kill $sandbox 2>/dev/null || true' EXIT
python -c 'import time, urllib.request as u
for _ in range(100):
    try: u.urlopen("http://127.0.0.1:8765/_sandbox/health", timeout=1); break
    except OSError: time.sleep(0.1)' 

say reconciler -C $dir validate
reconciler -C $dir validate

say reconciler -C $dir plan
reconciler -C $dir plan

# Consent without a person: BROWSER is a scripted user agent that opens the authorization URL, clicks Approve
# on the sandbox consent page and follows the redirect to reconciler's loopback listener — the same path a
# browser takes. Nothing is bypassed: authorization URL -> consent -> redirect with code -> token exchange.
say 'BROWSER="reconciler sandbox approve %s" reconciler -C' $dir apply --auto-approve --auth-mode browser
BROWSER="reconciler sandbox approve %s" reconciler -C $dir apply --auto-approve --auth-mode browser

say reconciler -C $dir state show installation.acme.ado-main
reconciler -C $dir state show installation.acme.ado-main

say reconciler -C $dir plan --detailed-exitcode
reconciler -C $dir plan --detailed-exitcode
echo
echo "Tokens are sealed (AES-256-GCM) in $dir/state/default.credentials/; the key is $dir/state/default.key."
