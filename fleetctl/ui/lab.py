"""The lab for people (`fleetctl lab status`): one row per node with its services, counters and faults."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.markup import escape
from rich.table import Table

from fleetctl.ui.console import safe


def lab_nodes_table(nodes: Sequence[dict[str, Any]], title: str) -> Table:
    """`nodes` as `lab status --json` gives them."""
    table = Table(title=title, show_lines=False)
    for column in ("node", "address"):
        table.add_column(column, no_wrap=True)  # what identifies a row is never cut; the other columns wrap
    for column in ("services", "requests", "received", "artifacts", "restarts", "faults"):
        table.add_column(column)
    for node in nodes:
        services = ", ".join(f"{s['name']}: {s['state']}" + (f" (pid {s['pid']})" if s.get("pid") else "")
                             for s in node["services"]) or "-"
        c = node["counters"]
        table.add_row(escape(node["name"]), node["address"], escape(safe(services)), str(c["requests"]),
                      _bytes(c["bytes_received"]), _bytes(c["artifact_bytes_stored"]), str(c["service_restarts"]),
                      escape(safe(", ".join(node["faults"]) or "-")))
    return table


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)
