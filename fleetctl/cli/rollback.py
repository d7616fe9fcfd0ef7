"""`fleetctl rollback`: switch hosts back to their previous (or a named) kept release, in gated batches."""

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
    lock_judge,
    run_with_subscribers,
)
from fleetctl.cli.options import InventoryOpt, JsonOpt, LimitOpt, VarOpt, examples, inventory_paths
from fleetctl.notify import Notifier
from fleetctl.rollout.runner import DeployOptions, prepare_rollback, run_rollback
from fleetctl.ui.console import stdout, warn_insecure
from fleetctl.ui.plan import plan_table


def rollback(
    playbook: str = typer.Argument(..., metavar="PLAYBOOK", help="Playbook file."),
    to: str | None = typer.Option(None, "--to", metavar="VERSION", help="Version (or release id) to return to; default: each "
                                                         "host's previous release."),
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
) -> None:
    """Roll PLAYBOOK's hosts back to a release they keep; no artifact bytes move."""
    options = DeployOptions(playbook=playbook, inventories=inventory_paths(inventory), limit=limit,
                            extra_vars=tuple(var or ()), canary=canary, batch=batch, max_failed=max_failed,
                            forks=forks, force=force)
    prepared = prepare_rollback(options, to)
    warn_insecure(prepared.fleet.connections.values())
    target = to or "each host's previous release"
    if not json_out:
        stdout().print(plan_table(prepared.plan, f"Rollback {prepared.fleet.targets.settings.name} to {target}: "
                                                 f"{len(prepared.plan.hosts)} hosts", None))
    notifier = Notifier.for_playbook(prepared.fleet.targets.settings)
    confirm(yes, f"Roll back {len(prepared.plan.hosts)} host(s) to {target}?")
    result = run_with_subscribers(lambda bus: run_rollback(prepared, bus, force=force, judge=lock_judge()),
                                  json_out, notifier)
    result.raise_for_exit()


def register(app: typer.Typer) -> None:
    app.command("rollback", epilog=examples(
        "fleetctl rollback playbooks/hello/playbook.yml                # each host to its previous release",
        "fleetctl rollback playbooks/hello/playbook.yml --to 1.4.1 -l web-01",
    ))(rollback)
