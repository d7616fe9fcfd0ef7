"""Rendering a rollout plan as a table: batches numbered from 1, as people count them (the plan's index is from
0); each batch's hosts as compact ranges (`web[003:019]`); a plan of many batches cut to its first and last ones
(the middle summarised in one row; `--json` has every batch)."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from fleetctl.plan import Batch, Plan
from fleetctl.ui.console import safe
from fleetctl.ui.host_rows import MAX_ROWS
from fleetctl.ui.hostranges import compact_hosts

# A batch's members cell: beyond this the list ends `… (N hosts)` (a spread plan's batches are scattered).
MEMBERS_CHARS = 160
_HEAD_BATCHES, _TAIL_BATCHES = 12, 6  # shown of a plan with more than MAX_ROWS batches


def plan_table(plan: Plan, title: str, spread_values: dict[str, object] | None = None,
               show_all: bool = False) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("batch", justify="right")
    table.add_column("kind")
    table.add_column("hosts", justify="right")
    if plan.spread_by:
        table.add_column(plan.spread_by)
    table.add_column("members", overflow="fold")
    batches = list(plan.batches)
    middle: list[Batch] = []
    if not show_all and len(batches) > MAX_ROWS:
        middle = batches[_HEAD_BATCHES:-_TAIL_BATCHES]
        batches = batches[:_HEAD_BATCHES] + batches[-_TAIL_BATCHES:]
    for n, batch in enumerate(batches):
        if middle and n == _HEAD_BATCHES:
            table.add_row(*_middle_row(middle, bool(plan.spread_by)))
        row = [str(batch.index + 1), "[bold yellow]canary[/]" if batch.canary else "rolling", str(len(batch.hosts))]
        if plan.spread_by and spread_values is not None:
            counts: dict[str, int] = {}
            for h in batch.hosts:
                key = safe(spread_values.get(h, ""))
                counts[key] = counts.get(key, 0) + 1
            row.append(", ".join(f"{k or '-'}:{v}" for k, v in sorted(counts.items())))
        elif plan.spread_by:
            row.append("")
        row.append(escape(safe(compact_hosts(batch.hosts, max_chars=MEMBERS_CHARS))))
        table.add_row(*row)
    return table


def _middle_row(middle: list[Batch], spread: bool) -> list[str]:
    """One row for the batches not shown one by one: their numbers, sizes and hosts."""
    sizes = sorted({len(b.hosts) for b in middle})
    size = str(sizes[0]) if len(sizes) == 1 else f"{sizes[0]}–{sizes[-1]}"
    hosts = [h for b in middle for h in b.hosts]
    # Numbered from 1, as the rows are.
    return [f"{middle[0].index + 1}–{middle[-1].index + 1}", f"[dim]{len(middle)} batches[/]", f"{size} each",
            *([""] if spread else []), escape(safe(compact_hosts(hosts, max_chars=MEMBERS_CHARS)))]


def steps_line(steps: tuple[str, ...]) -> str:
    """`each host: drain → service → stop → ...` (the steps of `plan.host_sequence`)."""
    return "each host: " + " → ".join(safe(s) for s in steps)
