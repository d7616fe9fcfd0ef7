"""Rendering of `fleetctl ping` results: the rich table and the `--json` document."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich import box
from rich.markup import escape
from rich.table import Table

from fleetctl.node.ping import PingResult
from fleetctl.ui.console import safe

# Beyond this, Kerberos fails (5 min default) and TLS/lock expiry times get odd; flag it early.
SKEW_WARN_MS = 60_000


def human_bytes(value: int | None) -> str:
    if value is None:
        return "-"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def _skew(ms: float | None) -> str:
    if ms is None:
        return "-"
    text = f"{ms / 1000:+.1f} s"
    return f"[yellow]{text}[/]" if abs(ms) >= SKEW_WARN_MS else text


def _short_os(name: str) -> str:
    """'Microsoft Windows Server 2022 Datacenter (fleetctl lab simulation)' -> 'Windows Server 2022 Datacenter'."""
    text = name.split(" (", 1)[0].strip()
    return text.removeprefix("Microsoft ").strip() or "?"


def ping_table(results: Mapping[str, PingResult], title: str | None = None) -> Table:
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("host", no_wrap=True)
    table.add_column("status", no_wrap=True)
    # The one flexible column: the OS, or why the host failed (long messages wrap here, not elsewhere).
    table.add_column("OS / error", ratio=1, overflow="fold", min_width=16)
    table.add_column("PS", no_wrap=True)
    for column in ("free C:", "skew", "rtt ms"):
        table.add_column(column, justify="right", no_wrap=True)
    for host, r in results.items():
        if not r.ok or r.facts is None:
            reason = safe(r.error).removeprefix(f"{host}: ")
            table.add_row(escape(safe(host)), "[red]FAILED[/]", f"[red]{escape(reason)}[/]", "", "", "", "")
            continue
        f = r.facts
        os_text = _short_os(f.os_name) + (" [lab]" if f.lab else "")
        table.add_row(escape(safe(host)), "[green]OK[/]", escape(safe(os_text)),
                      escape(safe(".".join(f.ps_version.split(".")[:2]))),
                      human_bytes(f.system_drive_free), _skew(r.clock_skew_ms),
                      f"{r.rtt_ms:.0f}" if r.rtt_ms is not None else "-")
    return table


def ping_json(results: Mapping[str, PingResult]) -> dict[str, Any]:
    """Exactly {"hosts": {HOST: {"ok", "error", "facts", "rtt_ms"}}}."""
    return {"hosts": {host: r.to_json() for host, r in results.items()}}
