"""Rendering of `fleetctl ping` results: the table (failed hosts first, collapsed at scale) and the `--json`
document."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from rich import box
from rich.console import RenderableType
from rich.markup import escape
from rich.table import Table

from fleetctl.node.ping import PingResult
from fleetctl.ui.console import safe
from fleetctl.ui.host_rows import RowOptions, arrange, error_key, with_note

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


def ping_table(results: Mapping[str, PingResult], title: str | None = None,
               options: RowOptions | None = None) -> RenderableType:
    """One row per host, failed hosts first; above MAX_ROWS hosts (unless --all) hosts with the same OS and
    PowerShell, or that failed the same way (`480 FAILED  authentication failed ... at <address>:5986`), share a
    row whose numbers are ranges."""
    options = options or RowOptions()
    arranged = arrange(list(results.values()), host=lambda r: r.host, options=options,
                       key=lambda r: ("ok", _os_text(r), _ps(r)) if _answered(r) else
                       ("failed", error_key(_reason(r), r.host, options)),
                       problem=lambda r: None if _answered(r) else 0,
                       failed_alike=lambda r: not _answered(r))
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("host", no_wrap=True)
    table.add_column("status", no_wrap=True)
    # The one flexible column: the OS, or why the host failed (long messages wrap here, not elsewhere).
    table.add_column("OS / error", ratio=1, overflow="fold", min_width=16)
    table.add_column("PS", no_wrap=True)
    for column in ("free C:", "skew", "rtt ms"):
        table.add_column(column, justify="right", no_wrap=True)
    for group in arranged.groups:
        first: PingResult = group.items[0]
        count = f"{len(group.items)} " if group.collapsed else ""
        host = escape(safe(group.host_cell()))
        if not _answered(first):
            reason = error_key(_reason(first), first.host, options) if group.collapsed else _reason(first)
            table.add_row(host, f"[red]{count}FAILED[/]", f"[red]{escape(safe(reason))}[/]", "", "", "", "")
            continue
        frees = [f.system_drive_free for r in group.items if (f := r.facts) and f.system_drive_free is not None]
        skews = [r.clock_skew_ms for r in group.items if r.clock_skew_ms is not None]
        rtts = [r.rtt_ms for r in group.items if r.rtt_ms is not None]
        worst_skew = max(skews, key=abs) if skews else None
        table.add_row(host, f"[green]{count}OK[/]", escape(safe(_os_text(first))), escape(safe(_ps(first))),
                      _span(frees, human_bytes), _skew(worst_skew) + (" max" if group.collapsed and skews else ""),
                      _span(rtts, lambda v: f"{v:.0f}"))
    if arranged.hidden_hosts:
        table.add_row(f"[dim]… {arranged.hidden_hosts} more host(s)[/]", "", "", "", "", "", "")
    return with_note(table, arranged.note(len(results)))


def _answered(r: PingResult) -> bool:
    return r.ok and r.facts is not None


def _reason(r: PingResult) -> str:
    return safe(r.error).removeprefix(f"{r.host}: ")


def _os_text(r: PingResult) -> str:
    return _short_os(r.facts.os_name) + (" [lab]" if r.facts.lab else "") if r.facts else ""


def _ps(r: PingResult) -> str:
    return ".".join(r.facts.ps_version.split(".")[:2]) if r.facts else ""


def _span(values: list[Any], show: Callable[[Any], str]) -> str:
    """`12` for one value (or equal ones), `11–15` for a collapsed row's range, `-` for none."""
    if not values:
        return "-"
    low, high = show(min(values)), show(max(values))
    return low if low == high else f"{low}–{high}"


def ping_json(results: Mapping[str, PingResult]) -> dict[str, Any]:
    """Exactly {"hosts": {HOST: {"ok", "error", "facts", "rtt_ms"}}}."""
    return {"hosts": {host: r.to_json() for host, r in results.items()}}
