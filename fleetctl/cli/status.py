"""`fleetctl status`: per host, the current and previous release, service state, health now, lock and drift.

Exit codes: 0 when every host answered (whatever its state), 1 when some host could not be reached or its node
answered with an error (they are still listed, as `unreachable` / `error`), 2 for bad input.
"""

from __future__ import annotations

import typer
from rich.console import Group
from rich.table import Table
from rich.text import Text

from fleetctl.cli.options import ForksOpt, InventoryOpt, JsonOpt, LimitOpt, VarOpt, examples, inventory_paths
from fleetctl.errors import RolloutFailed
from fleetctl.node.fleet import Fleet
from fleetctl.rollout.status import FleetStatus, HostStatus, ReleaseRef, collect_status, load_status_request
from fleetctl.ui.console import print_json, safe, stderr, stdout, warn_insecure


def status(
    playbook: str = typer.Argument(..., metavar="PLAYBOOK", help="Playbook file."),
    inventory: list[str] | None = InventoryOpt,
    limit: str | None = LimitOpt,
    forks: int | None = ForksOpt,
    var: list[str] | None = VarOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Show where every host of PLAYBOOK stands: releases, service, health now, lock and drift."""
    request = load_status_request(playbook, inventory_paths(inventory), limit=limit, extra_vars=var, forks=forks)
    warn_insecure(request.connections.values())
    with Fleet(request.connections, forks=request.forks) as fleet:
        if json_out:
            result = collect_status(request.targets, fleet.client, forks=request.forks)
        else:
            total = len(request.targets)
            with stderr().status(f"asking {total} host(s)...") as spinner:
                done: list[str] = []

                def progress(host_status: HostStatus) -> None:
                    done.append(host_status.host)
                    spinner.update(f"asking {total} host(s)... {len(done)} answered or failed")

                result = collect_status(request.targets, fleet.client, forks=request.forks, on_done=progress)
    if json_out:
        print_json(result.to_json())
    else:
        stdout().print(status_table(result, request.name))
    missing = result.not_answered
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise RolloutFailed(f"{len(missing)} of {len(result.hosts)} host(s) did not answer: {shown}")


def status_table(result: FleetStatus, name: str) -> Group:
    """The hosts table, then one note per host that did not answer or is unhealthy (notes are long: a table
    column would squeeze everything else)."""
    answered = len(result.hosts) - len(result.not_answered)
    majority = f", majority {result.majority}" if result.majority else ""
    table = Table(title=safe(f"Status of {name}: {answered}/{len(result.hosts)} host(s) answered{majority}"),
                  title_justify="left")
    for column in ("host", "current", "previous", "service", "health", "tasks", "lock", "drift"):
        # Names and releases are what people scan for: never cut them.
        table.add_column(column, overflow="fold",
                         no_wrap=column in ("host", "current", "service", "health", "drift"))
    notes: list[Text] = []
    for host, s in result.hosts.items():
        table.add_row(
            Text(safe(host)),
            Text(safe(_release(s.current))),
            Text(safe(_release(s.previous)), style="dim"),
            Text(safe(s.service), style="green" if s.service == "Running" else "bold red"
                 if s.service in ("unreachable", "error") else "yellow"),
            Text("healthy", style="green") if s.healthy else Text(
                ("CRASH LOOP" if s.crash_loop else "unhealthy") if s.answered else "-",
                style="red" if s.answered else "dim"),
            _tasks(s),
            Text(safe(_lock(s)), style="yellow" if s.lock and not s.lock.expired else "dim"),
            Text("-" if s.drift is None else ("DRIFT" if s.drift else "no"),
                 style="bold yellow" if s.drift else "dim"),
        )
        if s.error:
            note = Text(f"{safe(host)}: ", style="bold")
            note.append(safe(s.error), style="red" if not s.answered else "yellow")
            notes.append(note)
        for task in s.tasks:
            # A task that is missing or whose last run failed is worth a line; healthy guards are not.
            if not task.exists or task.failed:
                note = Text(f"{safe(host)}: scheduled task {safe(task.name)} ", style="bold")
                note.append("is missing" if not task.exists else
                            f"last run failed with result {task.last_result} (0x{task.last_result:x})", style="yellow")
                notes.append(note)
    return Group(table, *notes)


def _release(ref: ReleaseRef | None) -> str:
    if ref is None:
        return "-"
    return ref.release if not ref.version or ref.release.startswith(ref.version) else f"{ref.version} ({ref.release})"


def _tasks(s: HostStatus) -> Text:
    """`-` without tasks, else how many last ran fine (a failed or missing one shows, with a note below)."""
    if not s.tasks:
        return Text("-", style="dim")
    bad = [t for t in s.tasks if not t.exists or t.failed]
    if bad:
        return Text(f"{len(bad)}/{len(s.tasks)} failing", style="yellow")
    return Text(f"{len(s.tasks)} ok", style="green")


def _lock(s: HostStatus) -> str:
    if s.lock is None:
        return "-"
    text = f"{s.lock.owner} ({s.lock.deploy_id})"
    return text + " expired" if s.lock.expired else text


def register(app: typer.Typer) -> None:
    app.command("status", epilog=examples(
        "fleetctl status playbooks/hello/playbook.yml",
        "fleetctl status playbooks/hello/playbook.yml -l dc_west -f 100 --json",
    ))(status)
