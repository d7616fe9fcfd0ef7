"""`fleetctl logs`: the last lines of one host's service log, read on the node (`Get-FleetLog`), or with --events
the service's recent Application-log events (`Get-FleetEvents`)."""

from __future__ import annotations

import typer
from rich.text import Text

from fleetctl.cli.options import (
    EnvironmentOpt,
    InventoryOpt,
    JsonOpt,
    VarOpt,
    VerboseOpt,
    examples,
    inventory_paths,
)
from fleetctl.config.connection import ConnectionSettings
from fleetctl.errors import ConfigError
from fleetctl.node.fleet import HostClients
from fleetctl.protocol.errors import NodeOperationError
from fleetctl.status.collect import load_status_request
from fleetctl.ui.console import print_json, safe, stderr, stdout, warn_insecure


def logs(
    playbook: str = typer.Argument(..., metavar="PLAYBOOK", help="Playbook file."),
    host: str = typer.Option(..., "--host", metavar="HOST", help="The inventory host whose log to show."),
    tail: int = typer.Option(100, "--tail", "-n", min=1, max=100000, metavar="N", help="How many lines from the end."),
    path: str | None = typer.Option(None, "--path", metavar="FILE", help="Log file relative to the install root "
                                                            "(default: the newest file under shared\\logs)."),
    events: bool = typer.Option(False, "--events", help="The service's recent Windows Application-log events "
                                                         "instead (the last --tail, newest first)."),
    inventory: list[str] | None = InventoryOpt,
    environment: str | None = EnvironmentOpt,  # applied by its callback (cli/options.py)
    var: list[str] | None = VarOpt,
    json_out: bool = JsonOpt,
    verbose: int = VerboseOpt,
) -> None:
    """Print the last --tail lines of PLAYBOOK's service log on --host (or its event-log events)."""
    request = load_status_request(playbook, inventory_paths(inventory, contacts_hosts=True), extra_vars=var, forks=1)
    target = next((t for t in request.targets if t.host == host), None)
    if target is None:
        known = ", ".join(t.host for t in request.targets[:10])
        raise ConfigError(f"'{host}' is not one of the playbook's hosts ({known}"
                          f"{', ...' if len(request.targets) > 10 else ''})", key="--host")
    warn_insecure([request.connections[host]])
    if events:
        if path:
            raise ConfigError("--path and --events do not go together", key="--events")
        _show_events(request.connections[host], host, target.service_name, tail, json_out)
        return
    with HostClients({host: request.connections[host]}, forks=1) as fleet:
        try:
            result = fleet.client(host).get_fleet_log(app=target.app, root=target.root, tail=tail, path=path)
        except NodeOperationError as err:
            if err.code == "NOT_FOUND":
                raise ConfigError(f"{host}: no log found: {err.message}", key="--path" if path else "--host") \
                    from None
            raise
    if json_out:
        print_json({"host": host, "path": result.path, "lines": list(result.lines)})
        return
    stderr().print(Text(safe(f"==> {host}: {result.path} (last {len(result.lines)} line(s))"), style="dim"))
    out = stdout()
    for line in result.lines:
        # Log lines are printed as text, never as markup; secrets known to this run are masked.
        out.print(Text(safe(line)), soft_wrap=True)


def _show_events(connection: ConnectionSettings, host: str, source: str, tail: int, json_out: bool) -> None:
    with HostClients({host: connection}, forks=1) as fleet:
        result = fleet.client(host).get_fleet_events(source=source, max=tail)
    if json_out:
        print_json({"host": host, "source": source, "note": result.note, "events": [
            {"time": e.time.isoformat() if e.time else None, "level": e.level, "id": e.id, "message": e.message}
            for e in result.events]})
        return
    stderr().print(Text(safe(f"==> {host}: Application log, source {source} ({len(result.events)} event(s), "
                             "newest first)"), style="dim"))
    if result.note:
        stderr().print(Text(safe(result.note), style="yellow"))
    out = stdout()
    for e in result.events:
        when = e.time.isoformat(timespec="seconds") if e.time else "-"
        style = {"Error": "red", "Critical": "bold red", "Warning": "yellow"}.get(e.level, "")
        line = Text(f"{when} {safe(e.level):<11} {e.id if e.id is not None else '-':>5} ", style=style)
        line.append(safe(e.message))
        out.print(line, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("logs", epilog=examples(
        "fleetctl logs playbooks/hello/playbook.yml --host web-01 -n 50",
        "fleetctl logs playbooks/hello/playbook.yml --host web-01 --events --json",
    ))(logs)
