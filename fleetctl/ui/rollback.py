"""The rollback plan as people read it before they confirm: host, from, to, why; for blue-green, each side's
colour and how the host switches (instant, start + gate, the balancer's move)."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from fleetctl.rollout.bluegreen_plan import SwitchBackPlan
from fleetctl.rollout.rollback_target import RollbackPlan
from fleetctl.ui.console import safe


def choices_table(plan: RollbackPlan, title: str) -> Table:
    colours = plan.moves if isinstance(plan, SwitchBackPlan) else None
    table = Table(title=title, title_justify="left")
    for column in ("host", "from", "to", *(("how",) if colours is not None else ()), "why"):
        table.add_column(column)
    for host, c in plan.choices.items():
        move = colours.get(host) if colours is not None else None
        if c.action == "switch":
            to = escape(safe(_side(move.colour if move else None, c.target or "-")))
        elif c.action == "stay":
            to = "[dim]stays[/]"
        else:
            to = "[red]refused[/]"
        row = [escape(safe(host)), escape(safe(_side(move.live if move else None, c.current or "-"))), to]
        if colours is not None:
            row.append(escape(safe(move.how())) if move is not None else "")
        table.add_row(*row, escape(safe(c.reason)))
    return table


def _side(colour: str | None, release: str) -> str:
    return f"{colour} {release}" if colour else release
