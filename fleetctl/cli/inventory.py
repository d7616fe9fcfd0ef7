"""`fleetctl inventory list|show|graph`: read the inventory and render it (rich tables, a tree, or JSON)."""

from __future__ import annotations

import json
import sys
from typing import Any

import typer

from fleetctl.cli.options import InventoryOpt, LimitOpt, examples, inventory_paths
from fleetctl.config.inventory import Inventory, load_inventory
from fleetctl.config.redaction import redact_value
from fleetctl.config.templating import render_vars
from fleetctl.ui.console import stdout
from fleetctl.ui.inventory import group_tree, host_vars_table, hosts_table, json_default


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
    sys.stdout.write(json.dumps(doc, indent=indent, default=json_default) + "\n")


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
    stdout().print(hosts_table(inv.select(limit) if limit else list(inv.hosts.values())))


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
    stdout().print(host_vars_table(entry.name, entry.groups, masked))


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
    stdout().print(group_tree(inv))


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
