#!/usr/bin/env bash
# `make sandbox`: the quickstart's sandbox provider in the foreground (Ctrl-C stops it), and the lines to paste into
# another terminal to follow README.md's tour against it.
set -euo pipefail
. "$(dirname "$0")/env.sh"

rm -rf "$dir/state"   # what an earlier sandbox granted means nothing to this one: start the tour from no state
start_sandbox
cat <<PASTE
Sandbox provider listening on http://127.0.0.1:$port with $dir/sandbox.yaml (Ctrl-C to stop); $dir/state/ removed.
In another terminal, paste:

  cd $root && . .venv/bin/activate
  export ADO_CLIENT_ID=$ADO_CLIENT_ID ADO_CLIENT_SECRET=$ADO_CLIENT_SECRET
  export BROWSER="reconciler sandbox approve %s"   # clicks Approve on the sandbox consent page

then follow README.md's tour: every command there uses -C $dir (its state: $dir/state/).
PASTE
wait "$sandbox_pid"
