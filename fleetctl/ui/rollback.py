"""The rollback plan as people read it before they confirm: host, from, to, why.

At fleet size the table is cut down as the end-of-run table is (ui/host_rows.py): refused hosts first, and above
MAX_ROWS hosts (unless --all) hosts making the same move for the same reason share one row with a compact host
range (`web[001:455]  1.4.2 -> 1.4.1 (455 hosts)`); hosts refused for the same reason share a row at any size.

A blue-green plan shows each host's colours and how it switches (instant, start + gate, the balancer's move)."""

from __future__ import annotations

from rich.console import RenderableType
from rich.markup import escape
from rich.table import Table

from fleetctl.rollout.bluegreen_plan import SwitchBackPlan
from fleetctl.rollout.rollback_target import RollbackChoice, RollbackPlan
from fleetctl.ui.console import safe
from fleetctl.ui.host_rows import RowOptions, arrange, error_key, with_note
from fleetctl.ui.report import release_version


def choices_table(plan: RollbackPlan, title: str, options: RowOptions | None = None) -> RenderableType:
    """One row per host, or per group of alike hosts at fleet size; `options.show_all` (--all): a row each.
    A blue-green plan shows each host's colours and how it switches, a row per host."""
    if isinstance(plan, SwitchBackPlan):
        return _switch_back_table(plan, title)
    options = options or RowOptions()
    arranged = arrange(list(plan.choices.values()), host=lambda c: c.host, options=options,
                       key=lambda c: _alike(c, options),
                       problem=lambda c: 0 if c.action == "refuse" else None,
                       failed_alike=lambda c: c.action == "refuse")
    table = Table(title=title, title_justify="left")
    for column in ("host", "from", "to", "why"):
        table.add_column(column)
    for group in arranged.groups:
        c: RollbackChoice = group.items[0]
        if not group.collapsed:
            table.add_row(escape(safe(c.host)), escape(safe(c.current or "-")), _to(c.action, c.target),
                          escape(safe(c.reason)))
            continue
        count = f" ({len(group.items)} hosts)"
        table.add_row(escape(safe(group.host_cell())), escape(safe(release_version(c.current) or "-")),
                      _to(c.action, release_version(c.target)) + count, escape(safe(_alike(c, options)[3])))
    if arranged.hidden_hosts:
        table.add_row(f"[dim]… {arranged.hidden_hosts} more host(s)[/]", "", "", "")
    return with_note(table, arranged.note(len(plan.choices)))


def _to(action: str, target: str | None) -> str:
    if action == "switch":
        return escape(safe(target or "-"))
    return "[dim]stays[/]" if action == "stay" else "[red]refused[/]"


def _alike(c: RollbackChoice, options: RowOptions) -> tuple[str, str | None, str | None, str]:
    """What hosts must share to be one row: the move (by version: a release id also hashes the host's own
    files) and the reason with the host's own ids and name taken out."""
    reason = c.reason
    for release in (c.current, c.target):
        if release:
            reason = reason.replace(release, release_version(release) or release)
    return (c.action, release_version(c.current), release_version(c.target), error_key(reason, c.host, options))


def _switch_back_table(plan: SwitchBackPlan, title: str) -> Table:
    colours = plan.moves
    table = Table(title=title, title_justify="left")
    for column in ("host", "from", "to", "how", "why"):
        table.add_column(column)
    for host, c in plan.choices.items():
        move = colours.get(host)
        if c.action == "switch":
            to = escape(safe(_side(move.colour if move else None, c.target or "-")))
        elif c.action == "stay":
            to = "[dim]stays[/]"
        else:
            to = "[red]refused[/]"
        row = [escape(safe(host)), escape(safe(_side(move.live if move else None, c.current or "-"))), to,
               escape(safe(move.how())) if move is not None else ""]
        table.add_row(*row, escape(safe(c.reason)))
    return table


def _side(colour: str | None, release: str) -> str:
    return f"{colour} {release}" if colour else release
