"""`fleetctl ping`: reach, authenticate and gather facts on the selected hosts in parallel; exit 1 if any failed."""

from __future__ import annotations

import typer

from fleetctl.cli.options import (
    AllRowsOpt,
    FailedOnlyOpt,
    InventoryOpt,
    JsonOpt,
    LimitOpt,
    VerboseOpt,
    examples,
    inventory_paths,
)
from fleetctl.config.connection import ConnectionSettings, render_connection_vars
from fleetctl.config.inventory import load_inventory
from fleetctl.errors import ConfigError, RolloutFailed
from fleetctl.node.fleet import DEFAULT_FORKS, HostClients
from fleetctl.node.ping import ping_hosts
from fleetctl.ui.console import print_json, stderr, stdout, warn_insecure
from fleetctl.ui.host_rows import HOSTS_CELL_CHARS, RowOptions
from fleetctl.ui.hostranges import compact_hosts
from fleetctl.ui.ping import ping_json, ping_table


def load_connection_settings(inventory: list[str] | None, limit: str | None) -> dict[str, ConnectionSettings]:
    """Connection settings of the selected hosts, in inventory order; every problem is a ConfigError."""
    paths = inventory_paths(inventory)
    inv = load_inventory(paths)
    hosts = inv.select(limit or "all")
    if not hosts:
        raise ConfigError(f"the pattern {limit or 'all'!r} matches no host", key="--limit")
    settings = {}
    for host in hosts:
        rendered = render_connection_vars(dict(host.vars), source=f"inventory host {host.name}")
        settings[host.name] = ConnectionSettings.from_hostvars(host.name, rendered,
                                                               source=", ".join(str(p) for p in paths))
    return settings


def ping(
    inventory: list[str] | None = InventoryOpt,
    limit: str | None = LimitOpt,
    forks: int = typer.Option(DEFAULT_FORKS, "--forks", "-f", min=1, metavar="N", help="Hosts contacted at the same time."),
    show_all: bool = AllRowsOpt,
    failed_only: bool = FailedOnlyOpt,
    json_out: bool = JsonOpt,
    verbose: int = VerboseOpt,
) -> None:
    """Reach, authenticate and gather facts (OS, PowerShell, free disk, clock skew, round trip) on each host."""
    settings = load_connection_settings(inventory, limit)
    warn_insecure(settings.values())
    with HostClients(settings, forks=forks) as fleet:
        if json_out:
            results = ping_hosts(fleet)
        else:
            with stderr().status(f"pinging {len(settings)} host(s)...") as status:
                done: list[str] = []

                def progress(result: object) -> None:
                    done.append("")
                    status.update(f"pinging {len(settings)} host(s)... {len(done)} done")

                results = ping_hosts(fleet, on_done=progress)
    failed = [h for h, r in results.items() if not r.ok]
    if json_out:
        print_json(ping_json(results))
    else:
        rows = RowOptions(show_all=show_all, failed_only=failed_only,
                          addresses={h: s.address for h, s in settings.items()})
        stdout().print(ping_table(results, f"{len(results) - len(failed)}/{len(results)} host(s) OK", rows))
    if failed:
        shown = compact_hosts(failed, max_chars=HOSTS_CELL_CHARS)
        raise RolloutFailed(f"{len(failed)} of {len(results)} host(s) unreachable or failing: {shown}")


def register(app: typer.Typer) -> None:
    app.command("ping", epilog=examples(
        "fleetctl ping -i inventory/prod -l 'web-*'",
        "fleetctl ping -f 100 --json",
        "fleetctl ping --failed-only          # only the hosts that could not be reached or failed",
    ))(ping)
