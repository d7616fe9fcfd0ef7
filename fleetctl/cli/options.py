"""Command-line options shared by several commands, and where the default inventory comes from."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer

from fleetctl.config.project import find_project
from fleetctl.errors import ConfigError

INVENTORY_HELP = "Inventory file or directory (repeat to merge several). Default: $FLEETCTL_INVENTORY, else fleet.yml's inventory, else inventory/ ."

InventoryOpt = typer.Option(None, "-i", "--inventory", metavar="FILE|DIR", help=INVENTORY_HELP, show_default=False)


def _limit(value: str | None) -> str | None:
    # An empty pattern is not "no limit": `--limit "$HOSTS"` with HOSTS unset must not target every host.
    if value is not None and not value.strip():
        raise ConfigError("expected a host pattern, got an empty one (omit --limit to target the playbook's hosts)",
                          key="--limit")
    return value


def _version(value: str | None) -> str | None:
    if value is not None:
        from fleetctl.artifacts.manifest import check_version

        check_version(value, key="--version")
    return value


LimitOpt = typer.Option(None, "--limit", "-l", callback=_limit, metavar="PATTERN",
                        help="Host pattern: name, group, glob, ~regex, a:b, a:&b, a:!b.")
VarOpt = typer.Option(None, "--var", "-e", metavar="KEY=VALUE|@FILE",
                      help="Extra variable KEY=VALUE, always a string; KEY:=JSON for a typed value (port:=8080, "
                           "debug:=true); @FILE reads a YAML mapping of variables (-e @vars.yml). Highest "
                           "precedence; repeatable, later ones win.")
ForksOpt = typer.Option(None, "--forks", "-f", min=1, metavar="N",
                        help="Hosts worked on at once (default: rollout.forks, 50).")


def _verbosity(value: int) -> int:
    # Set as the option is parsed, before the command connects anywhere; 0 turns a previous run's log off.
    from fleetctl.ui.verbose import set_verbosity

    set_verbosity(value)
    return value


VerboseOpt = typer.Option(0, "--verbose", "-v", count=True, callback=_verbosity,
                          help="-v: each node operation with its host, duration and outcome; -vv: also each WinRM "
                               "round trip, connection, authentication leg, retry and pool reopen. On stderr; "
                               "never a parameter value or secret.")


def version_option(help_text: str) -> Any:
    """`--version V`, checked (letters, digits, . _ + -) before anything is built or contacted."""
    return typer.Option(None, "--version", callback=_version, metavar="VERSION", help=help_text)
JsonOpt = typer.Option(False, "--json", help="Print one JSON document instead of tables.")


def inventory_paths(given: list[str] | None) -> list[Path]:
    """The inventories to read: `-i` options, else $FLEETCTL_INVENTORY (os.pathsep-separated), else fleet.yml's
    `inventory` (the project file found walking up from the cwd), else ./inventory."""
    if given:
        return [Path(p) for p in given]
    env = os.environ.get("FLEETCTL_INVENTORY")
    if env:
        return [Path(p) for p in env.split(os.pathsep) if p]
    project = find_project()
    if project.inventory is not None:
        # Relative to the project root, wherever in the project the command runs.
        here = Path(os.path.realpath(Path.cwd()))
        return [Path(p) if here == project.root else project.root / p for p in project.inventory]
    default = Path("inventory")
    if default.exists():
        return [default]
    raise ConfigError("no inventory given: pass -i FILE_OR_DIR or set FLEETCTL_INVENTORY", key="--inventory")


def examples(*lines: str) -> str:
    """A command's `--help` epilog: an example or two, each a command line then what it does after `#`."""
    from rich.markup import escape

    return "Examples:\n" + "\n".join(f"  {escape(line)}" for line in lines)

AllRowsOpt = typer.Option(False, "--all", help="One row per host: do not collapse identical rows of a big fleet.")
FailedOnlyOpt = typer.Option(False, "--failed-only", help="Show only the hosts with a problem (failed, unhealthy, "
                                                          "drifted, not reached).")
