"""The rollback plan as people read it before they confirm: host, from, to, why."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from fleetctl.rollout.rollback_target import RollbackPlan
from fleetctl.ui.console import safe


def choices_table(plan: RollbackPlan, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("host", "from", "to", "why"):
        table.add_column(column)
    for host, c in plan.choices.items():
        if c.action == "switch":
            to = escape(safe(c.target or "-"))
        elif c.action == "stay":
            to = "[dim]stays[/]"
        else:
            to = "[red]refused[/]"
        table.add_row(escape(safe(host)), escape(safe(c.current or "-")), to, escape(safe(c.reason)))
    return table
