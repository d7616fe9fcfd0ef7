"""The inventory for people (`fleetctl inventory`): the hosts table, one host's variables, the group tree."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from typing import Any

from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

from fleetctl.config.inventory import Host, Inventory
from fleetctl.config.redaction import redact_value
from fleetctl.ui.console import safe


def hosts_table(hosts: Sequence[Host]) -> Table:
    table = Table(title=f"{len(hosts)} hosts", title_justify="left")
    table.add_column("Host", style="bold")
    table.add_column("Address")
    table.add_column("Groups")
    for host in hosts:
        groups = ", ".join(g for g in host.groups if g not in ("all", "ungrouped"))
        table.add_row(escape(safe(host.name)), escape(safe(host.address)), escape(safe(groups)))
    return table


def host_vars_table(name: str, groups: Iterable[str], masked: Mapping[str, Any]) -> Table:
    """One host's variables, already masked (`redact_value`)."""
    table = Table(title=f"{escape(safe(name))}  groups: {escape(safe(', '.join(groups)))}", title_justify="left")
    table.add_column("Variable", style="bold")
    table.add_column("Value")
    for key in sorted(masked):
        table.add_row(escape(safe(key)), _show_value(masked[key]))
    return table


def group_tree(inv: Inventory) -> Tree:
    """The group tree with each group's own hosts, like `ansible-inventory --graph`."""
    tree = Tree("[bold]@all[/]")

    def add(node: Tree, group: str, path: tuple[str, ...]) -> None:
        for child in inv.children.get(group, ()):
            if child in path:
                continue
            add(node.add(f"[bold]@{escape(safe(child))}[/]"), child, path + (child,))
        if group == "all":
            return  # hosts listed directly under `all` also sit in @ungrouped; show them once, as Ansible does
        for host in inv.direct_hosts.get(group, ()):
            node.add(escape(safe(host)))

    add(tree, "all", ("all",))
    return tree


def json_default(value: Any) -> Any:
    """A JSON form for what YAML gives and JSON lacks (dates, sets, bytes)."""
    # YAML gives dates and sets that JSON lacks; Ansible prints them the same way.
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _show_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(redact_value(value), default=json_default)
    return escape(safe(text))
