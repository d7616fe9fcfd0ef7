"""`fleetctl restart`: a rolling restart of the release each host runs, behind the same health gates, batches,
canaries, failure budget and locks as a deploy (rollout/restart.py); journalled as a `restart` run."""

from __future__ import annotations

import typer

from fleetctl.cli.deploy import (
    BatchOpt,
    CanaryOpt,
    ForceOpt,
    ForksOpt,
    MaxFailedOpt,
    YesOpt,
    confirm,
    end_run,
    lock_judge,
    run_with_subscribers,
)
from fleetctl.cli.options import (
    InventoryOpt,
    JsonOpt,
    LimitOpt,
    VarOpt,
    VerboseOpt,
    examples,
    inventory_paths,
)
from fleetctl.notify import Notifier
from fleetctl.rollout.restart import prepare_restart, run_restart
from fleetctl.rollout.runner import DeployOptions
from fleetctl.ui.console import stderr, stdout, warn_insecure
from fleetctl.ui.plan import plan_table


def restart(
    playbook: str = typer.Argument(..., metavar="PLAYBOOK", help="Playbook file."),
    inventory: list[str] | None = InventoryOpt,
    limit: str | None = LimitOpt,
    canary: str | None = CanaryOpt,
    batch: str | None = BatchOpt,
    max_failed: str | None = MaxFailedOpt,
    forks: int | None = ForksOpt,
    var: list[str] | None = VarOpt,
    yes: bool = YesOpt,
    force: bool = ForceOpt,
    json_out: bool = JsonOpt,
    verbose: int = VerboseOpt,
) -> None:
    """Restart PLAYBOOK's service host by host in gated batches; releases stay as they are."""
    options = DeployOptions(playbook=playbook, inventories=inventory_paths(inventory), limit=limit,
                            extra_vars=tuple(var or ()), canary=canary, batch=batch, max_failed=max_failed,
                            forks=forks, force=force)
    prepared = prepare_restart(options)
    warn_insecure(prepared.fleet.connections.values())
    name, count = prepared.fleet.targets.settings.name, len(prepared.fleet.plan.hosts)
    people = stderr() if json_out else stdout()
    if not json_out:
        people.print(plan_table(prepared.fleet.plan, f"Restart {name} on {count} hosts", None))
        people.print(f"failure budget: {prepared.fleet.plan.max_failed} host(s); a failed canary always halts. "
                     "Blue-green hosts restart their live colour.", markup=False, highlight=False)
    notifier = Notifier.for_playbook(prepared.fleet.targets.settings)
    confirm(yes, f"Restart {name} on {count} host(s)?")
    result = run_with_subscribers(lambda bus: run_restart(prepared, bus, force=force, judge=lock_judge()),
                                  json_out, notifier)
    end_run(result, json_out)  # the message once where the user reads it, as for deploy


def register(app: typer.Typer) -> None:
    app.command("restart", epilog=examples(
        "fleetctl restart playbooks/hello/playbook.yml --canary 1 --batch 25%",
        "fleetctl restart playbooks/hello/playbook.yml -l web-01 --yes --json",
    ))(restart)
