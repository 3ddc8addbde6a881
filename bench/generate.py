"""Benchmark data for issue 5: N tenants x M installations, one YAML file per tenant, with a matching state.

What `generate()` writes into a directory (default 1,000 tenants x 10 installations = 10,000):

  reconciler.yaml          one partner `microsoft-azure-devops` (auth azure-devops-oauth, literal client_id,
                           client_secret ${env:BENCH_SECRET}, endpoints at the sandbox URL), include: [tenants/*.yaml]
  tenants/tNNNNN.yaml      one tenant, M installations (organization org-tNNNNN, project Project-NN)
  state/default.json       the recorded state, built with reconciler's own models and written by its LocalBackend,
                           so that `reconciler plan` says "No changes"
  state/default.credentials/<address>.json
                           sealed tokens for every installation (Vault + LocalCredentialStore, key
                           RECONCILER_STATE_KEY = BENCH_STATE_KEY below). With a sandbox `Provider`, the tokens are
                           grants registered in it (so `reconciler refresh` works against that sandbox); without
                           one they are random strings (enough for plan and for deletes)

Variants (same state, different YAML):
  changed=0.01             every 100th installation's project is renamed (-> "update" in the plan)
  keep_installations=False every tenant file keeps its tenant but declares no installation (-> apply deletes all)

Use as a library (bench/run.py does, with a sandbox it runs in its own process), or standalone:

  .venv/bin/python bench/generate.py /tmp/bench10k --sandbox-port 8799          # writes DIR and DIR/.bench/
  .venv/bin/python bench/generate.py --serve /tmp/bench10k                      # serves the sandbox it needs
  BENCH_SECRET=... RECONCILER_STATE_KEY=... (see `--env`) .venv/bin/reconciler -C /tmp/bench10k plan

Standalone, the sandbox's grants (tokens in plain text: benchmark data only) are saved in DIR/.bench/sandbox.json,
and `--serve` restores them into a fresh sandbox on the same port.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import os
import secrets
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pydantic import SecretStr

from reconciler.config import load_config
from reconciler.crypto import load_state_key
from reconciler.sandbox.model import LEGACY, Grant
from reconciler.sandbox.provider import Provider
from reconciler.sandbox.tokens import ACCESS_LIFETIME
from reconciler.state.local import LocalBackend
from reconciler.state.model import StateDocument
from reconciler.state.records import installation_record, partner_record
from reconciler.tokens.custodian import TokenCustodian
from reconciler.tokens.model import TokenSet
from reconciler.tokens.store import LocalCredentialStore
from reconciler.tokens.vault import Vault

PARTNER = "microsoft-azure-devops"
CLIENT_ID = "b3nch000-0000-4000-8000-000000000001"
BENCH_SECRET = "bench-client-secret-5a7e1c9d3f"
BENCH_STATE_KEY = base64.b64encode(b"reconciler-bench-state-key-32byt").decode()
SCOPES = ("vso.work_full", "vso.project")  # vso.project: refresh also checks the project (2 GETs per token)
USER = "bench.user@example.com"
ENVIRONMENT = "default"
CALLBACK_PORT = 8400


def bench_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment every reconciler run of the benchmark gets: the secret, the fixed state key, no colour."""
    env = dict(os.environ if base is None else base)
    for name in ("RECONCILER_ENV", "RECONCILER_STATE_PASSPHRASE", "RECONCILER_DEBUG"):
        env.pop(name, None)
    env.update({"BENCH_SECRET": BENCH_SECRET, "RECONCILER_STATE_KEY": BENCH_STATE_KEY, "NO_COLOR": "1"})
    return env


def redirect_uri(callback_port: int = CALLBACK_PORT) -> str:
    return f"http://127.0.0.1:{callback_port}/callback"


def tenant_name(t: int) -> str:
    return f"t{t:05d}"


def organization(t: int) -> str:
    return f"org-{tenant_name(t)}"


def installation_name(i: int) -> str:
    return f"ado-{i:02d}"


def project(i: int, changed: bool) -> str:
    return f"Project-{i:02d}" + ("-v2" if changed else "")


def is_changed(t: int, i: int, per_tenant: int, changed: float) -> bool:
    """Deterministic selection: `changed` of the installations, spread evenly (every 1/changed-th one)."""
    if changed <= 0:
        return False
    step = max(1, round(1 / changed))
    return (t * per_tenant + i) % step == step - 1


@dataclass(frozen=True)
class Shape:
    tenants: int = 1000
    per_tenant: int = 10

    @property
    def installations(self) -> int:
        return self.tenants * self.per_tenant


# -- configuration ---------------------------------------------------------------------------------------------


def root_yaml(sandbox_url: str, callback_port: int) -> str:
    return f"""\
version: 1
platform: {{service_domain: app-h.example.com}}
partners:
  {PARTNER}:
    auth: azure-devops-oauth
    client_id: {CLIENT_ID}
    client_secret: ${{env:BENCH_SECRET}}
    redirect_uri: {redirect_uri(callback_port)}
    scopes: [{", ".join(SCOPES)}]
    endpoints:
      authorize_url: {sandbox_url}/oauth2/authorize
      token_url: {sandbox_url}/oauth2/token
      api_url: {sandbox_url}
include: [tenants/*.yaml]
"""


def tenant_yaml(t: int, per_tenant: int, *, changed: float, keep_installations: bool) -> str:
    name = tenant_name(t)
    if not keep_installations:
        return f"tenants:\n  {name}:\n    installations: {{}}\n"
    lines = ["tenants:", f"  {name}:", "    installations:"]
    for i in range(per_tenant):
        lines += [
            f"      {installation_name(i)}:",
            f"        connector: {PARTNER}",
            f"        parameters: {{organization: {organization(t)}, project: {project(i, is_changed(t, i, per_tenant, changed))}}}",
            f"        scopes: [{', '.join(SCOPES)}]",
        ]
    return "\n".join(lines) + "\n"


def write_config(
    directory: Path,
    shape: Shape,
    sandbox_url: str,
    *,
    callback_port: int = CALLBACK_PORT,
    changed: float = 0.0,
    keep_installations: bool = True,
) -> None:
    """reconciler.yaml and tenants/*.yaml (replacing any tenant files already there)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "reconciler.yaml").write_text(root_yaml(sandbox_url, callback_port))
    tenants = directory / "tenants"
    if tenants.exists():
        shutil.rmtree(tenants)
    tenants.mkdir()
    for t in range(shape.tenants):
        text = tenant_yaml(t, shape.per_tenant, changed=changed, keep_installations=keep_installations)
        (tenants / f"{tenant_name(t)}.yaml").write_text(text)


# -- sandbox ---------------------------------------------------------------------------------------------------


def register_sandbox(provider: Provider, shape: Shape, *, callback_port: int = CALLBACK_PORT) -> None:
    """The partner's app and every tenant's organization (with both the original and the renamed projects)."""
    if CLIENT_ID not in provider.apps:
        provider.register_app(
            {
                "client_id": CLIENT_ID,
                "client_secret": BENCH_SECRET,
                "flavour": LEGACY,
                "redirect_uris": [redirect_uri(callback_port)],
            }
        )
    projects = [p for i in range(shape.per_tenant) for p in (project(i, False), project(i, True))]
    for t in range(shape.tenants):
        provider.register_org(organization(t), projects)


def new_grant(provider: Provider, scopes: tuple[str, ...] = SCOPES) -> Grant:
    """A live grant, registered the way the provider's own code redemption does (`Provider._redeem`)."""
    app = provider.apps[CLIENT_ID]
    grant = Grant(
        id=secrets.token_hex(8),
        app=app,
        scopes=list(scopes),
        user=provider.user,
        access_token=f"sbx.at.{secrets.token_urlsafe(32)}",
        refresh_token=f"sbx.rt.{secrets.token_urlsafe(32)}",
        access_expires_at=dt.datetime.now(dt.UTC) + ACCESS_LIFETIME,
        redirect_uri=app.redirect_uris[0],
    )
    with provider.lock:
        provider.grants[grant.id] = grant
        provider.by_access[grant.access_token] = grant
        assert grant.refresh_token is not None
        provider.by_refresh[grant.refresh_token] = grant
    return grant


def dump_sandbox(provider: Provider, path: Path) -> None:
    """Apps, organizations and live grants, for `restore_sandbox` (benchmark data: tokens in plain text)."""
    with provider.lock:
        data = {
            "apps": [
                {"client_id": a.client_id, "client_secret": a.client_secret, "flavour": a.flavour,
                 "redirect_uris": a.redirect_uris}
                for a in provider.apps.values()
            ],
            "orgs": {org: sorted(projects) for org, projects in provider.orgs.items()},
            "grants": [
                {"id": g.id, "client_id": g.app.client_id, "scopes": g.scopes, "access_token": g.access_token,
                 "refresh_token": g.refresh_token, "access_expires_at": g.access_expires_at.isoformat(),
                 "redirect_uri": g.redirect_uri, "revoked": g.revoked}
                for g in provider.grants.values()
            ],
        }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    path.chmod(0o600)


def restore_sandbox(provider: Provider, path: Path) -> None:
    data = json.loads(path.read_text())
    for app in data["apps"]:
        provider.register_app(app)
    for org, projects in data["orgs"].items():
        provider.register_org(org, projects)
    with provider.lock:
        for g in data["grants"]:
            grant = Grant(
                id=g["id"], app=provider.apps[g["client_id"]], scopes=list(g["scopes"]), user=provider.user,
                access_token=g["access_token"], refresh_token=g["refresh_token"],
                access_expires_at=dt.datetime.fromisoformat(g["access_expires_at"]), redirect_uri=g["redirect_uri"],
                revoked=g["revoked"],
            )
            provider.grants[grant.id] = grant
            provider.by_access[grant.access_token] = grant
            if grant.refresh_token:
                provider.by_refresh[grant.refresh_token] = grant


# -- state -----------------------------------------------------------------------------------------------------


def write_state(directory: Path, provider: Provider | None, *, credentials: bool = True) -> int:
    """state/default.json matching the configuration in `directory` (loaded with reconciler's own loader), and
    sealed tokens for every installation. Returns the number of installations recorded."""
    env = bench_env()
    now = dt.datetime.now(dt.UTC)
    loaded = load_config(directory, environ=env, today=now.date())
    desired = loaded.desired
    state_dir = directory / "state"
    if state_dir.exists():
        shutil.rmtree(state_dir)
    backend = LocalBackend(state_dir, ENVIRONMENT)
    grants: dict[str, Grant | None] = {}
    resources: dict = {}
    for address, partner in desired.partners.items():
        resources[address] = partner_record(partner.declared)
    for address, desired_installation in desired.installations.items():
        installation = desired_installation.declared
        grant = new_grant(provider, installation.scopes) if provider is not None else None
        grants[address] = grant
        expires = grant.access_expires_at if grant else now + ACCESS_LIFETIME
        record = installation_record(
            installation, granted=installation.scopes, authorized_at=now, expires_at=expires, authorized_by=USER
        ).model_copy(update={"verified_at": now})
        resources[address] = record
    doc = StateDocument.new(ENVIRONMENT).with_resources(resources)
    with backend.lock("bench generate"):
        doc = backend.write(doc, expected_serial=None)
    if credentials:
        key = load_state_key(env, key_file=state_dir / "unused.key", salt_file=state_dir / "unused.kdf.json",
                             create=False, allow_key_file=False)
        assert key is not None
        vault = Vault(LocalCredentialStore(state_dir, ENVIRONMENT), key, lineage=doc.lineage, environment=ENVIRONMENT)
        for address, desired_installation in desired.installations.items():
            installation, grant = desired_installation.declared, grants[address]
            tokens = TokenSet(
                access_token=SecretStr(grant.access_token if grant else f"bench.at.{secrets.token_urlsafe(32)}"),
                refresh_token=SecretStr(grant.refresh_token if grant and grant.refresh_token
                                        else f"bench.rt.{secrets.token_urlsafe(32)}"),
                token_type="Bearer",
                expires_at=grant.access_expires_at if grant else now + ACCESS_LIFETIME,
                scope=(*installation.scopes, "vso.authorization_grant"),
            )
            TokenCustodian(vault).record_new(address, installation.client_id, tokens, lambda: None)
    return len(desired.installations)


def generate(
    directory: Path,
    shape: Shape,
    sandbox_url: str,
    provider: Provider | None,
    *,
    callback_port: int = CALLBACK_PORT,
    changed: float = 0.0,
    credentials: bool = True,
) -> int:
    """Configuration + matching state + sealed credentials; then, with `changed`, the YAML is rewritten with that
    share of projects renamed (the state still records the original ones). Returns the installation count."""
    if provider is not None:
        register_sandbox(provider, shape, callback_port=callback_port)
    write_config(directory, shape, sandbox_url, callback_port=callback_port)
    count = write_state(directory, provider, credentials=credentials)
    if changed:
        write_config(directory, shape, sandbox_url, callback_port=callback_port, changed=changed)
    return count


def changed_count(shape: Shape, changed: float) -> int:
    return sum(is_changed(t, i, shape.per_tenant, changed) for t in range(shape.tenants) for i in range(shape.per_tenant))


# -- terraform (the comparison row) ------------------------------------------------------------------------------


def write_terraform(directory: Path, shape: Shape) -> None:
    """The same installations as `terraform_data` resources, one .tf file per tenant, and a matching local state
    (terraform.tfstate in format 4, as `terraform apply` writes it for terraform_data) so `terraform plan` says
    "No changes" without a 10,000-resource apply first."""
    import uuid

    directory.mkdir(parents=True, exist_ok=True)
    object_type = ["object", {"organization": "string", "project": "string"}]
    resources = []
    for t in range(shape.tenants):
        blocks = []
        for i in range(shape.per_tenant):
            name = f"{tenant_name(t)}_{installation_name(i).replace('-', '_')}"
            value = {"organization": organization(t), "project": project(i, False)}
            blocks.append(
                f'resource "terraform_data" "{name}" {{\n'
                f'  input = {{ organization = "{value["organization"]}", project = "{value["project"]}" }}\n}}\n'
            )
            resources.append({
                "mode": "managed", "type": "terraform_data", "name": name,
                "provider": 'provider["terraform.io/builtin/terraform"]',
                "instances": [{
                    "schema_version": 0,
                    "attributes": {
                        "id": str(uuid.uuid4()),
                        "input": {"value": value, "type": object_type},
                        "output": {"value": value, "type": object_type},
                        "triggers_replace": None,
                    },
                    "sensitive_attributes": [],
                }],
            })
        (directory / f"{tenant_name(t)}.tf").write_text("\n".join(blocks))
    state = {"version": 4, "terraform_version": "1.11.4", "serial": 1, "lineage": str(uuid.uuid4()),
             "outputs": {}, "resources": resources, "check_results": None}
    (directory / "terraform.tfstate").write_text(json.dumps(state, indent=2))


# -- command line ----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--per-tenant", type=int, default=10, help="installations per tenant")
    parser.add_argument("--sandbox-port", type=int, default=8799, help="where the sandbox listens (see --serve)")
    parser.add_argument("--changed", type=float, default=0.0, help="share of projects renamed in the YAML (0.01 = 1%%)")
    parser.add_argument("--delete-all", action="store_true",
                        help="then declare no installations at all (apply deletes every one)")
    parser.add_argument("--no-credentials", action="store_true", help="skip the sealed tokens")
    parser.add_argument("--serve", action="store_true", help="serve the sandbox saved in DIR/.bench/sandbox.json")
    parser.add_argument("--env", action="store_true", help="print the environment variables the runs need")
    args = parser.parse_args(argv)
    if args.env:
        print(f"export BENCH_SECRET={BENCH_SECRET} RECONCILER_STATE_KEY={BENCH_STATE_KEY}")
        return 0
    saved = args.directory / ".bench" / "sandbox.json"
    if args.serve:
        from reconciler.sandbox import SandboxServer

        meta = json.loads((args.directory / ".bench" / "meta.json").read_text())
        server = SandboxServer("127.0.0.1", meta["sandbox_port"])
        restore_sandbox(server.provider, saved)
        print(f"sandbox for {args.directory} on {server.url} (Ctrl-C to stop)", file=sys.stderr)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.stop()
        return 0
    shape = Shape(args.tenants, args.per_tenant)
    provider = Provider(user=USER)
    started = time.perf_counter()
    url = f"http://127.0.0.1:{args.sandbox_port}"
    count = generate(args.directory, shape, url, provider, changed=args.changed,
                     credentials=not args.no_credentials)
    if args.delete_all:
        write_config(args.directory, shape, url, keep_installations=False)
    dump_sandbox(provider, saved)
    (args.directory / ".bench" / "meta.json").write_text(json.dumps({"sandbox_port": args.sandbox_port}))
    print(f"wrote {count} installations in {shape.tenants} tenant files to {args.directory} "
          f"in {time.perf_counter() - started:.1f} s; serve the sandbox with --serve, environment with --env")
    return 0


if __name__ == "__main__":
    sys.exit(main())
