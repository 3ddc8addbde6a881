#!/usr/bin/env bash
# examples/cyclr end to end against the sandbox, which speaks the Cyclr API: adopt the account that exists already
# (`reconciler import`), plan, apply (an account created, an account connector installed and signed in through
# the platform's sign-in link), plan again with a refresh. `make demo` runs it after the quickstart; on its own:
# `bash examples/cyclr/demo.sh` from the repository root.
set -euo pipefail
. "$(dirname "$0")/../quickstart/env.sh"   # PATH and start_sandbox
dir=examples/cyclr
port=$(sandbox_port "$dir")
# The partner API client (Console > Settings > OAuth Client Credentials on the real service) and the Application
# Connector Library's app, both as the sandbox is seeded with them (sandbox.yaml).
export CYCLR_CLIENT_ID="${CYCLR_CLIENT_ID:-sandbox-partner}"
export CYCLR_CLIENT_SECRET="${CYCLR_CLIENT_SECRET:-sandbox-cyclr-secret-not-a-real-one}"
export CYCLR_LIBRARY_CLIENT_ID="${CYCLR_LIBRARY_CLIENT_ID:-sandbox-library-app}"
export CYCLR_LIBRARY_CLIENT_SECRET="${CYCLR_LIBRARY_CLIENT_SECRET:-sandbox-library-secret-not-a-real-one}"

say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

# A fresh run every time: the sandbox keeps its accounts in memory, so forget what an earlier run recorded and the
# tenant file its import wrote (git-ignored).
rm -rf "$dir/state" "$dir/tenants/globex.yaml"
printf '\n\033[1m== %s: the Cyclr platform ==\033[0m\n' "$dir"
start_sandbox

say reconciler -C $dir import --dry-run
reconciler -C $dir import --dry-run

say reconciler -C $dir import --write tenants
reconciler -C $dir import --write tenants

say reconciler -C $dir plan
reconciler -C $dir plan

# The sign-in runs through the platform: apply asks the API for a one-use sign-in link and opens it; the scripted
# user agent follows it to the sandbox's consent page, approves, and lands back on apply's loopback listener.
say 'BROWSER="reconciler sandbox approve %s" reconciler -C' $dir apply --auto-approve --auth-mode browser
BROWSER="reconciler sandbox approve %s" reconciler -C $dir apply --auto-approve --auth-mode browser

say reconciler -C $dir state show installation.acme.ado-main
reconciler -C $dir state show installation.acme.ado-main

say reconciler -C $dir plan --refresh --detailed-exitcode
reconciler -C $dir plan --refresh --detailed-exitcode
echo
echo "Cyclr holds the tokens (granted scopes: \"held by the platform\"); $dir/state/ records the accounts and"
echo "account connectors. README.md's \"Cyclr\" section takes the same steps against a real Cyclr partner."
