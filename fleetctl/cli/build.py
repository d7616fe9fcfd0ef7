"""`fleetctl build PLAYBOOK`: build (or collect) the playbook's artifact into dist/ and show its manifest."""

from __future__ import annotations

from collections import deque
from pathlib import Path

import typer
from rich.console import Group
from rich.live import Live
from rich.markup import escape
from rich.panel import Panel
from rich.text import Text

from fleetctl.artifacts.produce import produce_artifact
from fleetctl.cli.options import (
    EnvironmentOpt,
    InventoryOpt,
    JsonOpt,
    VarOpt,
    examples,
    inventory_paths,
    version_option,
)
from fleetctl.config.environments import extra_variables
from fleetctl.config.inventory import Inventory, load_inventory
from fleetctl.config.playbook import Playbook, load_playbook, merge_variables
from fleetctl.ui.build import manifest_table
from fleetctl.ui.console import print_json, safe, stdout

DistOpt = typer.Option(Path("dist"), "--dist", metavar="DIR", help="Where artifacts and manifests go.")
_PANEL_LINES = 18  # compiler lines kept visible in the live panel


def build(
    playbook: str = typer.Argument(..., metavar="PLAYBOOK", help="Playbook file."),
    version: str | None = version_option("Version to stamp (default: artifact.version, "
                                         "else `git describe --tags --always --dirty`)."),
    dist: Path = DistOpt,
    force: bool = typer.Option(False, "--force", help="Rebuild even when the inputs are unchanged."),
    inventory: list[str] | None = InventoryOpt,
    environment: str | None = EnvironmentOpt,  # applied by its callback (cli/options.py)
    var: list[str] | None = VarOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Build or collect PLAYBOOK's artifact: dist/<name>-<version>-<goos>-<goarch>.exe and its manifest."""
    source = load_playbook(playbook)
    builtins = {"version": version} if version is not None else {}
    settings = source.render_global(merge_variables(source, {}, extra_variables(var), builtins))
    inv = _inventory_if_needed(settings, inventory)
    if json_out:
        manifest = produce_artifact(settings, version=version, inventory=inv, dist_dir=dist, force=force)
        print_json(manifest.to_dict())
        return
    console = stdout()
    title = f"building {settings.artifact.name or settings.name}"
    if not console.is_terminal:
        # CI logs: plain lines as they come, no redrawing.
        manifest = produce_artifact(settings, version=version, inventory=inv, dist_dir=dist, force=force,
                                    on_output=lambda line: console.print(escape(safe(line))))
    else:
        lines: deque[str] = deque(maxlen=_PANEL_LINES)

        def panel() -> Panel:
            return Panel(Text("\n".join(lines) or "…"), title=title, title_align="left", border_style="cyan")

        with Live(panel(), console=console, refresh_per_second=8, transient=False) as live:
            def on_output(line: str) -> None:
                lines.append(safe(line))
                live.update(panel())

            manifest = produce_artifact(settings, version=version, inventory=inv, dist_dir=dist, force=force,
                                        on_output=on_output)
    console.print(Group(manifest_table(manifest)))




def _inventory_if_needed(settings: Playbook, given: list[str] | None) -> Inventory | None:
    """The inventory is read only when the artifact comes from an inventory host (build host, ssh://)."""
    spec = settings.artifact
    needs_host = bool((spec.build and spec.build.go and spec.build.go.host) or (spec.collect and spec.collect.ssh))
    return load_inventory(inventory_paths(given)) if needs_host else None


def register(app: typer.Typer) -> None:
    app.command("build", epilog=examples(
        "fleetctl build playbooks/hello/playbook.yml                  # version from git describe",
        "fleetctl build playbooks/hello/playbook.yml --version 1.4.2 --json",
    ))(build)
