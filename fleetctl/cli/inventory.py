"""`fleetctl inventory list|show|graph`: read the inventory and render it (rich tables, a tree, or JSON)."""

from __future__ import annotations

import json
import sys
from datetime import date, datetime
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

from fleetctl.cli.options import InventoryOpt, LimitOpt, examples, inventory_paths
from fleetctl.config.inventory import Inventory, load_inventory
from fleetctl.config.redaction import redact_value
from fleetctl.config.templating import render_vars
from fleetctl.ui.console import safe


def _json_default(value: Any) -> Any:
    # YAML gives dates and sets that JSON lacks; Ansible prints them the same way.
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _limited(inventory: Inventory, limit: str | None) -> dict[str, Any]:
    doc = inventory.to_json()
    if limit:
        keep = {h.name for h in inventory.select(limit)}
        doc["hostvars"] = {h: v for h, v in doc["hostvars"].items() if h in keep}
        doc["groups"] = {g: [h for h in hosts if h in keep] for g, hosts in doc["groups"].items()}
    return doc


def _write_json(doc: Any) -> None:
    # Plain write, not rich, and indented only for a terminal: json's C encoder (no indent) prints ten
    # thousand hosts five times faster.
    indent = 2 if sys.stdout.isatty() else None
    sys.stdout.write(json.dumps(doc, indent=indent, default=_json_default) + "\n")


def _show_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(redact_value(value), default=_json_default)
    return escape(safe(text))


def list_command(
    inventory: list[str] | None = InventoryOpt,
    limit: str | None = LimitOpt,
    as_json: bool = typer.Option(False, "--json", help="Print {hostvars, groups} as JSON (secrets masked)."),
) -> None:
    """List hosts with their groups, or the whole inventory as JSON."""
    inv = load_inventory(inventory_paths(inventory))
    if as_json:
        doc = _limited(inv, limit)
        _write_json(redact_value(doc))
        return
    hosts = inv.select(limit) if limit else list(inv.hosts.values())
    table = Table(title=f"{len(hosts)} hosts", title_justify="left")
    table.add_column("Host", style="bold")
    table.add_column("Address")
    table.add_column("Groups")
    for host in hosts:
        groups = ", ".join(g for g in host.groups if g not in ("all", "ungrouped"))
        table.add_row(escape(safe(host.name)), escape(safe(host.address)), escape(safe(groups)))
    Console(soft_wrap=False).print(table)


def show_command(
    host: str = typer.Argument(..., metavar="HOST", help="Host name as written in the inventory."),
    inventory: list[str] | None = InventoryOpt,
    raw: bool = typer.Option(False, "--raw", help="Show values as written, without rendering templates."),
    as_json: bool = typer.Option(False, "--json", help="Print {host, address, groups, vars} as JSON (secrets "
                                                       "masked)."),
) -> None:
    """Show one host's groups and merged variables (templates rendered unless --raw; secrets masked)."""
    inv = load_inventory(inventory_paths(inventory))
    entry = inv.host(host)
    values = dict(entry.vars) if raw else render_vars(
        entry.vars, source=", ".join(str(s) for s in inv.sources))
    masked = redact_value(values)
    if as_json:
        _write_json({"host": entry.name, "address": entry.address, "groups": list(entry.groups), "vars": masked})
        return
    table = Table(title=f"{escape(safe(entry.name))}  groups: {escape(safe(', '.join(entry.groups)))}", title_justify="left")
    table.add_column("Variable", style="bold")
    table.add_column("Value")
    for key in sorted(masked):
        table.add_row(escape(safe(key)), _show_value(masked[key]))
    Console(soft_wrap=False).print(table)


def _graph_json(inv: Inventory, group: str, path: tuple[str, ...]) -> dict[str, Any]:
    children = [_graph_json(inv, child, path + (child,)) for child in inv.children.get(group, ()) if child not in path]
    hosts = [] if group == "all" else list(inv.direct_hosts.get(group, ()))
    return {"group": group, "children": children, "hosts": hosts}


def graph_command(
    inventory: list[str] | None = InventoryOpt,
    as_json: bool = typer.Option(False, "--json", help="Print the tree as nested {group, children, hosts}."),
) -> None:
    """Draw the group tree with each group's own hosts, like `ansible-inventory --graph`."""
    inv = load_inventory(inventory_paths(inventory))
    if as_json:
        _write_json(_graph_json(inv, "all", ("all",)))
        return
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
    Console(soft_wrap=False).print(tree)


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Show the inventory: hosts, groups and merged variables.", no_args_is_help=True)
    group.command("list", epilog=examples(
        "fleetctl inventory list -i inventory/prod -l 'web-*'",
        "fleetctl inventory list --json > hosts.json",
    ))(list_command)
    group.command("show", epilog=examples(
        "fleetctl inventory show web-01.corp.example",
        "fleetctl inventory show web-01.corp.example --raw --json",
    ))(show_command)
    group.command("graph", epilog=examples(
        "fleetctl inventory graph -i inventory/prod",
        "fleetctl inventory graph --json",
    ))(graph_command)
    app.add_typer(group, name="inventory")
