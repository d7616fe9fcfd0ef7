"""`fleetctl deploy`: build or collect the artifact, show the plan, confirm, and roll it out with health gates."""

from __future__ import annotations

import os
import re
import sys
from contextlib import ExitStack
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from fleetctl.cli.options import (
    AllRowsOpt,
    FailedOnlyOpt,
    ForksOpt,
    InventoryOpt,
    JsonOpt,
    LimitOpt,
    VarOpt,
    VerboseOpt,
    examples,
    inventory_paths,
    version_option,
)
from fleetctl.cli.plan import sequence_for
from fleetctl.errors import EXIT_INTERRUPTED, ConfigError, RolloutFailed
from fleetctl.notify import Delivery, Notifier
from fleetctl.rollout.diff import HostDiffResult, diff_json, read_diffs
from fleetctl.rollout.engine import RunResult
from fleetctl.rollout.events import EventBus
from fleetctl.rollout.if_changed import compare_with_fleet, narrow_to
from fleetctl.rollout.lock_keeper import HolderJudge
from fleetctl.rollout.runner import (
    DeployOptions,
    HostPreview,
    PreparedDeploy,
    PreparedRollback,
    dry_run,
    prepare_deploy,
    run_deploy,
)
from fleetctl.ui.console import print_json, safe, stderr, stdout, warn, warn_insecure
from fleetctl.ui.dry_run import diff_view, preview_table
from fleetctl.ui.host_rows import RowOptions
from fleetctl.ui.plan import plan_table, steps_line
from fleetctl.ui.report import SummaryOptions

CanaryOpt = typer.Option(None, "--canary", metavar="N|N%", help="Canary batch first: hosts (3) or percent (10%).")
BatchOpt = typer.Option(None, "--batch", metavar="N|N%", help="Batch size: hosts or percent of targeted hosts.")
MaxFailedOpt = typer.Option(None, "--max-failed", metavar="N|N%", help="Failure budget: hosts or percent (default 0).")
RUN_ID = re.compile(r"[0-9]{8}T[0-9]{6}Z-[0-9a-f]{6}")
YesOpt = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation.")
ForceOpt = typer.Option(False, "--force", help="Take over a lock whose run is provably gone (expired, finished, or "
                                                "its process on this machine ended); never a live run's lock or a "
                                                "change freeze.")
StrategyOpt = typer.Option(None, "--strategy", metavar="STRATEGY", help="rolling or blue-green (default: the playbook's rollout.strategy).")
UnattendedOpt = typer.Option(False, "--unattended", help="Nobody is watching (a nightly job): never prompt, never "
                             "take over a lock (held: exit 4), refuse a dirty git tree unless --version.")
# Set by `fleetctl schedule run`, which names the log after the run; hidden from --help, listed in docs/cli.md.
ScheduleOpt = typer.Option(None, "--schedule", hidden=True, metavar="NAME", help="Schedule entry that started this run.")
RunIdOpt = typer.Option(None, "--run-id", hidden=True, metavar="RUN_ID", help="Use this run id (as the scheduled run's log does).")


def deploy(
    playbook: str = typer.Argument(..., metavar="PLAYBOOK", help="Playbook file."),
    inventory: list[str] | None = InventoryOpt,
    limit: str | None = LimitOpt,
    canary: str | None = CanaryOpt,
    batch: str | None = BatchOpt,
    max_failed: str | None = MaxFailedOpt,
    forks: int | None = ForksOpt,
    version: str | None = version_option("Version to build/stamp (default: artifact.version, else git describe)."),
    artifact: str | None = typer.Option(None, "--artifact", metavar="FILE", help="Deploy this exe or manifest; skip the build."),
    var: list[str] | None = VarOpt,
    yes: bool = YesOpt,
    dry_run_: bool = typer.Option(False, "--dry-run", help="Show the plan and what would change; change nothing."),
    diff: bool = typer.Option(False, "--diff", help="With --dry-run: per host, what changes in the service "
                                                    "definition and a unified diff of each rendered file."),
    force: bool = ForceOpt,
    strategy: str | None = StrategyOpt,
    unattended: bool = UnattendedOpt,
    schedule: str | None = ScheduleOpt,
    run_id: str | None = RunIdOpt,
    if_changed: bool = typer.Option(False, "--if-changed", help="First compare the target with what each host "
                                                                "runs (no lock): deploy only the hosts that differ; "
                                                                "exit 0 at once when none does."),
    show_all: bool = AllRowsOpt,
    failed_only: bool = FailedOnlyOpt,
    json_out: bool = JsonOpt,
    verbose: int = VerboseOpt,
) -> None:
    """Deploy PLAYBOOK: canary first, then batches, each gated on health; failed hosts are rolled back."""
    if unattended and force:
        raise ConfigError("an unattended run never takes over a lock: drop --force (a person who judged the lock "
                          "stale runs deploy --force themselves)", key="--force")
    if (schedule or run_id) and not unattended:
        raise ConfigError("--schedule and --run-id belong to scheduled runs: give --unattended too",
                          key="--schedule" if schedule else "--run-id")
    if diff and not dry_run_:
        raise ConfigError("--diff shows what a deploy would change without changing it: give --dry-run too",
                          key="--diff")
    if run_id is not None and not RUN_ID.fullmatch(run_id):
        raise ConfigError(f"expected a run id such as 20261202T020000Z-1a2b3c, got {run_id!r}", key="--run-id")
    options = DeployOptions(playbook=playbook, inventories=inventory_paths(inventory), limit=limit,
                            extra_vars=tuple(var or ()), canary=canary, batch=batch, max_failed=max_failed,
                            forks=forks, version=version, artifact=artifact, force=force, strategy=strategy,
                            unattended=unattended, schedule=schedule, run_id=run_id)
    people = stderr() if json_out else stdout()
    prepared = prepare_deploy(options, on_output=lambda line: people.print(safe(line), markup=False,
                                                                            highlight=False))
    warn_insecure(prepared.fleet.connections.values())
    if if_changed:
        narrowed = only_changed(prepared, options, people, json_out)
        if narrowed is None:
            return
        prepared = narrowed
    releases = sorted({r.id for r in prepared.releases.values()})
    title = (f"Deploy {prepared.fleet.targets.settings.name} {prepared.version} "
             f"({', '.join(releases[:3])}{'...' if len(releases) > 3 else ''}) to {len(prepared.plan.hosts)} hosts")
    if not json_out:
        people.print(plan_table(prepared.plan, title, None, show_all))
        people.print(f"failure budget: {prepared.plan.max_failed} host(s); a failed canary always halts.")
        people.print(steps_line(sequence_for(prepared.fleet.targets, prepared.fleet.strategy)))

    if dry_run_:
        previews = dry_run(prepared)
        diffs = read_diffs(prepared) if diff else {}
        if json_out:
            print_json({"dry_run": True, "version": prepared.version,
                        "hosts": {h: _preview_json(p, diffs.get(h)) for h, p in previews.items()}})
        else:
            people.print(preview_table(previews))
            if diff:
                people.print(diff_view(diffs), soft_wrap=True)  # a diff line wrapped would read as two
        unreachable = [h for h, p in previews.items() if p.error]
        if unreachable:
            raise RolloutFailed(f"{len(unreachable)} host(s) could not be asked: {', '.join(unreachable[:5])}")
        return

    notifier = Notifier.for_playbook(prepared.fleet.targets.settings)
    confirm(yes or unattended, f"Deploy {prepared.version} to {len(prepared.plan.hosts)} host(s)?")
    summary = summary_options(prepared, show_all, failed_only)
    result = run_with_subscribers(lambda bus: run_deploy(prepared, bus, force=force, judge=lock_judge()),
                                  json_out, notifier, summary)
    end_run(result, json_out)


def summary_options(prepared: PreparedDeploy | PreparedRollback, show_all: bool, failed_only: bool,
                    kind: str = "deploy") -> SummaryOptions:
    """--all / --failed-only for the end-of-run table, with each host's address so that errors differing only
    by it are grouped."""
    addresses = {h: c.address for h, c in prepared.fleet.connections.items()}
    return SummaryOptions(RowOptions(show_all=show_all, failed_only=failed_only, addresses=addresses), kind)


def end_run(result: RunResult, json_out: bool) -> None:
    """Exit with the run's code, saying its message once wherever the user reads. The live view's last line
    (`exit code N: ...`, or the plain log's `finished ... with exit code N: ...`) already said it on its console:
    a failed run adds the `error:` line on stderr only when stderr goes elsewhere (`> run.log`, a CI step that
    keeps stderr apart), not when it is the same terminal or pipe (`2>&1`), nor with --json (the view is on
    stderr)."""
    if not result.exit_code:
        return
    if json_out or same_destination(sys.stdout, sys.stderr):
        raise typer.Exit(result.exit_code)
    result.raise_for_exit()


def same_destination(a: Any, b: Any) -> bool:
    """Whether two streams write to the same terminal, pipe or file."""
    try:
        first, second = os.fstat(a.fileno()), os.fstat(b.fileno())
    except (AttributeError, OSError, ValueError):
        return False
    return (first.st_dev, first.st_ino) == (second.st_dev, second.st_ino)


def only_changed(prepared: PreparedDeploy, options: DeployOptions, people: Console,
                 json_out: bool) -> PreparedDeploy | None:
    """--if-changed: None when every targeted host already runs the target (said so; nothing locked or touched),
    else the deploy narrowed to the hosts that differ."""
    check = compare_with_fleet(prepared)
    total = len(check.hosts)
    if check.unchanged:
        message = (f"every targeted host ({total}) already runs {prepared.version}: nothing to deploy, no lock "
                   "taken")
        if json_out:
            print_json({"if_changed": True, "exit_code": 0, "message": message, "changed": [],
                        "hosts": check.to_json()})
        else:
            people.print(escape(safe(message)))
        return None
    changed = check.changed
    people.print(escape(safe(f"--if-changed: {len(changed)} of {total} host(s) differ from {prepared.version} "
                             f"({total - len(changed)} already run it); deploying only those")))
    return narrow_to(prepared, options, changed)


def lock_judge() -> HolderJudge:
    """What proves a lock's holder gone for --force: expiry, this project's history, or a dead local process."""
    from fleetctl.state.journal import Journal

    def finished(run_id: str) -> str | None:
        journal = Journal()
        try:
            return journal.finished_run(run_id)
        finally:
            journal.close()

    return HolderJudge(finished=finished)


def confirm(yes: bool, question: str) -> None:
    """Ask before changing anything, unless --yes; refuse when nobody can answer (not a terminal)."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise ConfigError("not asking for confirmation without a terminal: pass --yes", key="--yes")
    if not typer.confirm(question, default=False):
        # Declining is the operator stopping the command, as Ctrl-C at the prompt is: the same word and code.
        stderr().print("aborted: nothing was changed", markup=False, highlight=False)
        raise typer.Exit(EXIT_INTERRUPTED)


def run_with_subscribers(run: Any, json_out: bool, notifier: Notifier | None = None,
                         summary: SummaryOptions | None = None) -> RunResult:
    """Wire the live view, the journal, the playbook's webhooks and (with --json) the JSON report to a fresh bus,
    then run. Webhook deliveries still in flight are waited for (never beyond their timeouts); one that failed is
    a warning on stderr and an entry of the JSON document's `notifications`, never a change of the exit code."""
    from fleetctl.state.journal import Journal
    from fleetctl.ui.live import LiveView
    from fleetctl.ui.report import JsonReport

    bus = EventBus()
    report = JsonReport()
    deliveries: list[Delivery] = []
    try:
        with ExitStack() as stack:
            view = LiveView(stderr() if json_out else stdout(), summary=summary)
            view.subscribe(bus)
            stack.callback(view.close)
            journal = Journal()
            journal.subscribe(bus)
            stack.callback(journal.close)
            report.subscribe(bus)
            if notifier is not None:
                notifier.subscribe(bus)
            stack.callback(bus.close)  # first of the callbacks: the subscribers get every event before they close
            try:
                result: RunResult = run(bus)
            except BaseException as err:
                if notifier is not None:
                    notifier.run_ended_abnormally(err)
                raise
    finally:
        # After the subscribers are closed, so every event the run emitted has reached the notifier.
        if notifier is not None:
            deliveries = notifier.close()
            for delivery in deliveries:
                if not delivery.ok:
                    warn(delivery.describe())
            if deliveries and report.run_id:
                # In the history too, so `history show` and the run's report say how the team was told.
                recorder = Journal()
                try:
                    recorder.record_notifications(report.run_id, [d.to_json() for d in deliveries])
                finally:
                    recorder.close()
    if json_out:
        document = report.document(exit_code=result.exit_code)
        if notifier is not None:
            document["notifications"] = [d.to_json() for d in deliveries]
        print_json(document)
    return result




def _preview_json(p: HostPreview, diff: HostDiffResult | None = None) -> dict[str, Any]:
    return {"current": p.current, "target": p.target, "changes": list(p.changes), "error": p.error,
            **diff_json(diff)}


def register(app: typer.Typer) -> None:
    app.command("deploy", epilog=examples(
        "fleetctl deploy playbooks/hello/playbook.yml --canary 10% --batch 25%",
        "fleetctl deploy playbooks/hello/playbook.yml -l dc_east -e @vars.yml --dry-run",
        "fleetctl deploy playbooks/hello/playbook.yml --dry-run --diff   # what changes in each host's service and files",
        "fleetctl deploy playbooks/hello/playbook.yml --yes --json > result.json",
    ))(deploy)
