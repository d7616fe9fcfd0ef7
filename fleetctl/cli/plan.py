"""`fleetctl plan`: show the batches a deploy would use; changes nothing and contacts no host."""

from __future__ import annotations

import typer

from fleetctl.cli.options import InventoryOpt, JsonOpt, LimitOpt, VarOpt, examples, inventory_paths
from fleetctl.errors import ConfigError
from fleetctl.plan import host_sequence
from fleetctl.targets import RolloutOverrides, Targets, load_targets, plan_rollout
from fleetctl.ui.console import print_json, stdout
from fleetctl.ui.plan import plan_table, steps_line


def plan(
    playbook: str = typer.Argument(..., metavar="PLAYBOOK", help="Playbook file."),
    inventory: list[str] | None = InventoryOpt,
    limit: str | None = LimitOpt,
    canary: str | None = typer.Option(None, "--canary", metavar="N|N%", help="Canary batch: hosts (3) or percent (10%)."),
    batch: str | None = typer.Option(None, "--batch", metavar="N|N%", help="Batch size: hosts or percent of targeted hosts."),
    max_failed: str | None = typer.Option(None, "--max-failed", metavar="N|N%", help="Failure budget: hosts or percent."),
    var: list[str] | None = VarOpt,
    strategy: str | None = typer.Option(None, "--strategy", metavar="STRATEGY", help="rolling or blue-green (default: the playbook's)."),
    show_all: bool = typer.Option(False, "--all", help="Every batch on its own row (a plan of many batches shows "
                                                       "its first and last ones)."),
    json_out: bool = JsonOpt,
) -> None:
    """Show the rollout batches for PLAYBOOK (canary first, then batches) and each host's steps; nothing is
    changed."""
    targets = load_targets(playbook, inventory_paths(inventory), limit=limit, extra_vars=var)
    the_plan = plan_rollout(targets, RolloutOverrides(canary=canary, batch=batch, max_failed=max_failed))
    steps = sequence_for(targets, strategy)
    if json_out:
        print_json({**the_plan.to_json(), "host_steps": list(steps)})
        return
    spread = None
    if the_plan.spread_by:
        spread = {h.name: targets.host_value(h, the_plan.spread_by, "") for h in targets.hosts}
    console = stdout()
    console.print(plan_table(the_plan, f"Plan for {targets.settings.name}: {len(the_plan.hosts)} hosts, "
                                        f"{len(the_plan.batches)} batches", spread, show_all))
    console.print(f"failure budget: {the_plan.max_failed} host(s); a failed canary always halts.")
    console.print(steps_line(steps))


def sequence_for(targets: Targets, strategy: str | None) -> tuple[str, ...]:
    """Each host's steps for the chosen strategy (the traffic section is rendered for the first host)."""
    chosen = strategy or targets.settings.rollout.strategy
    if chosen not in ("rolling", "blue-green"):
        raise ConfigError(f"expected rolling or blue-green, got {chosen!r}", key="--strategy")
    traffic = targets.render_for(targets.hosts[0], {"version": "0"}).traffic if targets.hosts else None
    if chosen == "blue-green" and (traffic is None or traffic.blue_green is None):
        raise ConfigError("the blue-green strategy needs traffic.blue_green", file=targets.source.path,
                          key="traffic.blue_green")
    return host_sequence(chosen, traffic, bake=float(targets.settings.rollout.bake))


def register(app: typer.Typer) -> None:
    app.command("plan", epilog=examples(
        "fleetctl plan playbooks/hello/playbook.yml --canary 10% --batch 25%",
        "fleetctl plan playbooks/hello/playbook.yml -l dc_west --json",
    ))(plan)
