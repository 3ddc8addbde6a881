# Sourced by demo.sh, sandbox.sh and ../cyclr/demo.sh (not run on its own): the quickstart's environment — the
# repository's .venv on PATH, the sandbox app's credentials, the port its endpoints name — and how to start the
# sandbox provider for a configuration directory ($dir).
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
root=$PWD
export PATH="$root/.venv/bin:$PATH"
export ADO_CLIENT_ID="${ADO_CLIENT_ID:-3f2a1b7c-5d4e-4f60-8a9b-0c1d2e3f4a5b}"
export ADO_CLIENT_SECRET="${ADO_CLIENT_SECRET:-sandbox-demo-secret-not-a-real-one}"
dir=examples/quickstart
# The sandbox's port is the one the endpoints in a configuration directory's reconciler.yaml name (the quickstart's:
# 8765; its redirect_uri's is 8766).
sandbox_port() { sed -n 's|^ *api_url: *http://127\.0\.0\.1:\([0-9]*\).*|\1|p' "$1/reconciler.yaml" | head -n 1; }
port=$(sandbox_port "$dir")

# Start the sandbox provider on $port with $dir/sandbox.yaml as its seed; return once it listens, seeded. Its first
# line says so; any other first line (the port is taken, a bad seed) is its error, and then this fails, so that nothing
# ever runs against whatever else holds the port. The sandbox is stopped when the calling script exits.
start_sandbox() {
  exec {sandbox_out}< <(exec reconciler sandbox serve --port "$port" --seed "$dir/sandbox.yaml" 2>&1)
  sandbox_pid=$!
  # Gone when the script exits, which keeps its status (`wait` answers 143 for the killed sandbox: not an error).
  trap 'status=$?; kill "$sandbox_pid" 2>/dev/null && { wait "$sandbox_pid" 2>/dev/null || true; }; exit $status' EXIT
  trap 'exit 130' INT; trap 'exit 143' TERM   # run the EXIT trap on Ctrl-C and kill too
  local first=""
  IFS= read -r first <&"$sandbox_out" || true
  if [[ $first != "Sandbox provider listening on http://127.0.0.1:$port "* ]]; then
    { [[ -z $first ]] || echo "$first"; cat <&"$sandbox_out"; } >&2
    echo "error: the sandbox provider could not start on 127.0.0.1:$port, which $dir/reconciler.yaml points at" >&2
    echo "hint: is \`make sandbox\` or another demo still running? Stop it (or whatever holds port $port) and retry" >&2
    exit 1
  fi
}
