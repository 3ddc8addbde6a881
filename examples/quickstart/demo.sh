#!/usr/bin/env bash
# The quickstart end to end against the sandbox provider: validate, plan, apply (with real OAuth round trips),
# inspect state, plan again. Run from the repository root: `make demo` (or `bash examples/quickstart/demo.sh`).
set -euo pipefail
. "$(dirname "$0")/env.sh"

say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

rm -rf "$dir/state"   # a fresh demo every time (this is the example's own local state)
start_sandbox

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

say reconciler -C $dir status
reconciler -C $dir status
echo
echo "Tokens are sealed (AES-256-GCM) in $dir/state/default.credentials/; the key is $dir/state/default.key."
echo "To keep playing: \`make sandbox\` (it prints what to paste into another terminal), then follow README.md's tour."
