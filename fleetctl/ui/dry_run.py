"""The dry run for people: what a deploy (or a removal) would change on each host."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from fleetctl.rollout.runner import HostPreview
from fleetctl.ui.console import safe


def preview_table(previews: dict[str, HostPreview]) -> Table:
    table = Table(title="Dry run: what would change (nothing was changed)", title_justify="left")
    for column in ("host", "current", "target", "would do"):
        table.add_column(column)
    for host, p in previews.items():
        doing = f"[red]{escape(safe(p.error))}[/]" if p.error else (
            escape(safe("; ".join(p.changes))) or "[dim]nothing (current)[/]")
        table.add_row(escape(safe(host)), escape(safe(p.current or "-")), escape(safe(p.target)), doing)
    return table
