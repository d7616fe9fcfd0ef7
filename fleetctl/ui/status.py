"""`fleetctl status` for people: one table of every host's release, service, health, lock and drift."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text

from fleetctl.status.collect import FleetStatus, HostStatus, ReleaseRef
from fleetctl.ui.console import safe


def status_table(result: FleetStatus, name: str) -> Group:
    """The hosts table, then one note per host that did not answer or is unhealthy (notes are long: a table
    column would squeeze everything else)."""
    answered = len(result.hosts) - len(result.not_answered)
    majority = f", majority {result.majority}" if result.majority else ""
    table = Table(title=safe(f"Status of {name}: {answered}/{len(result.hosts)} host(s) answered{majority}"),
                  title_justify="left")
    blue_green = any(s.colours for s in result.hosts.values())
    columns = ("host", "current", "previous", "service", "health", *(("colours",) if blue_green else ()), "tasks",
               "lock", "drift")
    for column in columns:
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
            *((_colours(s),) if blue_green else ()),
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


def _colours(s: HostStatus) -> Text:
    """Blue-green: `live green 2.1.0 ok · idle blue 2.0.0 Running ok` (each colour's release and own health)."""
    if not s.colours:
        return Text("-", style="dim")
    text = Text()
    for i, c in enumerate(sorted(s.colours, key=lambda c: not c.live)):
        if i:
            text.append(" · ", style="dim")
        text.append(f"{'live' if c.live else 'idle'} {c.colour} ", style="bold" if c.live else "")
        text.append(safe(_release(c.release)) + " ")
        if c.service != "Running":
            text.append(c.service, style="dim" if not c.live else "red")
        else:
            text.append("ok" if c.healthy else "unhealthy", style="green" if c.healthy else "red")
    return text


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
    text = f"{s.lock.owner} ({s.lock.deploy_id})" if not s.lock.freeze else f"frozen by {s.lock.owner}: {s.lock.reason}"
    return text + " expired" if s.lock.expired else text
