"""`fleetctl plan`: show the batches a deploy would use; changes nothing and contacts no host."""

from __future__ import annotations

import typer

from fleetctl.cli.options import InventoryOpt, JsonOpt, LimitOpt, VarOpt, examples, inventory_paths
from fleetctl.targets import RolloutOverrides, load_targets, plan_rollout
from fleetctl.ui.console import print_json, stdout
from fleetctl.ui.plan import plan_table


def plan(
    playbook: str = typer.Argument(..., metavar="PLAYBOOK", help="Playbook file."),
    inventory: list[str] | None = InventoryOpt,
    limit: str | None = LimitOpt,
    canary: str | None = typer.Option(None, "--canary", metavar="N|N%", help="Canary batch: hosts (3) or percent (10%)."),
    batch: str | None = typer.Option(None, "--batch", metavar="N|N%", help="Batch size: hosts or percent of targeted hosts."),
    max_failed: str | None = typer.Option(None, "--max-failed", metavar="N|N%", help="Failure budget: hosts or percent."),
    var: list[str] | None = VarOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Show the rollout batches for PLAYBOOK (canary first, then batches); nothing is changed."""
    targets = load_targets(playbook, inventory_paths(inventory), limit=limit, extra_vars=var)
    the_plan = plan_rollout(targets, RolloutOverrides(canary=canary, batch=batch, max_failed=max_failed))
    if json_out:
        print_json(the_plan.to_json())
        return
    spread = None
    if the_plan.spread_by:
        spread = {h.name: targets.host_value(h, the_plan.spread_by, "") for h in targets.hosts}
    console = stdout()
    console.print(plan_table(the_plan, f"Plan for {targets.settings.name}: {len(the_plan.hosts)} hosts, "
                                        f"{len(the_plan.batches)} batches", spread))
    console.print(f"failure budget: {the_plan.max_failed} host(s); a failed canary always halts.")


def register(app: typer.Typer) -> None:
    app.command("plan", epilog=examples(
        "fleetctl plan playbooks/hello/playbook.yml --canary 10% --batch 25%",
        "fleetctl plan playbooks/hello/playbook.yml -l dc_west --json",
    ))(plan)
