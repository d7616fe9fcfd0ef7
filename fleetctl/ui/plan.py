"""Rendering a rollout plan as a table (batches numbered from 1, as people count them; the plan's index is from 0)."""

from __future__ import annotations

from rich.table import Table

from fleetctl.plan import Plan
from fleetctl.ui.console import safe


def plan_table(plan: Plan, title: str, spread_values: dict[str, object] | None = None) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("batch", justify="right")
    table.add_column("kind")
    table.add_column("hosts", justify="right")
    if plan.spread_by:
        table.add_column(plan.spread_by)
    table.add_column("members", overflow="fold")
    for batch in plan.batches:
        row = [str(batch.index + 1), "[bold yellow]canary[/]" if batch.canary else "rolling", str(len(batch.hosts))]
        if plan.spread_by and spread_values is not None:
            counts: dict[str, int] = {}
            for h in batch.hosts:
                key = safe(spread_values.get(h, ""))
                counts[key] = counts.get(key, 0) + 1
            row.append(", ".join(f"{k or '-'}:{v}" for k, v in sorted(counts.items())))
        elif plan.spread_by:
            row.append("")
        row.append(", ".join(safe(h) for h in batch.hosts))
        table.add_row(*row)
    return table


def steps_line(steps: tuple[str, ...]) -> str:
    """`each host: drain → service → stop → ...` (the steps of `plan.host_sequence`)."""
    return "each host: " + " → ".join(safe(s) for s in steps)
