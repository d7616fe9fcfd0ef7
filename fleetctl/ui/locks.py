"""The table of `fleetctl lock` / `unlock` / `lock --status`: each host's lock or freeze."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from fleetctl.rollout.freeze import FreezeResult
from fleetctl.ui.console import safe


def lock_table(result: FreezeResult, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("host", "state", "holder", "deploy / reason", "since", "renewed", "expires", "note"):
        table.add_column(column)
    for host, h in result.hosts.items():
        lock = h.lock
        what = (lock.reason or lock.deploy_id) if lock else ""
        note = h.error or (f"gone: {h.gone}" if h.gone else "") or h.action
        style = {"frozen": "cyan", "locked": "yellow", "unreachable": "red", "expired": "dim", "free": "green"}
        table.add_row(escape(safe(host)), f"[{style.get(h.state, 'white')}]{h.state}[/]",
                      escape(safe(lock.owner if lock else "")), escape(safe(what)),
                      _short(lock.acquired_at if lock else None), _short(lock.renewed_at if lock else None),
                      _short(lock.expires_at if lock else None), escape(safe(note)))
    return table


def _short(value: object) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%SZ") if hasattr(value, "strftime") else ""  # type: ignore[union-attr]
