"""`fleetctl releases` for people: one table, one block of rows per group of hosts that keep the same releases.

A group's rows are its first host's releases, oldest first (ids and install times are that host's; the others'
ids differ only by their own rendered files). The state column says what each release is there: current,
previous, a blue-green colour (live or not), failed (with why, in a note under the table).
"""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text

from fleetctl.status.releases import FleetReleases, KeptRelease, ReleaseGroup
from fleetctl.ui.console import safe

HOSTS_SHOWN = 4  # host names listed per group before "+N more" (--json lists them all)


def releases_table(result: FleetReleases, name: str) -> Group:
    groups = result.groups()
    answered = len(result.hosts) - len(result.not_answered)
    table = Table(title=safe(f"Releases of {name}: {answered}/{len(result.hosts)} host(s) answered, "
                             f"{len(groups)} group(s) with the same releases"), title_justify="left")
    for column in ("hosts", "version", "release", "installed", "state"):
        table.add_column(column, overflow="fold", no_wrap=column in ("version", "state"))
    notes: list[Text] = []
    for index, group in enumerate(groups):
        hosts = Text(safe(_hosts(group)), style="bold")
        example = group.example
        if not example.answered:
            table.add_row(hosts, Text("-"), Text(safe(f"did not answer: {example.error}"), style="red"), Text(""),
                          Text("unreachable", style="bold red"), end_section=True)
            continue
        if not example.releases:
            table.add_row(hosts, Text("-"), Text("no release installed by fleetctl", style="dim"), Text(""), Text(""),
                          end_section=True)
            continue
        for row, kept in enumerate(example.releases):
            last = row == len(example.releases) - 1
            table.add_row(hosts if row == 0 else Text(""), Text(safe(kept.version)), Text(safe(kept.release),
                                                                                           style="dim"),
                          Text(kept.installed_at.strftime("%Y-%m-%d %H:%M") if kept.installed_at else "-",
                               style="dim"),
                          _state(kept), end_section=last and index < len(groups) - 1)
            if kept.failed is not None:
                note = Text(f"{safe(_hosts(group))}: {safe(kept.version)} failed: ", style="bold")
                note.append(safe(kept.failed), style="red")
                notes.append(note)
    return Group(table, *notes)


def _hosts(group: ReleaseGroup) -> str:
    names = list(group.hosts)
    shown = ", ".join(names[:HOSTS_SHOWN])
    more = f" +{len(names) - HOSTS_SHOWN} more" if len(names) > HOSTS_SHOWN else ""
    return f"{shown}{more} ({len(names)})" if len(names) > 1 else shown


def _state(kept: KeptRelease) -> Text:
    marks = kept.marks
    if not marks:
        return Text("kept", style="dim")
    style = "red" if kept.failed is not None else "green" if kept.current or kept.live else "yellow" \
        if kept.previous else ""
    return Text(", ".join(marks), style=style)
