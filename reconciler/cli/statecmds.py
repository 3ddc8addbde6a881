"""The state commands: `state list/show/rm/mv/pull/push/rekey`, `force-unlock`, and `audit` (the service's log).

Owns: those commands' options and what they print (never token material). Must not: hold state logic (the
application layer does that).
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import Any

import click

from reconciler.cli.group import EXIT_OK, GlobalGroup, GlobalOptions, cli, count, global_options
from reconciler.cli.options import (
    LOCK_TIMEOUT,
    duration,
    exact_address,
    globs_option,
    patterns,
    selection_options,
)
from reconciler.cli.views import iso, placed_fields, view
from reconciler.errors import UsageError, one_line


@cli.group(cls=GlobalGroup)
@global_options
def state() -> None:
    """Inspect recorded state (never token material)."""


@state.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of {address, kind, status, ...} (never tokens).")
@click.pass_obj
def state_list(opts: GlobalOptions, as_json: bool) -> int:
    """List the addresses recorded in state, with their status, its reason and when it was established.

    \b
    Examples:
      reconciler state list
      reconciler state list --json | jq -r '.[] | select(.status == "needs-reauthorization") | .address'
    """
    from reconciler.app.source import paused_gc

    with paused_gc():  # imports, reading and listing allocate much and free nothing in cycles (see `paused_gc`)
        from reconciler.app.statecmds import read_statuses

        doc, statuses = read_statuses(opts.workspace())
        text = view("json" if as_json else "text").listing(doc, statuses)
    click.echo(text, nl=False)
    return EXIT_OK


@state.command("show")
@click.argument("address", callback=exact_address(None))
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="text for a terminal, json for automation.")
@click.option("--json", "as_json", is_flag=True, hidden=True, help="Same as --format json.")
@click.pass_obj
def state_show(opts: GlobalOptions, address: str, fmt: str, as_json: bool) -> int:
    """Show one recorded address: status, requested and granted scopes, client id, times.

    \b
    Examples:
      reconciler state show installation.acme.ado-main
      reconciler state show installation.acme.ado-main --format json | jq .granted_scopes
    """
    from reconciler.app.statecmds import read_statuses
    from reconciler.state.model import InstallationRecord

    doc, statuses = read_statuses(opts.workspace())
    record = doc.resources.get(address) if doc else None
    if record is None:
        raise UsageError(f"{address} is not in state", hint="`reconciler state list` shows what is")
    data = record.model_dump(mode="json", exclude_none=True)
    if isinstance(record, InstallationRecord) and record.placement is not None:
        data = {k: v for k, v in data.items() if k not in ("placement", "account_connector")} | placed_fields(record)
    if address in statuses:  # the derived status replaces the recorded one; the expiry is the stored token's
        status = statuses[address]
        data["status"], data["reason"] = status.word, status.reason
        data["checked_at"] = iso(status.checked_at)
        data["expires_at"] = iso(status.expires_at)
        data = {k: v for k, v in data.items() if v is not None}
    click.echo(view("json" if as_json else fmt).record(address, data), nl=False)
    return EXIT_OK


@state.command("rm")
@click.argument("addresses", nargs=-1, callback=patterns)
@LOCK_TIMEOUT
@selection_options
@globs_option("--allow-delete", "Allow forgetting these protected installations (globs).")
@click.pass_obj
def state_rm(opts: GlobalOptions, addresses: tuple[str, ...], lock_timeout: float, target: tuple[str, ...],
             exclude: tuple[str, ...], allow_delete: tuple[str, ...]) -> int:
    """Forget addresses (globs) without revoking their tokens at the provider. A protected installation needs
    --allow-delete too.

    \b
    Examples:
      reconciler state rm installation.acme.old-board
      reconciler state rm --target 'installation.acme.*' --exclude installation.acme.ado-main
      reconciler state rm installation.acme.ado-main --allow-delete installation.acme.ado-main
    """
    from reconciler.app.statecmds import state_rm as remove

    if not addresses and not target:
        raise UsageError("state rm needs the addresses to forget", hint="give ADDRESS arguments or --target ADDRESS")
    removed = remove(opts.workspace(), [*addresses, *target], lock_timeout=lock_timeout, excludes=exclude,
                     allow_delete=allow_delete)
    for address in removed:
        click.echo(f"Removed {address}")
    return EXIT_OK


@state.command("mv")
@click.argument("old", callback=exact_address("installation"))
@click.argument("new", callback=exact_address("installation"))
@LOCK_TIMEOUT
@click.pass_obj
def state_mv(opts: GlobalOptions, old: str, new: str, lock_timeout: float) -> int:
    """Rename an installation in state without re-authorizing it (its tokens move with it).

    \b
    Examples:
      reconciler state mv installation.acme.ado installation.acme.ado-main
    """
    from reconciler.app.statecmds import state_mv as move

    move(opts.workspace(), old, new, lock_timeout=lock_timeout)
    click.echo(f"Moved {old} to {new}")
    return EXIT_OK


@state.command("pull")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@LOCK_TIMEOUT
@click.pass_obj
def state_pull(opts: GlobalOptions, directory: Path, lock_timeout: float) -> int:
    """Copy the configured backend's state, with its sealed credentials, into a local directory.

    \b
    Examples:
      reconciler state pull backup/
    """
    from reconciler.app.statecmds import state_pull as pull

    return _copied("Pulled", pull(opts.workspace(), directory, lock_timeout=lock_timeout), f" into {directory}")


@state.command("push")
@click.argument("directory", type=click.Path(file_okay=False, exists=True, path_type=Path))
@LOCK_TIMEOUT
@click.pass_obj
def state_push(opts: GlobalOptions, directory: Path, lock_timeout: float) -> int:
    """Copy local state (from `state pull`, or a local backend's directory) into the configured backend.

    Lineage and serial are kept; a backend holding another lineage, a newer serial, or the same serial with other
    contents is never overwritten. A credential record is copied only when it is a later generation than the
    backend's: newer ones there (tokens rotated after the copy was taken) are kept, and the output says which.

    \b
    Examples:
      reconciler state push state/     # move local state to the PostgreSQL backend named in reconciler.yaml
    """
    from reconciler.app.statecmds import state_push as push

    return _copied("Pushed", push(opts.workspace(), directory, lock_timeout=lock_timeout))


def _copied(verb: str, copy: Any, where: str = "") -> int:
    """What `state pull`/`state push` copied, and which records it kept from the destination."""
    doc = copy.doc
    click.echo(f"{verb} lineage {doc.lineage} serial {doc.serial} ({len(doc.resources)} resources){where}")
    for note in copy.notes():
        click.echo(note)
    return EXIT_OK


@state.command("rekey")
@click.option("--new-key-env", metavar="VAR",
              help="Name of the variable holding the new key: base64 of 32 bytes (openssl rand -base64 32).")
@click.option("--new-passphrase-env", metavar="VAR",
              help="Name of the variable holding a passphrase to derive the new key from (scrypt).")
@LOCK_TIMEOUT
@click.pass_obj
def state_rekey(opts: GlobalOptions, new_key_env: str | None, new_passphrase_env: str | None, lock_timeout: float) -> int:
    """Re-seal every stored credential under a new state key (key rotation).

    The current key is found as for every command (RECONCILER_STATE_KEY, RECONCILER_STATE_PASSPHRASE, or the
    key file state/<env>.key). The new one comes from the variable that --new-key-env or --new-passphrase-env
    names (a value never goes on the command line); without either, local state keyed by its key file gets a
    fresh key file. Under the state lock, record by record: interrupted, run the same command again to finish
    (other commands refuse the state until then). Afterwards only the new key opens the credentials; a retired
    key file is kept as <env>.key.old until you remove it.

    \b
    Examples:
      reconciler state rekey                                   # local state: a fresh state/default.key
      export RECONCILER_NEW_STATE_KEY="$(openssl rand -base64 32)"
      reconciler state rekey --new-key-env RECONCILER_NEW_STATE_KEY
    """
    from reconciler.app.rekey import NewKey, rekey_state

    rotation = rekey_state(opts.workspace(), NewKey(new_key_env, new_passphrase_env), lock_timeout=lock_timeout)
    for line in _rotation_report(rotation, NewKey(new_key_env, new_passphrase_env)):
        click.echo(line)
    return EXIT_OK


def _rotation_report(rotation: Any, new: Any) -> list[str]:
    """What `state rekey` did and what to do next: key ids, variable names and paths, never a key."""
    from reconciler.config.loader import display_path

    if not rotation.changed:
        records = count(len(rotation.already), "record")
        lines = [f"Nothing to re-key: every credential is sealed with key id {rotation.new_kid} ({records})."]
        if rotation.waiting_for is not None:
            lines.append(f"{display_path(rotation.waiting_for)} holds the key an earlier rotation retired: delete it "
                         "once no copy of the state (a pulled copy, a backup) needs it, to rotate again.")
        return lines
    resumed = f" ({len(rotation.already)} already were: an interrupted rotation finished)" if rotation.already else ""
    lines = [f"Re-sealed {count(len(rotation.resealed), 'credential record')} under key id {rotation.new_kid}{resumed}."]
    if rotation.dropped:
        more = " ..." if len(rotation.dropped) > 5 else ""
        lines.append(f"Dropped {count(len(rotation.dropped), 'sealed blob')} that no command could open (left by an "
                     f"interrupted step): {', '.join(rotation.dropped[:5])}{more}")
    lines.append(f"Rotation complete: only the new key (id {rotation.new_kid}) opens the credentials now.")
    if rotation.key_file is not None:
        lines.append(f"{display_path(rotation.key_file)} now holds the new key: back it up.")
    elif new.key_env:
        lines.append(f"From now on set RECONCILER_STATE_KEY to the value of {new.key_env}.")
    elif new.passphrase_env:
        lines.append(f"From now on set RECONCILER_STATE_PASSPHRASE to the value of {new.passphrase_env}"
                     " (and unset RECONCILER_STATE_KEY).")
    if rotation.retired_key_file is not None:
        lines.append(f"The old key is kept in {display_path(rotation.retired_key_file)}: delete it once no copy of "
                     "the state (a pulled copy, a backup) needs it.")
    elif rotation.old_kid is not None and rotation.old_source is not None:
        lines.append(f"The old key (id {rotation.old_kid}, from {rotation.old_source}) is no longer needed here: "
                     "retire it from your secret store once no copy of the state needs it.")
    lines.append("Plans saved before the rotation are signed with the old key: make them again.")
    return lines


@cli.command("force-unlock")
@click.argument("lock_id")
@click.option("--force", is_flag=True, help="End a holder whose session is still alive without asking.")
@click.pass_obj
def force_unlock(opts: GlobalOptions, lock_id: str, force: bool) -> int:
    """Release the state lock LOCK_ID whose holder is stuck (the id is in the "locked" message).

    On PostgreSQL a holder whose session is still alive is ended only after a confirmation (or with --force);
    without a terminal and without --force that is refused. A live local holder is always refused.

    \b
    Examples:
      reconciler force-unlock 6f1c2a9e-...
      reconciler force-unlock 6f1c2a9e-... --force     # in a script: end a live holder's session
    """
    from reconciler.app.statecmds import force_unlock as release

    def confirm_live(holder: str) -> bool:
        if force:
            return True
        if not sys.stdin.isatty():
            return False  # the backend refuses, with the hint to pass --force
        click.echo(f"The state is {one_line(holder)}, and its session is still alive: it may be mid-write.", err=True)
        return click.confirm("Do you really want to force-unlock?", default=False, err=True)

    click.echo(f"Released the lock {release(opts.workspace(), lock_id, confirm_live=confirm_live)}")
    return EXIT_OK




@cli.command("audit")
@click.option("--since", metavar="DURATION", callback=duration,
              help="Only the entries of this last stretch of time: 45s, 30m, 12h, 7d. Default: all of them.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="text for a terminal, json for automation.")
@click.pass_obj
def audit(opts: GlobalOptions, since: dt.timedelta | None, fmt: str) -> int:
    """List the authorization service's audit log: token reads and completed or failed sign-ins (who, what,
    when), oldest first, from the configured state backend. The log holds no token, code or secret.

    \b
    Examples:
      reconciler audit --since 24h
      reconciler --env prod audit --format json | jq -r '.entries[] | select(.kind == "token.read") | .actor'
    """
    from reconciler.app.statecmds import read_audit

    click.echo(view(fmt).audit(read_audit(opts.workspace(), since)), nl=False)
    return EXIT_OK
