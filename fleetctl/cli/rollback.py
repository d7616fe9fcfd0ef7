"""`fleetctl rollback`: switch hosts back to the fleet's last good release (or a named kept release), in gated
batches; the plan ("from → to" per host) is shown before anything changes, and is all `--dry-run` does."""

from __future__ import annotations

import typer

from fleetctl.cli.deploy import (
    BatchOpt,
    CanaryOpt,
    ForksOpt,
    MaxFailedOpt,
    StrategyOpt,
    YesOpt,
    confirm,
    end_run,
    lock_judge,
    run_with_subscribers,
    summary_options,
)
from fleetctl.cli.options import (
    AllRowsOpt,
    EnvironmentOpt,
    FailedOnlyOpt,
    InventoryOpt,
    JsonOpt,
    LimitOpt,
    VarOpt,
    VerboseOpt,
    examples,
    inventory_paths,
)
from fleetctl.errors import ConfigError, RolloutFailed
from fleetctl.notify import Notifier
from fleetctl.rollout.bluegreen_plan import SwitchBackPlan
from fleetctl.rollout.diff import diff_json, read_rollback_diffs
from fleetctl.rollout.rollback_target import RollbackPlan
from fleetctl.rollout.runner import DeployOptions, plan_rollback, prepare_rollback, run_rollback
from fleetctl.ui.console import print_json, stderr, stdout, warn_insecure
from fleetctl.ui.dry_run import diff_view
from fleetctl.ui.plan import plan_table
from fleetctl.ui.rollback import choices_table


def rollback(
    playbook: str = typer.Argument(..., metavar="PLAYBOOK", help="Playbook file."),
    to: str | None = typer.Option(None, "--to", metavar="VERSION", help="Version (or release id) to return to; "
                                                                       "default: the fleet's last good release."),
    inventory: list[str] | None = InventoryOpt,
    environment: str | None = EnvironmentOpt,  # applied by its callback (cli/options.py)
    limit: str | None = LimitOpt,
    canary: str | None = CanaryOpt,
    batch: str | None = BatchOpt,
    max_failed: str | None = MaxFailedOpt,
    forks: int | None = ForksOpt,
    var: list[str] | None = VarOpt,
    yes: bool = YesOpt,
    dry_run_: bool = typer.Option(False, "--dry-run", help="Show where each host would go; change nothing."),
    diff: bool = typer.Option(False, "--diff", help="With --dry-run: per host, what changes in the service "
                                                    "definition and rendered files when it returns to its target."),
    force: bool = typer.Option(False, "--force", help="Take over a stale lock; with --to, also return to a "
                                                      "release that failed its health gate on a host."),
    strategy: str | None = StrategyOpt,
    show_all: bool = AllRowsOpt,
    failed_only: bool = FailedOnlyOpt,
    json_out: bool = JsonOpt,
    verbose: int = VerboseOpt,
) -> None:
    """Roll PLAYBOOK's hosts back to the fleet's last good release; no artifact bytes move, no host moves forward."""
    if diff and not dry_run_:
        raise ConfigError("--diff shows what a rollback would change without changing it: give --dry-run too",
                          key="--diff")
    options = DeployOptions(playbook=playbook, inventories=inventory_paths(inventory, contacts_hosts=True),
                            limit=limit,
                            extra_vars=tuple(var or ()), canary=canary, batch=batch, max_failed=max_failed,
                            forks=forks, force=force, strategy=strategy)
    prepared = prepare_rollback(options, to)
    warn_insecure(prepared.fleet.connections.values())  # before any node is asked (the plan reads every host)
    notifier = Notifier.for_playbook(prepared.fleet.targets.settings)
    plan = plan_rollback(prepared, journal_failures=journal_failures(prepared.fleet.targets.settings.name))
    people = stderr() if json_out else stdout()
    target = to or (f"the fleet's last good release {plan.version}" if plan.version else "the fleet's last good "
                    "release (none found)")
    if not json_out:
        people.print(plan_table(prepared.plan, f"Rollback {prepared.fleet.targets.settings.name} to {target}: "
                                               f"{len(prepared.plan.hosts)} hosts", None, show_all))
    rows = summary_options(prepared, show_all, False).rows  # --all: every host in the from → to table
    if dry_run_:
        diffs = read_rollback_diffs(prepared, plan) if diff else {}
        if json_out:
            print_json({"dry_run": True, "version": plan.version,
                        "hosts": {h: {**c.to_json(), **_switch_json(plan, h), **diff_json(diffs.get(h))}
                                  for h, c in plan.choices.items()}})
        else:
            people.print(choices_table(plan, "Dry run: where each host would go (nothing was changed)", rows))
            if diff:
                people.print(diff_view(diffs), soft_wrap=True)  # a diff line wrapped would read as two
        _refuse_forced_only(plan, to)
        _refuse_wrong_strategy(plan)
        unasked = [c.host for c in plan.refused if c.reason.startswith("could not be asked")]
        if unasked:
            raise RolloutFailed(f"{len(unasked)} host(s) could not be asked: {', '.join(unasked[:5])}")
        return
    if not json_out:
        people.print(choices_table(plan, "Rollback: from → to", rows))
    _refuse_forced_only(plan, to)
    _refuse_wrong_strategy(plan)
    switching = sum(1 for c in plan.choices.values() if c.action == "switch")
    confirm(yes, f"Roll back {switching} host(s) to {target}?")
    result = run_with_subscribers(lambda bus: run_rollback(prepared, bus, plan=plan, force=force,
                                                              judge=lock_judge()), json_out,
                                  notifier, summary_options(prepared, show_all, failed_only, kind="rollback"))
    end_run(result, json_out)


def journal_failures(service: str) -> dict[str, dict[str, str]]:
    """host -> {release: why} for what the history journal remembers failing a gate (rollback and releases)."""
    from fleetctl.state.journal import Journal

    try:
        return Journal().gate_failures(service)
    except ConfigError:
        return {}  # no usable journal here: the nodes' own marks still apply


def _refuse_forced_only(plan: RollbackPlan, to: str | None) -> None:
    """`--to` a release that failed its gate on some host: refused before anything changes, unless --force."""
    gated = [c for c in plan.refused if "--force" in c.reason]
    if to is not None and gated:
        first = gated[0]
        more = f" (and {len(gated) - 1} more host(s))" if len(gated) > 1 else ""
        raise ConfigError(f"{first.host}: {first.reason}{more}; nothing was changed", key="--to")


def _switch_json(plan: RollbackPlan, host: str) -> dict[str, object]:
    """Blue-green: the host's colours before and after, and how it switches (instant, start + gate, the move)."""
    if isinstance(plan, SwitchBackPlan) and host in plan.moves:
        return plan.moves[host].to_json()
    return {}


def _refuse_wrong_strategy(plan: RollbackPlan) -> None:
    """Hosts on blue-green under a rolling rollback (or the reverse): refused before anything changes, naming the
    flag, rather than failing host by host after the confirmation."""
    wrong = [c for c in plan.refused if "roll it back with --strategy" in c.reason]
    if wrong:
        first = wrong[0]
        more = f" (and {len(wrong) - 1} more host(s))" if len(wrong) > 1 else ""
        raise ConfigError(f"{first.host} {first.reason}{more}; nothing was changed", key="--strategy")


def register(app: typer.Typer) -> None:
    app.command("rollback", epilog=examples(
        "fleetctl rollback playbooks/hello/playbook.yml                # to the fleet's last good release",
        "fleetctl rollback playbooks/hello/playbook.yml --to 1.4.1 -l web-01",
    ))(rollback)
