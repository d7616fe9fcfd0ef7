"""`fleetctl unlock PLAYBOOK`: lift the change freeze from every targeted node, and free a run lock left behind
by a run that is provably gone (expired, recorded as finished in this project's history, or whose controller
process on this machine ended). A live run's lock is never touched (exit 4, naming it).

Exit codes: 0 done; 1 some host could not be reached; 2 bad input; 4 a live run holds a node."""

from __future__ import annotations

import typer

from fleetctl.cli.deploy import lock_judge
from fleetctl.cli.lock import finish
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
from fleetctl.rollout.freeze import prepare_freeze, unfreeze
from fleetctl.rollout.runner import DeployOptions
from fleetctl.ui.console import warn_insecure


def unlock(
    playbook: str = typer.Argument(..., metavar="PLAYBOOK", help="Playbook file."),
    inventory: list[str] | None = InventoryOpt,
    environment: str | None = EnvironmentOpt,  # applied by its callback (cli/options.py)
    limit: str | None = LimitOpt,
    var: list[str] | None = VarOpt,
    forks: int | None = ForksOpt,
    json_out: bool = JsonOpt,
    verbose: int = VerboseOpt,
) -> None:
    """Lift PLAYBOOK's change freeze; free locks left behind by finished runs (never a live run's)."""
    options = DeployOptions(playbook=playbook, inventories=inventory_paths(inventory, contacts_hosts=True), limit=limit,
                            extra_vars=tuple(var or ()), forks=forks)
    request = prepare_freeze(options, lifting=True)
    warn_insecure(request.fleet.connections.values())
    finish(unfreeze(request, lock_judge()), json_out, "Unlock")


def register(app: typer.Typer) -> None:
    app.command("unlock", epilog=examples(
        "fleetctl unlock deploy.yml   # lift the freeze; free locks of runs that are gone",
        "fleetctl unlock deploy.yml -l web-03.corp.example --json",
    ))(unlock)
