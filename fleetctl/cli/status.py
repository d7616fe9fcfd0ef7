"""`fleetctl status`: per host, the current and previous release, service state, health now, lock and drift.

Exit codes: 0 when every host answered (whatever its state), 1 when some host could not be reached or its node
answered with an error (they are still listed, as `unreachable` / `error`), 2 for bad input.
"""

from __future__ import annotations

import typer

from fleetctl.cli.options import (
    AllRowsOpt,
    FailedOnlyOpt,
    ForksOpt,
    InventoryOpt,
    JsonOpt,
    LimitOpt,
    VarOpt,
    VerboseOpt,
    examples,
    inventory_paths,
)
from fleetctl.errors import RolloutFailed
from fleetctl.node.fleet import HostClients
from fleetctl.status.collect import HostStatus, collect_status, load_status_request
from fleetctl.ui.console import print_json, stderr, stdout, warn_insecure
from fleetctl.ui.host_rows import HOSTS_CELL_CHARS, RowOptions
from fleetctl.ui.hostranges import compact_hosts
from fleetctl.ui.status import status_table


def status(
    playbook: str = typer.Argument(..., metavar="PLAYBOOK", help="Playbook file."),
    inventory: list[str] | None = InventoryOpt,
    limit: str | None = LimitOpt,
    forks: int | None = ForksOpt,
    var: list[str] | None = VarOpt,
    show_all: bool = AllRowsOpt,
    failed_only: bool = FailedOnlyOpt,
    json_out: bool = JsonOpt,
    verbose: int = VerboseOpt,
) -> None:
    """Show where every host of PLAYBOOK stands: a summary (hosts per release and health state, a rollout in
    progress), then releases, service, health now, lock and drift per host."""
    request = load_status_request(playbook, inventory_paths(inventory), limit=limit, extra_vars=var, forks=forks)
    warn_insecure(request.connections.values())
    with HostClients(request.connections, forks=request.forks) as fleet:
        if json_out:
            result = collect_status(request.targets, fleet.client, forks=request.forks)
        else:
            total = len(request.targets)
            with stderr().status(f"asking {total} host(s)...") as spinner:
                done: list[str] = []

                def progress(host_status: HostStatus) -> None:
                    done.append(host_status.host)
                    spinner.update(f"asking {total} host(s)... {len(done)} answered or failed")

                result = collect_status(request.targets, fleet.client, forks=request.forks, on_done=progress)
    if json_out:
        print_json(result.to_json())
    else:
        rows = RowOptions(show_all=show_all, failed_only=failed_only,
                          addresses={h: c.address for h, c in request.connections.items()})
        stdout().print(status_table(result, request.name, rows))
    missing = result.not_answered
    if missing:
        shown = compact_hosts(missing, max_chars=HOSTS_CELL_CHARS)
        raise RolloutFailed(f"{len(missing)} of {len(result.hosts)} host(s) did not answer: {shown}")


def register(app: typer.Typer) -> None:
    app.command("status", epilog=examples(
        "fleetctl status playbooks/hello/playbook.yml",
        "fleetctl status playbooks/hello/playbook.yml -l dc_west -f 100 --json",
        "fleetctl status playbooks/hello/playbook.yml --failed-only | grep DRIFT",
    ))(status)
