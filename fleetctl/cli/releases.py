"""`fleetctl releases`: per host, the releases it keeps, which is current and previous, which failed a gate, and
blue-green colours; hosts keeping the same releases are grouped (status/releases.py).

Exit codes: 0 when every host answered, 1 when some did not (they are still listed), 2 for bad input.
"""

from __future__ import annotations

import typer

from fleetctl.cli.options import (
    ForksOpt,
    InventoryOpt,
    JsonOpt,
    LimitOpt,
    VarOpt,
    VerboseOpt,
    examples,
    inventory_paths,
)
from fleetctl.cli.rollback import journal_failures
from fleetctl.errors import RolloutFailed
from fleetctl.node.fleet import HostClients
from fleetctl.status.collect import load_status_request
from fleetctl.status.releases import collect_releases
from fleetctl.ui.console import print_json, stderr, stdout, warn_insecure
from fleetctl.ui.releases import releases_table


def releases(
    playbook: str = typer.Argument(..., metavar="PLAYBOOK", help="Playbook file."),
    inventory: list[str] | None = InventoryOpt,
    limit: str | None = LimitOpt,
    forks: int | None = ForksOpt,
    var: list[str] | None = VarOpt,
    json_out: bool = JsonOpt,
    verbose: int = VerboseOpt,
) -> None:
    """List the releases each host of PLAYBOOK keeps: current, previous, failed a gate, blue-green colours."""
    request = load_status_request(playbook, inventory_paths(inventory), limit=limit, extra_vars=var, forks=forks)
    warn_insecure(request.connections.values())
    failures = journal_failures(request.name)
    with HostClients(request.connections, forks=request.forks) as fleet:
        if json_out:
            result = collect_releases(request.targets, fleet.client, forks=request.forks, failures=failures)
        else:
            with stderr().status(f"asking {len(request.targets)} host(s)..."):
                result = collect_releases(request.targets, fleet.client, forks=request.forks, failures=failures)
    if json_out:
        print_json(result.to_json())
    else:
        stdout().print(releases_table(result, request.name))
    missing = result.not_answered
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise RolloutFailed(f"{len(missing)} of {len(result.hosts)} host(s) did not answer: {shown}")


def register(app: typer.Typer) -> None:
    app.command("releases", epilog=examples(
        "fleetctl releases playbooks/hello/playbook.yml",
        "fleetctl releases playbooks/hello/playbook.yml -l dc_west --json",
    ))(releases)
