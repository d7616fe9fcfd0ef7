"""`fleetctl lock PLAYBOOK --reason TEXT [--ttl 12h]` (a change freeze on every targeted node) and
`fleetctl lock PLAYBOOK --status` (who holds each node's lock). `fleetctl unlock` is in cli/unlock.py.

Exit codes: 0 done; 1 some host could not be reached (the others are done; run it again); 2 bad input;
4 a live run holds a node (nothing was frozen)."""

from __future__ import annotations

import typer
from rich.markup import escape

from fleetctl.cli.deploy import lock_judge
from fleetctl.cli.options import (
    EnvironmentOpt,
    ForksOpt,
    InventoryOpt,
    JsonOpt,
    LimitOpt,
    VarOpt,
    VerboseOpt,
    examples,
    inventory_paths,
)
from fleetctl.errors import EXIT_LOCKED, EXIT_OK, ConfigError, LockHeld, RolloutFailed
from fleetctl.rollout.freeze import (
    DEFAULT_FREEZE_TTL,
    FreezeResult,
    freeze,
    lock_states,
    prepare_freeze,
)
from fleetctl.rollout.runner import DeployOptions
from fleetctl.ui.console import print_json, safe, stdout, warn_insecure
from fleetctl.ui.locks import lock_table


def lock(
    playbook: str = typer.Argument(..., metavar="PLAYBOOK", help="Playbook file."),
    reason: str | None = typer.Option(None, "--reason", metavar="TEXT", help="Why changes are frozen (shown to whoever is refused)."),
    ttl: str | None = typer.Option(None, "--ttl", metavar="DURATION", help=f"The freeze ends by itself after this long "
                                                       f"(default {DEFAULT_FREEZE_TTL}; at most 720h)."),
    status: bool = typer.Option(False, "--status", help="Show who holds each node's lock; change nothing."),
    inventory: list[str] | None = InventoryOpt,
    environment: str | None = EnvironmentOpt,  # applied by its callback (cli/options.py)
    limit: str | None = LimitOpt,
    var: list[str] | None = VarOpt,
    forks: int | None = ForksOpt,
    json_out: bool = JsonOpt,
    verbose: int = VerboseOpt,
) -> None:
    """Freeze changes to PLAYBOOK's hosts: deploys, rollbacks and removes refuse them (exit 4) until `fleetctl
    unlock` or the TTL. With --status: who holds each host's lock."""
    options = DeployOptions(playbook=playbook, inventories=inventory_paths(inventory, contacts_hosts=True), limit=limit,
                            extra_vars=tuple(var or ()), forks=forks)
    if status:
        if reason is not None or ttl is not None:
            raise ConfigError("--status only shows the locks: drop --reason/--ttl", key="--status")
        request = prepare_freeze(options, lifting=True)
        warn_insecure(request.fleet.connections.values())
        finish(lock_states(request, lock_judge()), json_out, "Locks")
        return
    request = prepare_freeze(options, reason=reason, ttl=ttl)
    warn_insecure(request.fleet.connections.values())
    finish(freeze(request, lock_judge()), json_out, "Change freeze")


def finish(result: FreezeResult, json_out: bool, title: str) -> None:
    """Show the per-host table (or the JSON document), then exit with the result's code and message."""
    if json_out:
        print_json(result.to_json())
    else:
        stdout().print(lock_table(result, title))
    if result.exit_code == EXIT_LOCKED:
        raise LockHeld(result.message)
    if result.exit_code != EXIT_OK:
        raise RolloutFailed(result.message)
    if not json_out:
        stdout().print(escape(safe(result.message)))


def register(app: typer.Typer) -> None:
    app.command("lock", epilog=examples(
        "fleetctl lock deploy.yml --reason 'quarter-end close' --ttl 48h   # freeze every targeted host",
        "fleetctl lock deploy.yml --status -l web   # who holds each web host's lock",
    ))(lock)
