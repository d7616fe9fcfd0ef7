"""Command-line options shared by several commands, and where the default inventory comes from."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from fleetctl.errors import ConfigError

INVENTORY_HELP = "Inventory file or directory (repeat to merge several). Default: $FLEETCTL_INVENTORY, else fleet.yml's inventory, else inventory/ ."

InventoryOpt = typer.Option(None, "-i", "--inventory", help=INVENTORY_HELP, show_default=False)
LimitOpt = typer.Option(None, "--limit", "-l", help="Host pattern: name, group, glob, ~regex, a:b, a:&b, a:!b.")
VarOpt = typer.Option(None, "--var", "-e", help="Extra variable KEY=VALUE (highest precedence). Repeatable.")
JsonOpt = typer.Option(False, "--json", help="Print one JSON document instead of tables.")


def inventory_paths(given: list[str] | None) -> list[Path]:
    """The inventories to read: `-i` options, else $FLEETCTL_INVENTORY (os.pathsep-separated), else ./inventory."""
    if given:
        return [Path(p) for p in given]
    env = os.environ.get("FLEETCTL_INVENTORY")
    if env:
        return [Path(p) for p in env.split(os.pathsep) if p]
    project = Path("fleet.yml")
    if project.is_file():
        from fleetctl.config.yamlfile import load_yaml

        doc = load_yaml(project, what="project file")
        configured = doc.data.get("inventory") if isinstance(doc.data, dict) else None
        if isinstance(configured, str):
            configured = [configured]
        if configured is not None:
            if not isinstance(configured, list) or not all(isinstance(p, str) for p in configured):
                raise ConfigError("expected a path or a list of paths", file=project,
                                  line=doc.line_of(("inventory",)), key="inventory")
            return [Path(p) for p in configured]
    default = Path("inventory")
    if default.exists():
        return [default]
    raise ConfigError("no inventory given: pass -i FILE_OR_DIR or set FLEETCTL_INVENTORY", key="--inventory")
