"""`fleetctl remove`: retire PLAYBOOK's service from the targeted hosts (tasks, service, rules, port proxy, files)."""

from __future__ import annotations

import typer

from fleetctl.cli.deploy import (
    BatchOpt,
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
from fleetctl.errors import RolloutFailed
from fleetctl.notify import Notifier
from fleetctl.rollout.remove import dry_run_remove, prepare_remove, run_remove
from fleetctl.rollout.runner import DeployOptions
from fleetctl.ui.console import print_json, stderr, stdout, warn_insecure
from fleetctl.ui.dry_run import preview_table
from fleetctl.ui.plan import plan_table


def remove(
    playbook: str = typer.Argument(..., metavar="PLAYBOOK", help="Playbook file."),
    inventory: list[str] | None = InventoryOpt,
    limit: str | None = LimitOpt,
    batch: str | None = BatchOpt,
    max_failed: str | None = MaxFailedOpt,
    forks: int | None = ForksOpt,
    var: list[str] | None = VarOpt,
    purge: bool = typer.Option(False, "--purge", help="Also delete releases\\, shared\\ and the node state."),
    yes: bool = YesOpt,
    dry_run_: bool = typer.Option(False, "--dry-run", help="Show what would be removed; change nothing."),
    force: bool = ForceOpt,
    json_out: bool = JsonOpt,
    verbose: int = VerboseOpt,
) -> None:
    """Retire PLAYBOOK's service: scheduled tasks, service, firewall rules, port proxy; files kept unless --purge."""
    options = DeployOptions(playbook=playbook, inventories=inventory_paths(inventory), limit=limit,
                            extra_vars=tuple(var or ()), batch=batch, max_failed=max_failed, forks=forks,
                            force=force)
    prepared = prepare_remove(options, purge=purge)
    warn_insecure(prepared.fleet.connections.values())
    name, count = prepared.fleet.targets.settings.name, len(prepared.fleet.plan.hosts)
    people = stderr() if json_out else stdout()
    if not json_out:
        people.print(plan_table(prepared.fleet.plan, f"Remove {name} from {count} hosts"
                                + (" (purge: releases, shared files and node state too)" if purge else ""), None))
    if dry_run_:
        previews = dry_run_remove(prepared)
        if json_out:
            print_json({"dry_run": True, "purge": purge, "hosts": {
                h: {"current": p.current, "changes": list(p.changes), "error": p.error} for h, p in previews.items()}})
        else:
            people.print(preview_table(previews))
        unreachable = [h for h, p in previews.items() if p.error]
        if unreachable:
            raise RolloutFailed(f"{len(unreachable)} host(s) could not be asked: {', '.join(unreachable[:5])}")
        return
    notifier = Notifier.for_playbook(prepared.fleet.targets.settings)
    confirm(yes, f"Remove {name} from {count} host(s){' and purge its files' if purge else ''}?")
    result = run_with_subscribers(lambda bus: run_remove(prepared, bus, force=force, judge=lock_judge()),
                                  json_out, notifier)
    end_run(result, json_out)  # the message said once where the user reads it, as for deploy


def register(app: typer.Typer) -> None:
    app.command("remove", epilog=examples(
        "fleetctl remove playbooks/hello/playbook.yml --dry-run",
        "fleetctl remove playbooks/hello/playbook.yml -l 'old-*' --purge --yes",
    ))(remove)
